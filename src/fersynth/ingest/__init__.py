"""``fersynth ingest DATASET``: native source files -> a variant (manifest, packed images, quarantine).

Each source has its own reader module; this one detects nothing itself, it runs the reader, removes
exact duplicates, draws the splits the source does not fix, and writes the report.
"""

from __future__ import annotations

from pathlib import Path

from fersynth.errors import InputError, UsageError
from fersynth.ingest.affectnet import ingest_affectnet
from fersynth.ingest.casme2 import ingest_casme2
from fersynth.ingest.common import IngestConfig
from fersynth.ingest.fer2013 import ingest_fer2013
from fersynth.ingest.folder import ingest_unlabeled_folder
from fersynth.ingest.nhfi import ingest_nhfi
from fersynth.ingest.splits import drop_duplicates, stratified_split, subject_split
from fersynth.ingest.utkface import ingest_utkface
from fersynth.log import get_logger, summarize
from fersynth.variants.variant import VariantWriter

DATASETS = ("fer2013", "nhfi", "affectnet", "casme2", "utkface", "sfhq", "folder")
log = get_logger(__name__)


class NothingKept(InputError):
    """A source in which no input survived: an error, not an empty variant (nothing is written)."""

    def __init__(self, dataset: str, src: Path, writer: VariantWriter):
        reasons = sorted(writer.quarantine.reasons().items(), key=lambda item: (-item[1], item[0]))
        shown = ", ".join(f"{count} x {reason}" for count, reason in ((c, r) for r, c in reasons[:4]))
        super().__init__(
            f"ingest {dataset}: no image kept from {src} ({writer.read} read"
            + (f"; quarantined: {shown}" if shown else "; nothing found there")
            + "); nothing written"
        )


def ingest(dataset: str, src: Path, out: Path, config: IngestConfig | None = None) -> dict:
    """Ingest ``src`` (native layout of ``dataset``) into the variant directory ``out``.

    >>> ingest("fer2013", Path("data/demo/fer2013"), Path("data/original/fer2013"))  # doctest: +SKIP
    {'read': 35887, 'kept': ..., 'quarantined': ..., ...}
    """
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    src, out, config = Path(src), Path(out), config or IngestConfig()
    if not src.exists():
        raise InputError(f"source {src} does not exist")
    with VariantWriter(out, shard_max_bytes=config.shard_max_mb * 2**20, inputs=(src,)) as writer:
        # 1. read the native files; bad inputs go to quarantine as they are met
        if dataset == "fer2013":
            fmt = ingest_fer2013(writer, src, config)
        elif dataset == "nhfi":
            fmt = ingest_nhfi(writer, src, config)
        elif dataset == "affectnet":
            fmt = ingest_affectnet(writer, src, config)
        elif dataset == "casme2":
            fmt = ingest_casme2(writer, src, config)
        elif dataset == "utkface":
            fmt = ingest_utkface(writer, src, config)
        else:  # sfhq, or any plain folder of unlabeled faces
            fmt = ingest_unlabeled_folder(writer, src, dataset, config)
        # 2. exact duplicates, before any split is drawn (FER2013 keeps its test copies)
        drop_duplicates(writer)
        if not writer.rows:
            raise NothingKept(dataset, src, writer)
        # 3. splits the source does not fix
        subjects = None
        if dataset == "casme2":
            subjects = subject_split(writer.rows, config.seed, config.fractions)
        elif dataset == "utkface":
            stratified_split(writer.rows, config.seed, config.fractions, lambda r: (r["gender"], r["ethnicity"]))
        elif dataset != "fer2013":
            stratified_split(writer.rows, config.seed, config.fractions)
        report = writer.commit(
            {"dataset": dataset, "format": fmt, "source_dir": str(src), "seed": config.seed, "subject_splits": subjects}
        )
    summarize(log, f"ingest {dataset}", report)
    return report
