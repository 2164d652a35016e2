"""Data safety: outputs that may not destroy anything, publishing a reader never sees half done, and
user mistakes that fail as one line. (Hostile dataset contents: tests/test_hostile_input.py.)"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import yaml
from click.testing import CliRunner

from fersynth.atomic import MARKER, atomic_path, clean_stale_staging, write_json
from fersynth.cli import main
from fersynth.errors import UnsafeOutput
from fersynth.variants.variant import Variant, VariantWriter
from tests.conftest import image_bytes, write_file


def _nhfi(src, per_class=2):
    for emotion in ("angry", "happy", "sad"):
        for i in range(per_class):
            write_file(src / emotion / f"{i}.png", image_bytes(emotion, (48, 48), identity=i))
    return src


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder (git repo root, params.yaml) with an NHFI-style source, as the cwd."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {"seed": 0}, "train": {"fer2013": {}}}))
    _nhfi(tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return tmp_path


def _run(*args):
    return CliRunner().invoke(main, list(args))


def _one_line_error(result, code):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in result.output
    return lines[0]


# --out that would destroy data --------------------------------------------------------------------
@pytest.mark.parametrize("out", [".", "src", "src/happy", "..", ".git", ".git/objects", ".dvc"])
def test_ingest_refuses_an_out_that_holds_the_source_the_repo_or_git(project, out):
    (project / ".dvc").mkdir(exist_ok=True)
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    line = _one_line_error(_run("ingest", "nhfi", "--src", "src", "--out", out), 2)
    assert "refusing" in line
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before


def test_an_output_replaces_only_an_empty_dir_or_an_earlier_output_of_its_kind(project):
    (project / "mine").mkdir()
    (project / "mine" / "thesis.tex").write_text("months of work")
    line = _one_line_error(_run("ingest", "nhfi", "--src", "src", "--out", "mine"), 2)
    assert "not a fersynth output" in line and (project / "mine" / "thesis.tex").read_text() == "months of work"
    (project / "empty").mkdir()
    assert _run("ingest", "nhfi", "--src", "src", "--out", "empty").exit_code == 0
    assert _run("ingest", "nhfi", "--src", "src", "--out", "empty").exit_code == 0  # an earlier variant
    # a model directory (marker 'model') is not a variant, and a variant is not a model directory
    with atomic_path(project / "models" / "m", kind="model") as tmp:
        tmp.mkdir()
    assert (project / "models" / "m" / MARKER).read_text().strip() == "model"
    assert "fersynth model output" in _one_line_error(_run("ingest", "nhfi", "--src", "src", "--out", "models/m"), 2)
    with pytest.raises(UnsafeOutput, match="fersynth variant output"):
        with atomic_path(project / "empty", kind="model") as tmp:
            tmp.mkdir()


def test_a_file_output_never_replaces_a_directory(project):
    (project / "metrics").mkdir()
    (project / "metrics" / "keep.json").write_text("{}")
    with pytest.raises(UnsafeOutput, match="cannot replace a directory"):
        write_json(project / "metrics", {"a": 1})
    assert (project / "metrics" / "keep.json").exists()


# publishing ----------------------------------------------------------------------------------------
def _write_variant(out, n, inputs=()):
    with VariantWriter(out, inputs=inputs) as writer:
        for i in range(n):
            writer.add({"key": f"k{i}", "source": f"s{i}", "split": "train"}, _image(i))
        writer.commit()


def _image(i):
    from PIL import Image

    return Image.new("L", (16, 16), i % 256)


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {root!r})
    import fersynth.atomic as atomic
    from tests.test_safety import _write_variant
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    if {where!r} == "exchange":
        atomic._exchange = die
    else:  # the fallback: rename aside works, the rename into place is killed
        atomic._exchange = lambda a, b: False
        real_rename = os.rename
        calls = []
        def rename(a, b):
            calls.append(a)
            if len(calls) == 2:
                die()
            real_rename(a, b)
        atomic.os.rename = rename
    _write_variant({out!r}, 7)
    """
)


@pytest.mark.parametrize("where", ["exchange", "fallback"])
def test_a_kill_while_publishing_leaves_a_whole_variant_and_the_next_run_cleans_up(tmp_path, where):
    out = tmp_path / "data" / "fer2013"
    _write_variant(out, 3)
    code = CHILD.format(root=os.getcwd(), where=where, out=str(out))
    child = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd(), capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    staging = [p.name for p in out.parent.iterdir() if p.name.startswith(".fer2013.")]
    assert len(staging) == 1 and "fersynth-stage" in staging[0]
    if where == "exchange":
        assert len(Variant(out).manifest) == 3  # the old variant, whole
    else:
        assert not out.exists()  # between the two renames: the old one waits inside the staging dir
        clean_stale_staging(out)
        assert len(Variant(out).manifest) == 3  # restored, not lost
    _write_variant(out, 5)
    assert len(Variant(out).manifest) == 5
    assert [p.name for p in out.parent.iterdir()] == ["fer2013"]


def test_stale_staging_of_the_old_layout_is_removed_and_foreign_dirs_are_not(tmp_path):
    out = tmp_path / "fer2013"
    legacy = tmp_path / ".fer2013.ab12cd_9"  # what tempfile.mkdtemp made before
    (legacy / "fer2013").mkdir(parents=True)
    foreign = tmp_path / ".fer2013.backup"
    foreign.mkdir()
    (foreign / "notes").write_text("mine")
    live = tmp_path / f".fer2013.fersynth-stage-{os.getpid()}-abcdefgh"  # a run in progress (this process)
    live.mkdir()
    _write_variant(out, 2)
    assert not legacy.exists() and foreign.exists() and live.exists()


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from tests.test_safety import _write_variant
    for n in range(1, 41):
        _write_variant({out!r}, n)
    """
)


def test_a_reader_never_sees_a_variant_without_its_manifest(tmp_path):
    out = tmp_path / "v"
    _write_variant(out, 1)
    writer = subprocess.Popen([sys.executable, "-c", WRITER.format(root=os.getcwd(), out=str(out))], cwd=os.getcwd())
    reads, sizes = 0, set()
    try:
        while writer.poll() is None:
            sizes.add(len(Variant(out).manifest))  # raises NotAVariant on a half state
            reads += 1
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0 and reads > 20 and len(sizes) > 3
    assert len(Variant(out).manifest) == 40


# typos and user errors -------------------------------------------------------------------------------
def test_unknown_experiment_suite_and_section_names_list_the_valid_ones(project):
    assert "'train' has: fer2013" in _one_line_error(_run("train", "fer2031"), 2)
    line = _one_line_error(_run("validate", "src", "--suite", "nosuch"), 2)
    assert "validate.suites.nosuch" in line and "sections are: ingest, train" in line
    assert not (project / "mlflow.db").exists() and not (project / "metrics").exists()


def test_params_come_from_the_project_root_and_a_missing_file_is_an_error(project, monkeypatch):
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    assert _run("ingest", "nhfi", "--src", "../src", "--out", "../out").exit_code == 0
    assert json.loads((project / "out" / "ingest.json").read_text())["seed"] == 0  # params.yaml says 0, default 42
    (project / "params.yaml").unlink()
    assert "no params file" in _one_line_error(_run("ingest", "nhfi", "--src", "../src", "--out", "../o2"), 2)
    assert not (project / "o2").exists()


def test_bad_params_values_and_headers_are_one_line_errors(project):
    (project / "params.yaml").write_text(yaml.safe_dump({"ingest": {"seed": 0, "fractions": [0.5, 0.6, 0.1]}}))
    assert "sum to 1" in _one_line_error(_run("ingest", "nhfi", "--src", "src", "--out", "o"), 2)
    (project / "params.yaml").write_text("ingest: [unclosed\n")
    assert "not valid YAML" in _one_line_error(_run("ingest", "nhfi", "--src", "src", "--out", "o"), 2)
    (project / "params.yaml").write_text(yaml.safe_dump({"ingest": {}}))
    write_file(project / "fer" / "fer2013.csv", b"label,image\n1,2\n")
    assert "header must have the columns" in _one_line_error(_run("ingest", "fer2013", "--src", "fer", "--out", "o"), 1)
    assert not (project / "o").exists()


def test_a_record_key_that_is_not_a_manifest_column_is_an_error(tmp_path):
    with pytest.raises(KeyError, match="age_grup"):
        with VariantWriter(tmp_path / "v") as writer:
            writer.add({"key": "a", "source": "a", "age_grup": "adult"}, _image(0))
    assert not (tmp_path / "v").exists()


# outputs over Git's, DVC's or the project's own files --------------------------------------------------
@pytest.mark.parametrize("target", [".dvc/config", ".dvc/cache/files/md5/zz", "dvc.yaml", "params.yaml"])
def test_a_file_output_never_lands_in_dvc_or_over_a_project_file_git_tracks(git_project, target):
    before = {p: p.read_bytes() for p in git_project.rglob("*") if p.is_file() and ".git" not in p.parts}
    with pytest.raises(UnsafeOutput, match="refusing"):
        write_json(git_project / target, {"overwritten": True})
    after = {p: p.read_bytes() for p in git_project.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert after == before


def test_a_tracked_output_of_a_stage_an_untracked_file_and_a_queued_experiments_workspace_are_writable(git_project):
    write_json(git_project / "metrics" / "score.json", {"accuracy": 0.9})  # tracked, and dvc.lock's output
    (git_project / "notes.json").write_text("{}")  # exists, untracked: an earlier output of a manual run
    write_json(git_project / "notes.json", {"a": 1})
    # `dvc exp run --queue` runs in a copy of the project under .dvc/tmp/exps/: its outputs are its own
    workspace = git_project / ".dvc" / "tmp" / "exps" / "tmpabc"
    workspace.mkdir(parents=True)
    (workspace / "dvc.yaml").write_text("stages: {}\n")
    write_json(workspace / "metrics" / "score.json", {"accuracy": 0.8})
    assert json.loads((workspace / "metrics" / "score.json").read_text()) == {"accuracy": 0.8}


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_published_outputs_take_the_umask_whatever_modes_a_library_wrote(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with atomic_path(tmp_path / "models" / "m", kind="model") as staged:
            staged.mkdir(mode=0o700)  # as mkdtemp makes it
            (staged / "seed-0").mkdir(mode=0o700)
            weights = staged / "seed-0" / "model.safetensors"
            weights.write_bytes(b"w")
            weights.chmod(0o600)  # as safetensors' save_file leaves it
        write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(previous)
    model = tmp_path / "models" / "m"
    assert (model.stat().st_mode & 0o777, (model / "seed-0").stat().st_mode & 0o777) == (0o777 & ~umask,) * 2
    assert (model / "seed-0" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask
