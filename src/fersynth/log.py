"""Logging that goes through ``tqdm.write`` so log lines do not break progress bars."""

from __future__ import annotations

import logging
import os

from tqdm import tqdm


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    root = logging.getLogger("fersynth")
    if not root.handlers:
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    return logger


def progress(iterable, desc: str, total: int | None = None, unit: str = "img"):
    """A progress bar that stays quiet in non-interactive logs except for its final line; under ``torchrun``
    only rank 0 shows one."""
    quiet = os.environ.get("RANK", "0") != "0"
    return tqdm(iterable, desc=desc, total=total, unit=unit, mininterval=1.0, leave=True, disable=quiet)


def summarize(logger: logging.Logger, stage: str, report: dict) -> None:
    logger.info(
        "%s: read %d, kept %d, quarantined %d (bad input %d, dropped by rule %d, duplicates %d)",
        stage,
        report["read"],
        report["kept"],
        report["quarantined"],
        report.get("bad_input", 0),
        report.get("dropped_by_rule", 0),
        report.get("duplicates", 0),
    )
    for reason, count in sorted(report.get("quarantine_reasons", {}).items()):
        logger.info("%s:   %5d x %s", stage, count, reason)
