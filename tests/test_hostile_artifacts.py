"""Hostile files among what another machine or checkout hands fersynth (issue 22): a model directory's
config and weights, metrics JSON, a variant's image shards, a ground truth, a floor, a trials record. Each is
checked (regular file, sane size) before it is read: a one-line error or a quarantine row, never a hang on a
FIFO, never memory filled by a link to ``/dev/zero`` or a 2 GB sparse file read whole.

Probes that would hang or fill memory on unchecked code run in a child process (:func:`_fersynth`) with a
timeout and its memory capped just above what its imports took."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from fersynth.errors import InputError
from fersynth.variants.labels import BASIC7
from tests.conftest import at_most

SPARSE_BYTES = 2 << 30  # 2 GB of holes: no disk, but read whole it is 2 GB of memory


def _fersynth(args: list[str], cwd: Path, preload: tuple[str, ...] = (), timeout: float = 90):
    """``fersynth ARGS`` in a child whose address space is capped at what it holds after importing the CLI
    (and ``preload``) plus 1 GB: reading a 2 GB file or ``/dev/zero`` whole fails there instead of taking the
    machine's memory; a hang is a ``TimeoutExpired`` (the child is killed)."""
    script = textwrap.dedent(
        f"""
        import importlib, resource, sys
        from fersynth.cli import main
        for module in {list(preload)!r}:
            importlib.import_module(module)
        with open("/proc/self/status") as status:
            used = int(status.read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (used + 2**30, resource.RLIM_INFINITY))
        main({args!r}, prog_name="fersynth")
        """
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _one_line_error(done: subprocess.CompletedProcess, command: str, *parts: str) -> str:
    """The child's error line, asserted to be its only stderr line (progress bars aside), exit 1, and to hold
    ``parts``."""
    lines = [line for line in done.stderr.strip().splitlines() if not re.search(r"\d+%\|", line)]
    assert done.returncode == 1 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"fersynth {command}: error: "), lines[0]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def _sparse(path: Path, size: int = SPARSE_BYTES) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def _tiny_model(directory: Path) -> Path:
    """A `fersynth train`-shaped model directory (an untrained 16 px paper001_cnn): weights and config."""
    from fersynth.modeling.architectures import build_model
    from fersynth.modeling.checkpoint import save_checkpoint

    config = {
        "architecture": "paper001_cnn",
        "width": 0.25,
        "input": {"size": 16, "channels": 1},
        "classes": list(BASIC7),
        "variants": [],
    }
    save_checkpoint(directory, build_model("paper001_cnn", len(BASIC7), 1, 16, width=0.25), config)
    return directory


def _tiny_variant(directory: Path) -> Path:
    from fersynth.variants.variant import VariantWriter

    with VariantWriter(directory) as writer:
        for i, emotion in enumerate(("happy", "sad")):
            record = {"key": f"{emotion}.png", "source": f"{emotion}.png", "split": "train", "emotion": emotion}
            writer.add(record | {"label": BASIC7.index(emotion)}, Image.new("L", (16, 16), 60 * i))
        writer.commit()
    return directory


# model directories ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, what", [("config.json", "model config"), ("model.safetensors", "model weights")])
def test_a_model_file_that_is_a_fifo_is_a_one_line_error_not_a_hang(tmp_path, name, what):
    model = _tiny_model(tmp_path / "model")
    (model / name).unlink()
    os.mkfifo(model / name)  # a plain open() waits for a writer: forever
    (tmp_path / "face.png").write_bytes(b"")
    args = ["predict", str(model), "--no-detect", "--in", str(tmp_path / "face.png"), "--out", str(tmp_path / "out")]
    done = _fersynth(args, tmp_path, preload=("fersynth.predict.predict", "safetensors.torch"))
    _one_line_error(done, "predict", f"{what} {model / name}: not a regular file: a FIFO")


def test_a_2_gb_model_config_is_refused_from_its_size_not_read(tmp_path):
    model = _tiny_model(tmp_path / "model")
    _sparse(model / "config.json")
    (tmp_path / "face.png").write_bytes(b"")
    args = ["predict", str(model), "--no-detect", "--in", str(tmp_path / "face.png"), "--out", str(tmp_path / "out")]
    done = _fersynth(args, tmp_path, preload=("fersynth.predict.predict", "safetensors.torch"))
    _one_line_error(done, "predict", "model config", "too large: 2.0 GB > 16.0 MB")


def test_a_model_config_that_is_not_a_json_object_is_one_line(tmp_path):
    from fersynth.modeling.checkpoint import load_checkpoint

    model = _tiny_model(tmp_path / "model")
    (model / "config.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"model config .*config\.json: not a JSON object but list"):
        load_checkpoint(model)
    (model / "config.json").write_bytes(b'{"classes": \xff}')
    with pytest.raises(InputError, match=r"config\.json: not valid JSON"):
        load_checkpoint(model)


def test_a_trials_record_that_is_a_fifo_is_named_as_unreadable(tmp_path):
    from fersynth.train.selection import best_trial_dir

    for seed in (0, 1):
        _tiny_model(tmp_path / "model" / f"seed-{seed}")
    os.mkfifo(tmp_path / "model" / "trials.json")  # not "missing": it is there and cannot be a record
    with at_most(10), pytest.raises(ValueError, match=r"trials\.json is unreadable \(not a regular file: a FIFO\)"):
        best_trial_dir(tmp_path / "model")


def test_a_floor_that_is_a_link_to_dev_zero_is_an_error_not_a_model_without_floor(tmp_path):
    from fersynth.modeling.floor import Floor

    (tmp_path / "floor.npz").symlink_to("/dev/zero")
    with pytest.raises(InputError, match=r"floor .*floor\.npz: not a regular file: a character device"):
        Floor.load(tmp_path / "floor.npz")
    assert Floor.load(tmp_path / "absent.npz") is None


def test_a_fifo_inside_a_local_diffusers_model_is_refused_before_diffusers_opens_it(tmp_path):
    from fersynth.generate.diffusers_backend import DiffusersConfig

    (tmp_path / "sd" / "unet").mkdir(parents=True)
    (tmp_path / "sd" / "model_index.json").write_text("{}")
    os.mkfifo(tmp_path / "sd" / "unet" / "config.json")
    config = DiffusersConfig(model=str(tmp_path / "sd"))
    with pytest.raises(InputError, match=r"diffusers\.model file .*unet/config\.json: not a regular file: a FIFO"):
        config.check_files()
    DiffusersConfig(model="CompVis/stable-diffusion-v1-4").check_files()  # a hub id: nothing local to check


# metrics read by summary, compare, report, results --------------------------------------------------------
def test_a_metrics_file_linked_to_dev_zero_is_a_one_line_error_not_memory(tmp_path):
    (tmp_path / "compare.json").symlink_to("/dev/zero")  # read whole: memory until the machine gives out
    (tmp_path / "controls.json").write_text("{}")
    (tmp_path / "train").mkdir()
    args = ["summary", "--compared", str(tmp_path / "compare.json"), "--controls", str(tmp_path / "controls.json")]
    args += ["--train-metrics", str(tmp_path / "train"), "--out", str(tmp_path / "summary")]
    (tmp_path / "params.yaml").write_text("compare:\n  pairs: {}\n")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    done = _fersynth(args + ["--params", str(tmp_path / "params.yaml")], tmp_path, ("fersynth.compare.summary",))
    _one_line_error(done, "summary", "compare results", "not a regular file: a character device")


def test_training_metrics_of_2_gb_stop_the_results_tables_from_their_size(tmp_path):
    (tmp_path / "metrics" / "train").mkdir(parents=True)
    _sparse(tmp_path / "metrics" / "train" / "fer2013.json")
    (tmp_path / "page.md").write_text("<!-- results:experiments -->\n<!-- /results:experiments -->\n")
    args = ["results", "--readme", str(tmp_path / "page.md"), "--metrics", str(tmp_path / "metrics")]
    done = _fersynth(args, tmp_path, ("fersynth.report.results",))
    _one_line_error(done, "results", "training metrics", "too large: 2.0 GB > 16.0 MB")


def test_a_metrics_file_that_is_a_fifo_is_not_taken_for_a_missing_one(tmp_path):
    from fersynth.report.results import render

    (tmp_path / "evaluate").mkdir()
    os.mkfifo(tmp_path / "evaluate" / "floor.json")  # before: is_file() said no, and the table said "—"
    with at_most(10), pytest.raises(InputError, match=r"metrics file .*floor\.json: not a regular file: a FIFO"):
        render("<!-- results:experiments -->\n<!-- /results:experiments -->\n", tmp_path)


def test_the_report_refuses_a_fifo_among_the_per_class_reports(tmp_path):
    from fersynth.report.report import _per_class

    (tmp_path / "fer2013").mkdir()
    (tmp_path / "fer2013" / "balanced_set.json").write_text(json.dumps({"happy": {"f1-score": 1.0}, "accuracy": 1.0}))
    assert _per_class(tmp_path)["fer2013"]["balanced_set"]["accuracy"] == 1.0
    os.mkfifo(tmp_path / "fer2013" / "test.json")
    with at_most(10), pytest.raises(InputError, match=r"per-class report .*test\.json: not a regular file: a FIFO"):
        _per_class(tmp_path)


# variants -------------------------------------------------------------------------------------------------
def test_a_shard_replaced_by_a_fifo_is_a_one_line_error_not_a_hang(tmp_path):
    variant = _tiny_variant(tmp_path / "variant")
    (shard,) = (variant / "images").glob("*.parquet")
    shard.unlink()
    os.mkfifo(shard)
    done = _fersynth(["export", str(variant), str(tmp_path / "export")], tmp_path, ("fersynth.ingest.export",))
    _one_line_error(done, "export", f"image shard {shard}: not a regular file: a FIFO")


def test_validate_names_a_shard_that_is_a_fifo_or_a_device_instead_of_missing(tmp_path):
    from fersynth.checks.integrity import check_images
    from fersynth.variants.variant import Variant

    variant = _tiny_variant(tmp_path / "variant")
    (shard,) = (variant / "images").glob("*.parquet")
    shard.unlink()
    shard.symlink_to("/dev/zero")
    assert set(check_images(Variant(variant))["problem"]) == {
        "unreadable shard: not a regular file: a character device"
    }
    shard.unlink()
    os.mkfifo(shard)
    with at_most(10):
        assert set(check_images(Variant(variant))["problem"]) == {"unreadable shard: not a regular file: a FIFO"}


def test_demographics_predict_does_not_copy_a_stray_link_to_dev_zero_among_the_shards(tmp_path):
    from fersynth.variants.files import copy_regular

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "shard-00000.parquet").write_bytes(b"PAR1")
    (tmp_path / "images" / "stray.parquet").symlink_to("/dev/zero")  # copytree alone would copy it forever
    with pytest.raises(InputError, match=r"stray\.parquet: not a regular file: a character device"):
        shutil.copytree(tmp_path / "images", tmp_path / "copy", copy_function=copy_regular)


# ground truth ---------------------------------------------------------------------------------------------
def test_a_ground_truth_that_is_a_fifo_is_a_one_line_error_not_a_hang(tmp_path):
    variant = _tiny_variant(tmp_path / "variant")
    (tmp_path / "params.yaml").write_text("filter: {}\n")
    os.mkfifo(tmp_path / "truth.csv")
    args = ["filter", str(variant), "--out", str(tmp_path / "filtered"), "--truth", str(tmp_path / "truth.csv")]
    done = _fersynth(args, tmp_path, ("fersynth.annotate.filtering",))
    _one_line_error(done, "filter", f"ground truth {tmp_path / 'truth.csv'}: not a regular file: a FIFO")


def test_the_gate_reports_a_fifo_among_the_pictures_instead_of_hanging(tmp_path):
    import numpy as np
    import pandas as pd

    from fersynth.generate.gate import GateConfig, gate_directory

    (tmp_path / "in").mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "in" / "happy-a.png")
    os.mkfifo(tmp_path / "in" / "happy-b.png")  # Image.open(path) would wait for a writer
    with at_most(20):
        gate_directory(tmp_path / "in", tmp_path / "gate.csv", GateConfig(detector="none"))
    reasons = pd.read_csv(tmp_path / "gate.csv").set_index("file")["reason"]
    assert reasons["happy-b.png"] == "unreadable: not a regular file: a FIFO"
    assert not reasons["happy-a.png"].startswith("unreadable")
