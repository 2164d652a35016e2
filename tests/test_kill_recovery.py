"""SIGKILL at a random moment, several times over, then `make repro`'s command: the pipeline ends as if nothing had
happened. `dvc status` clean, every output the same bytes as an uninterrupted run's, no staging folder and no
process left behind. The kills take the whole process group of `fersynth warm -- dvc repro` (what Ctrl-\\ or an
OOM-killed terminal does): DVC mid-stage or mid-`dvc.lock`, warm workers mid-write."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_ok

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("demo", "ingest@fer2013", "ingest@nhfi")  # four real stages (demo renders, ingest reads and packs)
KILLS = 3
SEED = int(os.environ.get("FERSYNTH_KILL_SEED", "20261207"))

pytestmark = pytest.mark.slow


@pytest.fixture
def env() -> dict:
    environment = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    environment.pop("DVC_ROOT", None)
    return environment


def _copy_project(target: Path, env: dict) -> Path:
    for name in run_ok(["git", "ls-files", "-co", "--exclude-standard"], ROOT, env).splitlines():
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    run_ok(["git", "init", "-q"], target, env)
    run_ok(["git", "add", "-A"], target, env)
    run_ok(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], target, env)
    return target


def _repro(project: Path, env: dict, *options: str) -> subprocess.Popen:
    command = ["fersynth", "warm", "--", "dvc", "repro", *options, *TARGETS]
    return subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def _outs(project: Path) -> dict[str, str]:
    """Each target stage's outputs as ``dvc.lock`` records them: path -> md5 (a folder's is over its files)."""
    stages = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for name in TARGETS for out in stages[name]["outs"]}


def _processes_in(project: Path) -> list[str]:
    """Live processes (not zombies) whose working directory is inside ``project``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z" and (cwd == str(project) or cwd.startswith(f"{project}/")):
            found.append(f"{entry.name} {command[:120]}")
    return found


def _wait_until_gone(project: Path, seconds: float = 15) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _processes_in(project)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_random_sigkills_then_make_repro_end_clean_and_byte_identical(tmp_path, env):
    project = _copy_project(tmp_path / "project", env)
    started = time.monotonic()
    reference = _repro(project, env)
    log = reference.communicate(timeout=900)[0].decode(errors="replace")
    assert reference.returncode == 0, log[-3000:]
    took = time.monotonic() - started
    expected = _outs(project)

    chooser = random.Random(SEED)
    landed = 0
    for kill in range(KILLS):
        run = _repro(project, env, "--force", "--no-run-cache")  # every stage really runs again
        moment = chooser.uniform(0.5, took)
        try:
            run.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            landed += 1
        run.communicate()
        left = _wait_until_gone(project)
        assert not left, f"kill {kill + 1} at {moment:.1f} s (seed {SEED}) left processes running: {left}"

    assert landed, f"seed {SEED}: every forced run ended before its kill; nothing was tested"
    final = _repro(project, env)  # what `make repro` runs
    log = final.communicate(timeout=900)[0].decode(errors="replace")
    assert final.returncode == 0, f"seed {SEED}: " + log[-3000:]
    status = run_ok(["dvc", "status", *TARGETS], project, env)
    assert "up to date" in status, f"seed {SEED}: {status}"
    assert _outs(project) == expected, f"seed {SEED}: outputs differ from the uninterrupted run's"
    leftovers = [str(p.relative_to(project)) for p in project.glob("data/**/.*fersynth-stage-*")]
    assert not leftovers, f"seed {SEED}: staging folders left: {leftovers}"
    assert not _wait_until_gone(project)
