"""What a ``fersynth`` caller and the warm server (:mod:`fersynth.ops.warm`) must share for a forked worker to
behave like the new process the caller would have started: settings read once, at start-up or at import, and the
sandbox a process runs in. A caller that differs in any is told to start cold, with one line saying why. Standard
library only: every ``fersynth`` process imports it."""

from __future__ import annotations

import contextlib
import os
import sys

IMPORT_TIME_ENV_PREFIXES = (
    "PYTHON",
    "OMP_",
    "GOMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "ATEN_",  # ATen's vectorisation (fersynth.runtime pins it): read at import
    "ONEDNN_",
    "DNNL_",
    "TORCH",
    "PYTORCH_",
    "INDUCTOR_",  # torch._dynamo's and its compilers' configs, read as the optimizers import them
    "AOTINDUCTOR_",
    "AOT_INDUCTOR_",
    "FX_",
    "PT2_",
    "KINETO_",
    "TRITON_",
    "CUDA_",
    "TQDM_",
    "MPL",
    "NPY_",
    "NUMPY_",
    "SCIPY_",
    "SKLEARN_",  # scikit-learn's global config (assume_finite, working_memory) is read at import
    "JOBLIB_",
    "LOKY_",
    "PANDAS_",
    "ARROW_",
    "PILLOW_",
    "SYMPY_",  # SymPy and mpmath (PyTorch's shape reasoning) pick their number backend at import
    "MPMATH_",
    "PYDANTIC_",
    "OTEL_",  # OpenTelemetry (MLflow's tracing) picks its context implementation at import
    "XDG_",
    "LC_",
    "GX_",
    "GIT_PYTHON_",  # GitPython (preloaded for MLflow) reads its git executable at import
)
IMPORT_TIME_ENV = (
    "HOME",
    "LANG",
    "LANGUAGE",
    "MATPLOTLIBRC",
    "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION",
    "MLFLOW_CONFIGURE_LOGGING",
    "MLFLOW_LOGGING_CONFIGURE_LOGGING",
    "MLFLOW_LOGGING_LEVEL",
    "MLFLOW_DISABLE_TELEMETRY",
)
"""Environment read by the interpreter or a preloaded library at start-up (found by recording what the preloaded
imports read): callers must match the server."""

CREDENTIALS = (
    "Uid",
    "Gid",
    "Groups",
    "NoNewPrivs",
    "Seccomp",
    "Seccomp_filters",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
)
"""Lines of ``/proc/self/status`` a sandbox sets (``setpriv``, ``capsh``, a seccomp filter) that a forked worker
would not share with its caller."""

EQUAL = ("executable", "flags", "warnoptions", "xoptions", "affinity", "scheduling", "cgroup")
"""Settings compared whole; namespaces, credentials and the environment are compared name by name."""


def compatibility() -> dict:
    """What a caller and the server must share for a forked worker to behave like a new process."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.startswith(IMPORT_TIME_ENV_PREFIXES) or name in IMPORT_TIME_ENV
    }
    return {
        "executable": sys.executable,
        "flags": list(sys.flags),
        "warnoptions": list(sys.warnoptions),
        "xoptions": {str(k): str(v) for k, v in sys._xoptions.items()},
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "scheduling": scheduling(),
        "cgroup": _read("/proc/self/cgroup"),
        "namespaces": namespaces(),
        "credentials": credentials(),
        "env": env,
    }


def incompatible(theirs: dict, ours: dict) -> str | None:
    """Why a caller with compatibility ``theirs`` cannot be served by a server with ``ours``; ``None`` if it can."""
    for key in EQUAL:
        if theirs.get(key) != ours[key]:
            return f"{key} differ"
    for key, kind in (("namespaces", " namespaces"), ("credentials", ""), ("env", "")):
        differing = _differing(theirs.get(key, {}), ours[key])
        if differing:
            return f"{', '.join(differing)}{kind} differ"
    return None


def namespaces() -> dict[str, str]:
    """The namespaces this process runs in, by name (``net``, ``mnt``, ``pid``, ``user``, ...): a caller under
    ``unshare -n`` has another network, which a worker forked by the server would not see."""
    with contextlib.suppress(OSError):
        names = os.listdir("/proc/self/ns")
        return {name: link for name in names if (link := _readlink(f"/proc/self/ns/{name}")) is not None}
    return {}


def credentials() -> dict[str, str]:
    """This process's :data:`CREDENTIALS`, as ``/proc/self/status`` shows them."""
    status = _read("/proc/self/status") or ""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {name: " ".join(fields[name].split()) for name in CREDENTIALS if name in fields}


def scheduling() -> list[int] | None:
    """The scheduling policy and its priority (``chrt -b`` / ``-i`` change them); ``None`` where unknown."""
    with contextlib.suppress(AttributeError, OSError):
        return [os.sched_getscheduler(0), os.sched_getparam(0).sched_priority]
    return None


def _differing(theirs: dict, ours: dict) -> list[str]:
    return sorted(name for name in set(theirs) | set(ours) if theirs.get(name) != ours.get(name))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None
