"""AffectNet: the official lists (``Manually_Annotated_file_lists/*.csv``, face box cropped) or the
common folder-per-class release. Codes 7-10 (contempt, none, uncertain, no-face) are dropped by rule."""

from __future__ import annotations

import csv
import os
from pathlib import Path, PurePosixPath

from fersynth.errors import InputError
from fersynth.ingest.common import (
    BadInput,
    DroppedByRule,
    DuplicateInput,
    IngestConfig,
    basic7_record,
    ingest_class_folders,
    inside_root,
    is_utf8,
    parse_int,
    read_image_file,
    scan_files,
    worker_count,
)
from fersynth.ingest.tables import TOO_LONG, open_table, text_lines
from fersynth.log import progress
from fersynth.variants.labels import AFFECTNET_CODES, AFFECTNET_DROPPED
from fersynth.variants.variant import VariantWriter

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
LISTED = ("expression", "face_x", "face_y", "face_width", "face_height")  # what two listings must agree on


def ingest_affectnet(writer: VariantWriter, src: Path, config: IngestConfig) -> str:
    if (src / LISTS_DIR).is_dir():
        rows = []
        for list_name in LIST_FILES:
            list_path = src / LISTS_DIR / list_name
            if os.path.lexists(list_path):  # a FIFO or a dangling link is an error, not an absent list
                rows += read_list(writer, list_path)
        for source, row in progress(unique_listings(writer, rows), desc="ingest affectnet (lists)", unit="row"):
            try:
                _ingest_row(writer, src, row, config)
            except BadInput as error:
                writer.reject(source, str(error), error.category)
        return "lists"
    ingest_class_folders(writer, src, "affectnet", scan_files(writer, src), config.limits, workers=worker_count(config))
    return "folders"


def read_list(writer: VariantWriter, list_path: Path) -> list[tuple[str, dict[str, str]]]:
    """(``<list>:<line>``, row) for every row with the right field count; other rows, and lines over
    :data:`MAX_LINE_BYTES`, go to quarantine. The list must be a regular file (:func:`open_table`). The
    official validation.csv ships without a header: a 9-field first row that is not it is data."""
    rows: list[tuple[str, dict[str, str]]] = []
    too_long: set[int] = set()
    with open_table(list_path) as handle:
        reader = csv.reader(text_lines(handle, too_long))
        fields = _next_row(writer, reader, list_path.name)
        if fields is not None and [h.strip() for h in fields] == COLUMNS:
            fields = _next_row(writer, reader, list_path.name)
        elif fields is not None and (len(fields) != len(COLUMNS) or fields[0].strip() == COLUMNS[0]):
            raise InputError(f"{list_path}: header must be {','.join(COLUMNS)}, got {','.join(fields)[:200]!r}")
        while fields is not None:
            line_source = f"{list_path.name}:{reader.line_num}"
            if reader.line_num in too_long:
                writer.reject(line_source, TOO_LONG)
            elif len(fields) != len(COLUMNS):
                writer.reject(line_source, f"malformed row: expected {len(COLUMNS)} fields, got {len(fields)}")
            elif not all(is_utf8(field) for field in fields):
                writer.reject(line_source, "malformed row: not valid UTF-8")
            else:  # only what ingest uses: the landmarks would make 400k rows cost ~0.5 GB
                row = dict(zip(COLUMNS, fields, strict=True))
                rows.append((line_source, {c: row[c] for c in ("subDirectory_filePath", *LISTED)}))
            fields = _next_row(writer, reader, list_path.name)
    return rows


def _next_row(writer: VariantWriter, reader, list_name: str) -> list[str] | None:
    """The next parsed row, quarantining the lines the csv module cannot parse (an unterminated quote,
    a field over its size limit); None at the end."""
    while True:
        try:
            return next(reader)
        except StopIteration:
            return None
        except csv.Error as error:
            writer.reject(f"{list_name}:{reader.line_num}", f"malformed row: {error}")


def unique_listings(writer: VariantWriter, rows: list[tuple[str, dict[str, str]]]) -> list[tuple[str, dict[str, str]]]:
    """One row per image path. Repeats that agree with the first listing are quarantined as duplicates;
    listings of one image that disagree (label or face box) are all quarantined: neither can be trusted."""
    by_path: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for line_source, row in rows:
        by_path.setdefault(str(PurePosixPath(row["subDirectory_filePath"].strip())), []).append((line_source, row))
    kept = []
    for line_source, row in rows:
        listings = by_path[str(PurePosixPath(row["subDirectory_filePath"].strip()))]
        first_source, first = listings[0]
        source = row["subDirectory_filePath"].strip() or line_source
        if len(listings) == 1:
            kept.append((source, row))
        elif any(_listed(other) != _listed(first) for _, other in listings):
            where = ", ".join(s for s, _ in listings)
            writer.reject(line_source, f"conflicting rows: the image is listed {len(listings)} times ({where})")
        elif line_source == first_source:
            kept.append((source, row))
        else:
            writer.reject(line_source, f"duplicate row: same as {first_source}", DuplicateInput.category)
    return kept


def _listed(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row[column].strip() for column in LISTED)


def _ingest_row(writer: VariantWriter, src: Path, row: dict[str, str], config: IngestConfig) -> None:
    rel = row["subDirectory_filePath"].strip()
    code = parse_int(row["expression"], "expression")
    if code in AFFECTNET_DROPPED:
        raise DroppedByRule(f"rule: expression {code} ({AFFECTNET_DROPPED[code]}) is not a basic emotion")
    if code not in AFFECTNET_CODES:
        raise BadInput(f"unknown label: expression code {code}")
    x, y, w, h = (parse_int(row[k], k) for k in ("face_x", "face_y", "face_width", "face_height"))
    path = inside_root(src / IMAGES_DIR, rel, "subDirectory_filePath")
    key = PurePosixPath(rel).as_posix()
    if not path.is_file():
        raise BadInput("missing file: image not found")
    _, image = read_image_file(path, config.limits)
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > image.width or y + h > image.height:
        raise BadInput(f"bad face box: ({x},{y},{w},{h}) outside a {image.width}x{image.height} image")
    if min(w, h) < config.min_side:
        raise BadInput(f"too small: face box {w}x{h} < min_side {config.min_side}")
    face = image.crop((x, y, x + w, y + h))
    writer.add(basic7_record("affectnet", key, key, AFFECTNET_CODES[code]), face)
