"""A staging folder that a killed stage left beside its output stays out of DVC's hashes (``.dvcignore``) and is
removed by the next `fersynth warm` (`make repro`), also when DVC restores the output from its run-cache and the
stage that would have cleaned it never runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from fersynth.ops.staging import sweep

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEAD_PID = 2**22 + 1  # above Linux's pid_max default ceiling (4194304): never a live process


def _run(root: Path, *command: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("DVC_ROOT", None)
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _project(root: Path) -> Path:
    """Two stages as `contact-sheet` and `report` are: one writes ``sheets/a`` (a folder output), the next
    depends on the whole ``sheets/`` folder; the repository's own ``.dvcignore``."""
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        assert _run(root, *command).returncode == 0
    shutil.copyfile(ROOT / ".dvcignore", root / ".dvcignore")
    stages = {
        "sheet": {"cmd": "mkdir -p sheets/a && echo page > sheets/a/page.txt", "outs": ["sheets/a"]},
        "report": {"cmd": "ls -a sheets > report.txt", "deps": ["sheets"], "outs": ["report.txt"]},
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    assert _run(root, sys.executable, "-m", "dvc", "repro", "-q").returncode == 0
    return root


def _killed_stage_leftover(root: Path) -> Path:
    leftover = root / "sheets" / f".a.fersynth-stage-{DEAD_PID}-k1ll3d"
    (leftover / "a").mkdir(parents=True)
    (leftover / "a" / "page.txt").write_text("half a page")
    return leftover


def test_a_leftover_beside_a_run_cache_restored_output_is_ignored_by_dvc_and_swept_by_warm(tmp_path):
    root = _project(tmp_path)
    leftover = _killed_stage_leftover(root)
    status = _run(root, sys.executable, "-m", "dvc", "status")
    assert "up to date" in status.stdout, "the leftover changed the hash of report's dependency: " + status.stdout
    shutil.rmtree(root / "sheets" / "a")  # the next repro restores it from the run-cache: `sheet` never runs
    ran = _run(root, str(BIN / "fersynth"), "warm", "--", sys.executable, "-m", "dvc", "repro")
    assert ran.returncode == 0, ran.stderr
    assert not leftover.exists()
    assert (root / "sheets" / "a" / "page.txt").read_text() == "page\n"  # the output itself untouched
    swept = [line for line in ran.stderr.splitlines() if "staging folder" in line]
    assert swept == [f"fersynth warm: removed 1 staging folder(s) a killed stage left: {leftover.relative_to(root)}"]
    after = _run(root, sys.executable, "-m", "dvc", "status")
    assert "up to date" in after.stdout, after.stdout


def test_a_live_stages_staging_folder_and_foreign_folders_are_left_alone(tmp_path):
    root = _project(tmp_path)
    live = root / "sheets" / f".a.fersynth-stage-{os.getpid()}-running"  # a stage at work right now
    foreign = root / "sheets" / ".a.backup"  # not fersynth's: never deleted
    for folder in (live, foreign):
        folder.mkdir()
    dead = _killed_stage_leftover(root)
    assert sweep(root) is not None
    assert live.is_dir() and foreign.is_dir() and not dead.exists()
    assert sweep(root) is None  # nothing left to say
