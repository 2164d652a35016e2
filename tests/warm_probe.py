"""A stand-in for ``fersynth.cli:main`` that tests/test_warm.py gives a warm server as its workers' entry point: it
reports what the process it runs in looks like, or holds an MLflow run open, so a test can compare a warm worker
with a cold process and stop it midway. Run cold as ``python -m tests.warm_probe COMMAND OUT``.

Commands (``OUT`` is written atomically, so a test polling for it never reads half a file):

- ``limits OUT``: this process's resource limits (soft, hard) and nice value, as JSON.
- ``mlflow-run OUT``: open a run of stage ``warm-probe`` with :func:`fersynth.tracking.start_run` (the tracking URI
  from the environment), write ``{"pid": ..., "run_id": ...}``, then sleep inside the run for two minutes.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def limits() -> dict:
    """Every ``RLIMIT_*`` this platform has, and the nice value: what a sandbox sets on a process."""
    rlimits = {
        name: list(resource.getrlimit(getattr(resource, name))) for name in dir(resource) if name.startswith("RLIMIT_")
    }
    return {"rlimits": rlimits, "nice": os.getpriority(os.PRIO_PROCESS, 0)}


def write_atomically(path: Path, data: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data), encoding="utf-8")
    partial.replace(path)


def hold_a_run(out: Path) -> None:
    from fersynth.tracking import start_run

    with start_run("warm-probe") as run:
        write_atomically(out, {"pid": os.getpid(), "run_id": run.info.run_id})
        time.sleep(120)


def main(args: list[str], prog_name: str | None = None) -> None:
    """The entry point, called as a worker calls the click group: ``main(args=..., prog_name=...)``."""
    command, out = args[0], Path(args[1])
    if command == "limits":
        write_atomically(out, limits())
    elif command == "mlflow-run":
        hold_a_run(out)
    else:
        raise SystemExit(f"warm_probe: unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
