import os
import subprocess
import sys
from pathlib import Path

import pytest

from fersynth.errors import UsageError
from fersynth.ops.model_versions import register_changed

PIPELINE = """stages:
  make:
    cmd: mkdir -p models/m && cp weights.txt models/m/w.txt
    deps:
      - weights.txt
    outs:
      - models/m
artifacts:
  m-one:
    path: models/m
    type: model
    desc: a tiny model
  never-built:
    path: models/none
    type: model
"""


def _run(args: list[str], cwd: Path) -> str:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}: {done.stdout[-1500:]} {done.stderr[-1500:]}"
    return done.stdout + done.stderr


def _commit_run(repo: Path, weights: str, message: str) -> None:
    (repo / "weights.txt").write_text(weights)
    _run(["dvc", "repro", "-q"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", message], repo)
    _run(["dvc", "push", "-q"], repo)


@pytest.fixture
def origin(tmp_path):
    repo = tmp_path / "origin"
    repo.mkdir()
    for args in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "t@example.org"],
        ["git", "config", "user.name", "t"],
        ["dvc", "init", "-q"],
        ["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")],
    ):
        _run(args, repo)
    (repo / "dvc.yaml").write_text(PIPELINE)
    _commit_run(repo, "first", "one")
    return repo


def test_dvc_artifacts_get_finds_a_registered_model_from_a_fresh_clone(origin, tmp_path):
    results = {r.name: r for r in register_changed(origin)}
    assert (results["m-one"].version, results["m-one"].reason) == ("v1.0.0", "new")
    assert results["never-built"].version is None and "no output" in results["never-built"].reason
    assert [r.reason for r in register_changed(origin)][0] == "unchanged"  # twice adds nothing
    _commit_run(origin, "second", "two")
    assert register_changed(origin, dry_run=True)[0].reason == "changed"
    assert register_changed(origin)[0].version == "v1.1.0"

    _run(["git", "clone", "-q", str(origin), str(tmp_path / "clone")], tmp_path)
    clone = tmp_path / "clone"
    _run(["dvc", "artifacts", "get", str(origin), "m-one", "-o", str(tmp_path / "latest")], clone)
    assert (tmp_path / "latest" / "w.txt").read_text() == "second"
    _run(["dvc", "artifacts", "get", str(origin), "m-one", "--rev", "v1.0.0", "-o", str(tmp_path / "first")], clone)
    assert (tmp_path / "first" / "w.txt").read_text() == "first"  # an old version comes from the DVC remote


def test_an_uncommitted_lock_is_refused(origin):
    (origin / "weights.txt").write_text("third")
    _run(["dvc", "repro", "-q"], origin)
    with pytest.raises(UsageError, match="uncommitted"):
        register_changed(origin)
