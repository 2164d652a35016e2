"""Shared fixtures: tiny images and native-format files built in tmp_path."""

# ruff: noqa: E402  (the CPU arithmetic is pinned before the imports below load PyTorch)

from __future__ import annotations

from fersynth.runtime import pin

pin()  # as every `fersynth` process does, before anything here loads PyTorch: tests compute as the pipeline

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fersynth.demo.renderer import FaceSpec, render_face
from fersynth.demo.truth import read_ground_truth
from fersynth.variants.variant import MANIFEST_SCHEMA, Variant


def image_bytes(
    emotion: str = "happy", size: tuple[int, int] = (48, 48), mode: str = "L", fmt: str = "PNG", identity: int = 0
) -> bytes:
    buffer = io.BytesIO()
    render_face(FaceSpec(emotion=emotion, identity=identity), size, mode).save(buffer, format=fmt)
    return buffer.getvalue()


def write_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def pixel_string(seed: int) -> str:
    return " ".join(str(v) for v in np.random.default_rng(seed).integers(0, 256, 2304))


@pytest.fixture(scope="session", autouse=True)
def no_tracking_server():
    """Tests log to their own stores: a developer's ``export MLFLOW_TRACKING_URI=...`` (make mlflow-server)
    must not send their runs to a real server, nor DVC stages that tests start."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture
def faces_png():
    return image_bytes


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A small demo tree, generated once per test session."""
    from fersynth.demo import DemoConfig, make_demo

    out = tmp_path_factory.mktemp("demo")
    config = DemoConfig(
        fer2013_rows=160,
        nhfi_images=90,
        affectnet_images=100,
        casme2_subjects=5,
        casme2_clips_per_subject=3,
        casme2_frames_per_clip=(3, 5),
        utkface_images=60,
        sfhq_images=80,
        sfhq_size=64,
    )
    make_demo(config, out)
    return out


def with_true_demographics(variant_dir, truth_csv):
    """Fill gender / age group / ethnicity from the demo ground truth, in place (standing in for
    demographics-predict, which tests/test_demographics.py covers)."""
    manifest = Variant(variant_dir).manifest
    truth = read_ground_truth(truth_csv).reindex(manifest["source"].to_numpy())
    for column in ("gender", "age_group", "ethnicity"):
        manifest[column] = truth[column].to_numpy()
    manifest["gender_confidence"] = 0.9
    manifest["ethnicity_confidence"] = 0.8
    pq.write_table(
        pa.Table.from_pandas(manifest, schema=MANIFEST_SCHEMA, preserve_index=False), variant_dir / "manifest.parquet"
    )


def opinionated_classifier(directory: Path, favourite: str = "neutral") -> Path:
    """A saved gate classifier that sees ``favourite`` in every face: at top-1 it rejects every other
    emotion (a stand-in for a classifier trained on other data than the pictures it gates)."""
    import torch

    from fersynth.generate.gate_classifier import EmotionClassifier
    from fersynth.modeling.architectures import SmallCNN
    from fersynth.variants.labels import BASIC7

    model = SmallCNN(len(BASIC7), 1, (4,))
    with torch.no_grad():
        head = model.head[-1]
        head.weight.zero_()
        head.bias.zero_()
        head.bias[BASIC7.index(favourite)] = 10.0
    EmotionClassifier(model, BASIC7, 16).save(directory)
    return directory


def dvc_stages(root: Path) -> dict[str, dict]:
    """The resolved stages of ``root/dvc.yaml`` (foreach and ``${...}`` expanded by DVC itself):
    ``name -> {"cmd", "deps", "params", "outs", "metrics"}`` with paths as written there."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {
            stage.addressing: {
                "cmd": stage.cmd,
                "deps": [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)],
                "params": [p for d in stage.deps if isinstance(d, ParamsDependency) for p in d.params],
                "outs": [o.def_path for o in stage.outs],
                "metrics": [o.def_path for o in stage.outs if o.metric],
            }
            for stage in repo.index.stages
        }


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium for the browser tests. `make test` installs it when missing, so CI must
    run them (a missing browser fails there); elsewhere they skip."""
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: `make test` installs chromium (apt-get) when it is missing")
        pytest.skip("no chromium here (apt-get install chromium)")
    return browser


def free_port() -> int:
    """A loopback port nothing listens on (for a test's server)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_ok(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command; its stdout, or a failed assertion showing the ends of its output."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def wait_for_dvc_queue(repo: Path, env: dict[str, str], timeout: float, poll: float) -> str:
    """Poll `dvc queue status` until nothing is queued or running; fail with the failed tasks' logs. The status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run_ok(["dvc", "queue", "status"], repo, env)
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(poll)
    status = run_ok(["dvc", "queue", "status"], repo, env)
    failed = [line.split()[0] for line in status.splitlines() if "Failed" in line]
    logs = [
        subprocess.run(["dvc", "queue", "logs", task], cwd=repo, env=env, capture_output=True, text=True).stdout
        for task in failed
    ]
    assert not failed, status + "\n".join(logs)[-3000:]
    return status


def tree_bytes(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path: two outputs compared byte for byte."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def run_alone_and_with_torchrun(root: Path, stage: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python *stage --out single --metrics single.json``, then the same under ``torchrun`` with two processes
    (``--out team --metrics team.json``), both with one thread (torchrun's default: the summation order of CPU
    kernels depends on the thread count). Both must succeed; the torchrun run is returned (its log)."""
    env = env | {"OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, *stage, "--out", "single", "--metrics", "single.json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    command = [torchrun, "--standalone", "--nproc_per_node", "2", *stage, "--out", "team", "--metrics", "team.json"]
    team = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert team.returncode == 0, team.stdout[-3000:] + team.stderr[-3000:]
    return team


def validate_project(root: Path, stages: dict, suites: dict) -> None:
    """A tiny DVC project around the real ``validate`` stage: ``stages`` as dvc.yaml's, the project's ``vars``
    (the validate foreach reads ``configs/validate.yaml``'s suites), ``suites`` there, and the runtime pin
    every stage depends on in params.yaml."""
    import yaml

    project_vars = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["vars"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"vars": project_vars, "stages": stages}, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump({"runtime": {"threads": 2, "cpu_isa": "avx2"}}))
    (root / "configs").mkdir()
    (root / "configs" / "validate.yaml").write_text(yaml.safe_dump({"suites": suites}))


def make_git_project(root: Path) -> Path:
    """A real git repo at ``root`` with .dvc/config, dvc.yaml, params.yaml and a committed cache:false metrics
    output that dvc.lock records (``metrics/score.json``)."""
    import yaml

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / ".dvc").mkdir()
    (root / ".dvc" / "config").write_text("[core]\n    remote = team\n")
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text("runtime: {threads: 2}\n")
    (root / "metrics").mkdir()
    (root / "metrics" / "score.json").write_text("{}\n")
    lock = {"schema": "2.0", "stages": {"score": {"cmd": "x", "outs": [{"path": "metrics/score.json"}]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "project"], cwd=root, check=True)
    return root


@pytest.fixture
def git_project(tmp_path, monkeypatch):
    """:func:`make_git_project` in ``tmp_path``, as the working directory."""
    monkeypatch.chdir(make_git_project(tmp_path))
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return tmp_path


class _Hang(BaseException):
    """Raised by :func:`at_most`'s alarm; not an ``Exception``, so no ``except Exception`` in fersynth swallows it."""


@contextlib.contextmanager
def at_most(seconds: float):
    """Fail instead of waiting when the code under test hangs in this process (a FIFO opened for reading, a sheet
    walked cell by cell): the alarm interrupts it and the test fails saying so."""

    def alarm(signum, frame):
        raise _Hang

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Hang:
        raise AssertionError(f"still running after {seconds} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def add_basic7_image(writer, key: str, split: str, emotion: str, label: int, data: bytes, **fields) -> None:
    """One basic-7 row of a toy variant (``source`` = ``key``), its image from ``data``; ``fields`` add columns
    (``dataset``, ``subject``, ...)."""
    from PIL import Image

    record = {"key": key, "source": key, "split": split, "emotion": emotion, "label": label, "label_space": "basic7"}
    writer.add(record | fields, Image.open(io.BytesIO(data)), data)


@contextlib.contextmanager
def ingested_workspace(tmp_path_factory, name: str, tiny_demo: Path):
    """A project root (``DVC_ROOT``) named ``name`` holding the tiny demo's FER2013 ingested as ``fer2013``."""
    from fersynth.ingest import ingest

    root = tmp_path_factory.mktemp(name)
    patch = pytest.MonkeyPatch()
    patch.setenv("DVC_ROOT", str(root))
    ingest("fer2013", tiny_demo / "fer2013", root / "fer2013")
    try:
        yield root
    finally:
        patch.undo()


def tiny_train_config(root: Path, size: int, **overrides):
    """A training recipe on ``root/fer2013`` small enough for a test: ``size`` px inputs, one epoch unless
    ``overrides`` say otherwise."""
    from fersynth.modeling.data import InputConfig
    from fersynth.train.recipe import TrainConfig

    values = {
        "variants": (str(root / "fer2013"),),
        "input": InputConfig(size=size),
        "epochs": 1,
        "batch_size": 16,
        "learning_rate": 3e-3,
    }
    return TrainConfig(**(values | overrides))
