"""The same bytes on every machine: what each fersynth process pins before PyTorch, NumPy or scikit-learn
load their CPU kernels (``params.yaml: runtime``).

Float sums are not associative, so a result depends on the order in which a kernel adds, and that order
depends on the instruction set the kernel was picked for and on how many threads share the work. Measured
on torch 2.14.1 (10 Adam steps of the demo CNN): oneDNN capped at SSE4.1 vs AVX2, ATen's ``default`` vs
``avx2`` vectorisation and 1 vs 2 threads each give other weights; MKL's ``COMPATIBLE`` path gives another
``linear`` than its AVX2 one. An AVX-512 or AMX machine picks other kernels than an AVX2 one unless told
not to. So every process caps each library at the same instruction set and the same thread count:

- oneDNN (convolutions): ``ONEDNN_MAX_CPU_ISA`` (read at first use);
- ATen's vectorised kernels (reductions, elementwise): ``ATEN_CPU_CAPABILITY`` (read at import);
- MKL (PyTorch's BLAS: ``linear``): ``MKL_CBWR`` (conditional numerical reproducibility);
- OpenBLAS (NumPy and SciPy: scikit-learn's solvers): ``OPENBLAS_CORETYPE``;
- threads: ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` (PyTorch's intra-op pool
  takes its size from ``OMP_NUM_THREADS`` at import).

The CLI pins at start, before anything imports PyTorch (``fersynth.cli.run``), and ``fersynth warm``'s server
does the same before its imports, so forked workers and cold processes see the same settings. Values set in
the environment beforehand are overridden: an exported ``OMP_NUM_THREADS=1`` or ``ONEDNN_MAX_CPU_ISA=SSE41``
(another machine's best) would otherwise change the outputs. ``cpu_isa: native`` and ``threads: 0`` leave
the libraries alone: faster on a big machine, other bytes than the committed ``dvc.lock``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# runtime.cpu_isa -> the setting of each library (oneDNN, ATen, MKL, OpenBLAS)
ISA_SETTINGS = {
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
    },
}
THREAD_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class RuntimeConfig:
    """``params.yaml: runtime``."""

    threads: int = 2  # every library's intra-op threads; 0: the libraries' own choice (not reproducible)
    cpu_isa: str = "avx2"  # avx2 | native (each library's best for this CPU: not reproducible across CPUs)
    trial_threads: int = 1  # threads of each training trial; `train` runs cores // trial_threads trials at once

    def __post_init__(self) -> None:
        if self.cpu_isa not in (*ISA_SETTINGS, "native"):
            raise ValueError(f"runtime.cpu_isa must be one of {[*ISA_SETTINGS, 'native']}, not {self.cpu_isa!r}")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"runtime.threads must be a whole number >= 0, not {self.threads!r}")
        if not isinstance(self.trial_threads, int) or self.trial_threads < 1:
            raise ValueError(f"runtime.trial_threads must be a whole number >= 1, not {self.trial_threads!r}")


def pinned_environment(config: RuntimeConfig) -> dict[str, str]:
    """The environment variables ``config`` pins (none for ``native`` / ``0``)."""
    env = dict(ISA_SETTINGS.get(config.cpu_isa, {}))
    if config.threads:
        env |= dict.fromkeys(THREAD_SETTINGS, str(config.threads))
    return env


def runtime_config(params_file: Path | None = None) -> RuntimeConfig:
    """``runtime`` of the project's params (or ``params_file``); the defaults where there is no params file
    or no such section (e.g. ``fersynth predict`` outside a project): they are the reproducible settings."""
    from fersynth.config import build, load_params, section
    from fersynth.paths import params_path

    path = Path(params_file) if params_file is not None else params_path()
    if not path.is_file():
        return RuntimeConfig()
    return build(RuntimeConfig, section(load_params(path), "runtime", required=False))


def pin(config: RuntimeConfig | None = None) -> RuntimeConfig:
    """Pin this process (and the processes it starts) to ``config``. Call before PyTorch is imported: ATen
    and the thread pool read their settings at import. When it already is (a test session), the thread
    count is still set and oneDNN, which reads its cap at first use, still follows."""
    global _PINNED
    config = config if config is not None else runtime_config()
    os.environ.update(pinned_environment(config))
    torch = sys.modules.get("torch")
    if torch is not None and config.threads:
        torch.set_num_threads(config.threads)
    _PINNED = config
    return config


_PINNED: RuntimeConfig | None = None


def pinned() -> RuntimeConfig:
    """What :func:`pin` applied in this process (the defaults when nothing was pinned)."""
    return _PINNED or RuntimeConfig()


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``threads`` inside the block (``0``: left alone)."""
    import torch

    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, e.g. a container's share), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
