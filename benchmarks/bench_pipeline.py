"""A newcomer's first run, timed: a fresh `git clone` of this repository's HEAD, then exactly the README's
commands in it: `make venv` (what both entry points do first), `make test` (the default suite), with
``--slow`` also `make test-slow`, then `make repro` (its `dvc repro`, stage by stage) and a no-op `dvc repro`.
Totals count the venv in, as a new user pays it. Whether the repro left `git status` clean (the committed
dvc.lock reproduced byte for byte) is recorded too. Results, with the commit and the targets of issues 11 and
20: metrics/bench/pipeline.json.

    python benchmarks/bench_pipeline.py              # venv, make test, make repro, no-op (~30 min on 2 cores)
    python benchmarks/bench_pipeline.py --slow       # and make test-slow (~15 min more)
    python benchmarks/bench_pipeline.py --no-tests   # venv + repro + no-op only
    python benchmarks/bench_pipeline.py --worktree   # the working tree (uncommitted changes too), this venv

Nothing here reuses the caller's virtual environment unless --worktree is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "metrics" / "bench" / "pipeline.json"
EXPERIMENT_STAGES = {"train", "evaluate", "compare", "report"}  # the rest builds data
TARGETS = {  # issues 11 and 20, 2 cores, fresh clone, the venv included (`make test`: the default suite)
    "make_repro_seconds_max": 600,
    "dvc_repro_seconds_max": 300,
    "make_test_seconds_max": 720,
    "noop_repro_seconds_max": 3,
}
BEFORE = {  # measured when issue 11 was filed (fresh clone, 2 cores), and at the end of issue 10
    "issue_11_filed": {"make_test_seconds": 1642, "dvc_repro_seconds": 1024, "noop_repro_seconds": 4.6},
    "issue_10_closed": {"make_test_seconds": 1130, "make_repro_seconds": 1048, "noop_repro_seconds": 4.1},
    # fresh clone of e2b8a4f, every stage a new Python (before `fersynth warm`)
    "cold_stages_e2b8a4f": {"make_repro_seconds": 520.8, "dvc_repro_seconds": 421.3, "make_test_seconds": 607.3},
}


def git_env() -> dict:
    env = dict(os.environ)
    env.pop("DVC_ROOT", None)
    env.pop("VIRTUAL_ENV", None)
    return env | {
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }


def copy_worktree(target: Path, env: dict) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for name in files:
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    subprocess.run(["git", "add", "-A"], cwd=target, check=True)
    subprocess.run(["git", "commit", "-qm", "bench"], cwd=target, check=True, env=env)


def timed(args: list[str], cwd: Path, env: dict, log: Path) -> tuple[float, str]:
    """Wall seconds and output of a command that must succeed; the output also goes to ``log``."""
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = round(time.perf_counter() - start, 1)
    log.write_text(done.stdout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed after {seconds} s; see {log}:\n{done.stdout[-2000:]}")
    return seconds, done.stdout


def stage_seconds(output: str, total: float) -> dict[str, float]:
    """Seconds per stage of a `dvc repro` output, from one 'Running stage' line to the next (a stage's
    share of DVC's own work, lock file and hashing, included)."""
    pattern = r"^\[t=([\d.]+)\] Running stage '([^']+)'"
    stamps = [(m.group(2), float(m.group(1))) for m in re.finditer(pattern, output, re.M)]
    out = {}
    for (name, start), (_, end) in zip(stamps, [*stamps[1:], ("", total)], strict=True):
        out[name] = round(end - start, 2)
    return out


def timed_repro(repo: Path, command: list[str], env: dict, log: Path) -> tuple[float, dict[str, float]]:
    """``command`` (`make repro`) with every output line time-stamped (seconds since start)."""
    start = time.perf_counter()
    lines = []
    process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        lines.append(f"[t={time.perf_counter() - start:.2f}] {line}")
    total = round(time.perf_counter() - start, 1)
    log.write_text("".join(lines))
    if process.wait() != 0:
        raise RuntimeError(f"{' '.join(command)} failed; see {log}")
    return total, stage_seconds("".join(lines), total)


def passed(output: str) -> str:
    found = re.findall(r"=+ (.*(?:passed|failed).*) in [\d.]+s", output)
    return found[-1].strip() if found else ""


def pytest_summary(output: str) -> dict:
    """A pytest run's last summary line and its five slowest tests (``--durations``)."""
    durations = re.findall(r"^([\d.]+)s call\s+(\S+)", output, re.M)
    return {"pytest": passed(output), "slowest": {name: float(s) for s, name in durations[:5]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-tests", action="store_true", help="skip make test")
    parser.add_argument("--no-repro", action="store_true", help="skip make repro and the no-op (tests only)")
    parser.add_argument("--slow", action="store_true", help="also time make test-slow (the slow-marked tests)")
    parser.add_argument("--worktree", action="store_true", help="the working tree with this venv, not a clone")
    parser.add_argument("--keep", type=Path, help="keep the clone and the logs in this new directory")
    args = parser.parse_args()
    env = git_env()
    scratch = Path(tempfile.mkdtemp(prefix="fersynth-bench-")) if not args.keep else args.keep
    scratch.mkdir(parents=True, exist_ok=True)
    repo, logs = scratch / "repo", scratch / "logs"
    logs.mkdir(exist_ok=True)
    result: dict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    try:
        if args.worktree:
            repo.mkdir()
            copy_worktree(repo, env)
            (repo / ".venv").symlink_to(ROOT / ".venv")
            result["source"] = "working tree (copied), the caller's venv"
        else:
            subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True, env=env)
            result["source"] = "fresh git clone of HEAD, new venv"
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        result["commit"] = commit.strip()
        venv_seconds = 0.0 if args.worktree else timed(["make", "venv"], repo, env, logs / "venv.log")[0]
        result["venv"] = {
            "seconds": venv_seconds,
            "gigabytes": round(_size(repo / ".venv") / 1e9, 2),
            "python": subprocess.run(
                [str(repo / ".venv" / "bin" / "python"), "--version"], capture_output=True, text=True
            ).stdout.strip(),
        }
        if not args.no_tests:
            full, out = timed(["make", "test"], repo, env, logs / "test.log")
            result["make_test"] = {"seconds": round(venv_seconds + full, 1), "seconds_venv_in_place": full}
            result["make_test"] |= pytest_summary(out)
        if args.slow:
            slow, out = timed(["make", "test-slow"], repo, env, logs / "test-slow.log")
            result["make_test_slow"] = {"seconds_venv_in_place": slow} | pytest_summary(out)
        # a part not measured this time keeps its last measurement in the file, with its commit and date
        previous = json.loads(OUT.read_text()) if OUT.exists() else {}
        if args.no_tests:
            kept = {k: previous[k] for k in ("make_test", "make_test_slow") if k in previous}
            result |= kept | {"tests_measured_at": _measured_at(previous, "tests_measured_at")}
        if args.no_repro:
            kept = {k: previous[k] for k in ("make_repro", "reproduced", "noop_repro_seconds") if k in previous}
            result |= kept | {"repro_measured_at": _measured_at(previous, "repro_measured_at")}
        else:
            result |= measure_repro(repo, env, logs, venv_seconds, args.worktree)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    measured = {}
    if "make_repro" in result:
        measured["make_repro_seconds_max"] = result["make_repro"]["seconds"]
        measured["dvc_repro_seconds_max"] = result["make_repro"]["dvc_repro_seconds"]
        measured["noop_repro_seconds_max"] = result["noop_repro_seconds"]
    if "make_test" in result:
        measured["make_test_seconds_max"] = result["make_test"]["seconds"]
    result["targets"] = TARGETS
    result["met"] = {key.removesuffix("_seconds_max"): value <= TARGETS[key] for key, value in measured.items()}
    result["before"] = BEFORE
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "make_repro"} | {"repro": measured}, indent=2))


def measure_repro(repo: Path, env: dict, logs: Path, venv_seconds: float, worktree: bool) -> dict:
    """`make repro` in ``repo``, stage by stage; whether it left `git status` clean; a no-op repro's median."""
    result: dict = {}
    dvc = repo / ".venv" / "bin" / "dvc"
    # the venv exists by now, so `make repro` is its `fersynth warm -- dvc repro` (a worktree copy runs that
    # directly: make would reinstall into the caller's venv when pyproject.toml is newer than its stamp)
    warm = [str(repo / ".venv" / "bin" / "fersynth"), "warm", "--"]
    command = [*warm, str(dvc), "repro"] if worktree else ["make", "repro"]
    repro, stages = timed_repro(repo, command, env, logs / "repro.log")
    # stages whose deps came out identical to the committed dvc.lock (e.g. `evaluate` when every model was
    # retrained byte for byte): DVC skips them, so their time is not in the total
    repro_log = (logs / "repro.log").read_text()
    skipped = re.findall(r"Stage '([^']+)' didn't change, skipping", repro_log)
    served = re.search(r"fersynth warm: (\d+) command\(s\) ran warm(.*)", repro_log)
    # the same bytes: a repro that made any output other than the committed lock's rewrites dvc.lock
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    result["reproduced"] = {
        "git_status_clean": not dirty.strip(),
        "changed": dirty.splitlines()[:20],
    }
    noops = [timed([str(dvc), "repro"], repo, env, logs / "noop.log")[0] for _ in range(3)]
    experiments = {k: v for k, v in stages.items() if k.split("@")[0].split("-")[0] in EXPERIMENT_STAGES}
    dvc_repro = repro
    result["make_repro"] = {
        "seconds": round(venv_seconds + repro, 1),
        "dvc_repro_seconds": dvc_repro,
        "stages": len(stages),
        "skipped_unchanged": skipped,
        "warm_commands": int(served.group(1)) if served else 0,
        "cold_commands": served.group(2).strip("; ") if served else "all (no `fersynth warm`)",
        "data_stages_seconds": round(dvc_repro - sum(experiments.values()), 1),
        "experiment_stages_seconds": round(sum(experiments.values()), 1),
        "by_kind_seconds": _by_kind(stages),
        "stage_seconds": stages,
    }
    result["noop_repro_seconds"] = round(statistics.median(noops), 2)
    return result


def _measured_at(previous: dict, key: str) -> dict:
    """The commit and date a part kept from the previous file was measured at."""
    return previous.get(key) or {k: previous.get(k) for k in ("commit", "date")}


def _by_kind(stages: dict[str, float]) -> dict[str, float]:
    kinds: dict[str, float] = {}
    for name, seconds in stages.items():
        kind = name.split("@")[0]
        kind = "train" if kind.startswith("train-") else kind
        kinds[kind] = round(kinds.get(kind, 0.0) + seconds, 1)
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


def _size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


if __name__ == "__main__":
    sys.exit(main())
