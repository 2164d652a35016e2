"""`make repro` cost on the demo data: a fresh copy of the repository, a full `dvc repro` with the time
of each stage, then a no-op `dvc repro`. Results: metrics/bench/pipeline.json.

    python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT_STAGES = {"train", "evaluate", "compare", "report"}  # the rest builds data


def copy_repository(target: Path, env: dict) -> None:
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


def timed_repro(repo: Path, env: dict) -> tuple[float, dict[str, float]]:
    """Run `dvc repro`, timing each stage from its 'Running stage' line to the next."""
    stages: dict[str, float] = {}
    start = time.perf_counter()
    current, since = None, start
    process = subprocess.Popen(
        ["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in process.stdout:
        match = re.match(r"Running stage '([^']+)'", line)
        if match:
            now = time.perf_counter()
            if current:
                stages[current] = round(now - since, 2)
            current, since = match.group(1), now
    if process.wait() != 0:
        raise RuntimeError("dvc repro failed")
    total = time.perf_counter() - start
    if current:
        stages[current] = round(time.perf_counter() - since, 2)
    return round(total, 2), stages


def main() -> None:
    env = dict(os.environ) | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }
    env.pop("DVC_ROOT", None)
    with tempfile.TemporaryDirectory(prefix="fersynth-bench-") as scratch:
        repo = Path(scratch) / "repo"
        repo.mkdir()
        copy_repository(repo, env)
        total, stages = timed_repro(repo, env)
        start = time.perf_counter()
        subprocess.run(["dvc", "repro"], cwd=repo, env=env, check=True, capture_output=True)
        noop = round(time.perf_counter() - start, 2)
    experiments = {name: t for name, t in stages.items() if name.split("@")[0].split("-")[0] in EXPERIMENT_STAGES}
    result = {
        "cpus": len(os.sched_getaffinity(0)),
        "full_repro_seconds": total,
        "data_stages_seconds": round(total - sum(experiments.values()), 2),  # demo, ingest, variants, generation
        "experiment_stages_seconds": round(sum(experiments.values()), 2),  # train-*, evaluate, compare, report
        "stage_seconds": stages,
        "noop_repro_seconds": noop,
        "targets": {"full_repro_seconds_max": 600, "noop_repro_seconds_max": 5},
        "met": {"full_repro": total <= 600, "noop_repro": noop <= 5},
    }
    out = ROOT / "metrics" / "bench" / "pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
