"""NHFI (natural human face images): one folder per class, 224x224 grayscale PNG."""

from __future__ import annotations

from pathlib import Path

from fersynth.ingest.common import ingest_class_folders, list_files
from fersynth.variant import VariantWriter


def ingest_nhfi(writer: VariantWriter, src: Path) -> str:
    ingest_class_folders(writer, src, "nhfi", list_files(src))
    return "folders"
