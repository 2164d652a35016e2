"""NHFI (natural human face images): one folder per class, 224x224 grayscale PNG."""

from __future__ import annotations

from pathlib import Path

from fersynth.ingest.common import IngestConfig, ingest_class_folders, scan_files, worker_count
from fersynth.variants.variant import VariantWriter


def ingest_nhfi(writer: VariantWriter, src: Path, config: IngestConfig) -> str:
    ingest_class_folders(writer, src, "nhfi", scan_files(writer, src), config.limits, workers=worker_count(config))
    return "folders"
