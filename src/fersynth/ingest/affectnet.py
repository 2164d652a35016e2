"""AffectNet: the official lists (``Manually_Annotated_file_lists/*.csv``, face box cropped) or the
common folder-per-class release. Codes 7-10 (contempt, none, uncertain, no-face) are dropped by rule."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

from fersynth.ingest.common import (
    BadInput,
    DroppedByRule,
    basic7_record,
    ingest_class_folders,
    list_files,
    read_image_file,
)
from fersynth.labels import AFFECTNET_CODES, AFFECTNET_DROPPED
from fersynth.log import progress
from fersynth.variant import VariantWriter

LISTS_DIR = "Manually_Annotated_file_lists"
IMAGES_DIR = "Manually_Annotated_Images"
LIST_FILES = ("training.csv", "validation.csv")
COLUMNS = [
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
]


def ingest_affectnet(writer: VariantWriter, src: Path) -> str:
    if (src / LISTS_DIR).is_dir():
        for list_name in LIST_FILES:
            list_path = src / LISTS_DIR / list_name
            if list_path.exists():
                ingest_list(writer, src, list_path)
        return "lists"
    ingest_class_folders(writer, src, "affectnet", list_files(src))
    return "folders"


def _int(value: str, what: str) -> int:
    try:
        return int(float(value))
    except ValueError as error:
        raise BadInput(f"malformed row: {what} {value!r} is not a number") from error


def ingest_list(writer: VariantWriter, src: Path, list_path: Path) -> None:
    with list_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        first = next(reader, None)
        if first is None:
            return
        rows = reader
        if [h.strip() for h in first] != COLUMNS:
            # The official validation.csv ships without a header: a 9-field first row is data.
            if len(first) != len(COLUMNS) or first[0].strip() == COLUMNS[0]:
                raise ValueError(f"{list_path}: header must be {','.join(COLUMNS)}, got {first}")
            rows = itertools.chain([first], reader)
        for fields in progress(rows, desc=f"ingest affectnet ({list_path.name})", unit="row"):
            line_source = f"{list_path.name}:{reader.line_num}"
            if len(fields) != len(COLUMNS):
                writer.reject(line_source, f"malformed row: expected {len(COLUMNS)} fields, got {len(fields)}")
                continue
            row = dict(zip(COLUMNS, fields, strict=True))
            try:
                _ingest_row(writer, src, row)
            except BadInput as error:
                writer.reject(
                    row["subDirectory_filePath"] or line_source,
                    str(error),
                    error.category,
                )


def _ingest_row(writer: VariantWriter, src: Path, row: dict[str, str]) -> None:
    rel = row["subDirectory_filePath"].strip()
    code = _int(row["expression"], "expression")
    if code in AFFECTNET_DROPPED:
        raise DroppedByRule(f"rule: expression {code} ({AFFECTNET_DROPPED[code]}) is not a basic emotion")
    if code not in AFFECTNET_CODES:
        raise BadInput(f"unknown label: expression code {code}")
    x, y, w, h = (_int(row[k], k) for k in ("face_x", "face_y", "face_width", "face_height"))
    path = src / IMAGES_DIR / rel
    if not path.is_file():
        raise BadInput("missing file: image not found")
    _, image = read_image_file(path)
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > image.width or y + h > image.height:
        raise BadInput(f"bad face box: ({x},{y},{w},{h}) outside a {image.width}x{image.height} image")
    face = image.crop((x, y, x + w, y + h))
    writer.add(basic7_record("affectnet", rel, rel, AFFECTNET_CODES[code]), face)
