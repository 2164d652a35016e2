"""`fersynth warm` (what `make repro` runs) survives a dvc.lock that a killed `dvc repro` left empty or cut short
(DVC rewrites it in place after every stage): it restores the last valid copy, else git's index, in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fersynth.ops.lockfile import COPY, guard

BIN = Path(sys.executable).parent


def _env() -> dict:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("DVC_ROOT", None)
    return env


def _run(root: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=root, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture
def project(tmp_path) -> Path:
    """A git + DVC project with one stage run, its dvc.lock committed."""
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        assert _run(tmp_path, *command).returncode == 0
    stage = {"cmd": "echo hello > out.txt", "deps": ["in.txt"], "outs": ["out.txt"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"greet": stage}}))
    (tmp_path / "in.txt").write_text("in\n")
    assert _run(tmp_path, sys.executable, "-m", "dvc", "repro", "-q").returncode == 0
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    assert _run(tmp_path, *git, "add", "-A").returncode == 0
    assert _run(tmp_path, *git, "commit", "-qm", "lock").returncode == 0
    return tmp_path


def test_a_valid_lock_is_kept_aside_and_an_emptied_one_comes_back_from_that_copy(project):
    lock = project / "dvc.lock"
    good = lock.read_bytes()
    assert guard(project) is None and (project / COPY).read_bytes() == good
    lock.write_bytes(b"")  # what a SIGKILL during DVC's rewrite leaves (3 of 3 probes)
    message = guard(project)
    assert "dvc.lock was empty" in message and str(COPY) in message and "\n" not in message
    assert lock.read_bytes() == good


def test_without_a_copy_a_cut_lock_comes_back_from_gits_index_and_without_either_it_says_what_to_do(project):
    lock = project / "dvc.lock"
    good = lock.read_text()
    lock.write_text(good[: len(good) // 3] + "\n  bad: [")  # cut short mid-entry: not YAML any more
    message = guard(project)
    assert "not valid YAML" in message and "git's index" in message
    assert lock.read_text() == good
    lock.write_text("schema: '2.0'\nstages: {greet: {cmd: 7, outs: 3}}\n")  # YAML, but not what DVC can read
    assert _run(project, "git", "rm", "-q", "--cached", "dvc.lock").returncode == 0
    message = guard(project)
    assert "not a valid DVC lock file" in message and "git checkout dvc.lock" in message
    assert "stages: {greet" in lock.read_text()  # nothing to restore from: left as found, never deleted


def test_a_repro_killed_while_dvc_rewrites_the_lock_leaves_a_pipeline_dvc_can_read(project):
    # the caller stands for `dvc repro` killed inside its lock rewrite: the lock truncated, then SIGKILL
    killed = _run(project, str(BIN / "fersynth"), "warm", "--", "sh", "-c", ": > dvc.lock; kill -9 $$")
    assert killed.returncode == 137
    assert "dvc.lock was empty (a killed `dvc repro`); restored it" in killed.stderr
    status = _run(project, sys.executable, "-m", "dvc", "status")
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
    # and when the kill takes `fersynth warm` with it, the next run repairs the lock before DVC reads it
    (project / "dvc.lock").write_bytes(b"")
    again = _run(project, str(BIN / "fersynth"), "warm", "--", sys.executable, "-m", "dvc", "status")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr
    assert again.stderr.count("restored it from") == 1
