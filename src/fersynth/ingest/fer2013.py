"""FER2013: the Kaggle CSV (``emotion,pixels,Usage``) or the folder release (``train|test/<emotion>/``).

The CSV path parses pixels in vectorised chunks with pyarrow (a per-row ``str.split`` loop is the
slow part of the usual loaders) and streams, so memory does not grow with the file.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from fersynth.ingest.common import basic7_record, ingest_class_folders, list_files
from fersynth.labels import FER2013_CODES, FER2013_USAGE_SPLIT
from fersynth.log import progress
from fersynth.variant import VariantWriter

SIDE = 48
N_PIXELS = SIDE * SIDE
HEADER = ["emotion", "pixels", "Usage"]
CHUNK_ROWS = 4096


def detect(src: Path) -> str:
    if src.is_file() and src.suffix == ".csv" or (src / "fer2013.csv").exists():
        return "csv"
    if (src / "train").is_dir() or (src / "test").is_dir():
        return "folders"
    raise FileNotFoundError(f"{src}: neither fer2013.csv nor train/ test/ folders found")


def ingest_fer2013(writer: VariantWriter, src: Path) -> str:
    fmt = detect(src)
    if fmt == "csv":
        ingest_csv(writer, src if src.is_file() else src / "fer2013.csv")
    else:
        ingest_folders(writer, src)
    return fmt


# CSV ------------------------------------------------------------------------------------------
def ingest_csv(writer: VariantWriter, csv_path: Path) -> None:
    with csv_path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != HEADER:
            raise ValueError(f"{csv_path}: header must start with {','.join(HEADER)}, got {header}")
        usage_col = 2
        chunk: list[tuple[int, str, str, str]] = []
        bar = progress(None, desc="ingest fer2013 (csv)", unit="row")
        for fields in reader:
            line = reader.line_num
            source = f"{csv_path.name}:{line}"
            if len(fields) != 3:
                writer.reject(source, f"malformed row: expected 3 fields, got {len(fields)}")
                continue
            chunk.append((line, fields[0].strip(), fields[1], fields[usage_col].strip()))
            if len(chunk) >= CHUNK_ROWS:
                _ingest_chunk(writer, csv_path.name, chunk)
                bar.update(len(chunk))
                chunk = []
        _ingest_chunk(writer, csv_path.name, chunk)
        bar.update(len(chunk))
        bar.close()


def _parse_pixels(pixel_strings: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised parse of space-separated pixel strings.

    Returns (images uint8 [n, 48, 48] for the valid rows, valid mask, reason code per row:
    0 ok, 1 wrong count, 2 not an integer, 3 out of range)."""
    strings = pc.utf8_trim_whitespace(pa.array(pixel_strings, type=pa.string()))
    lists = pc.split_pattern_regex(strings, r"\s+")
    counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(lists)
    parent = pc.list_parent_indices(lists).to_numpy()
    digits = pc.utf8_is_digit(flat).to_numpy(zero_copy_only=False)
    short = pc.less_equal(pc.utf8_length(flat), 3).to_numpy(zero_copy_only=False)
    numeric = digits & short
    values = pc.cast(pc.if_else(pa.array(numeric), flat, "0"), pa.int32()).to_numpy()
    n = len(pixel_strings)
    reason = np.zeros(n, dtype=np.int8)
    reason[np.bincount(parent[values > 255], minlength=n) > 0] = 3
    reason[np.bincount(parent[~numeric], minlength=n) > 0] = 2
    reason[counts != N_PIXELS] = 1
    valid = reason == 0
    offsets = np.concatenate([[0], np.cumsum(counts)])
    starts = offsets[:-1][valid]
    index = starts[:, None] + np.arange(N_PIXELS)[None, :]
    images = (
        values[index].astype(np.uint8).reshape(-1, SIDE, SIDE) if len(starts) else np.zeros((0, SIDE, SIDE), np.uint8)
    )
    return images, valid, reason


PIXEL_REASONS = {
    1: f"malformed pixels: expected {N_PIXELS} values",
    2: "malformed pixels: a value is not an integer",
    3: "malformed pixels: a value is outside 0-255",
}


def _ingest_chunk(writer: VariantWriter, file_name: str, chunk: list[tuple[int, str, str, str]]) -> None:
    if not chunk:
        return
    images, valid, reasons = _parse_pixels([pixels for _, _, pixels, _ in chunk])
    image_iter = iter(images)
    for (line, emotion_code, _, usage), ok, reason in zip(chunk, valid, reasons, strict=True):
        source = f"{file_name}:{line}"
        pixels = next(image_iter) if ok else None
        if not ok:
            writer.reject(source, PIXEL_REASONS[int(reason)])
        elif not emotion_code.isdigit() or int(emotion_code) not in FER2013_CODES:
            writer.reject(source, f"unknown label: emotion code {emotion_code!r}")
        elif usage not in FER2013_USAGE_SPLIT:
            writer.reject(source, f"unknown split: Usage {usage!r}")
        else:
            emotion = FER2013_CODES[int(emotion_code)]
            record = basic7_record("fer2013", f"row{line:06d}", source, emotion, FER2013_USAGE_SPLIT[usage])
            writer.add(record, Image.fromarray(pixels, mode="L"))


# Folders --------------------------------------------------------------------------------------
FOLDER_SPLITS = {"train": {"Training"}, "test": {"PublicTest", "PrivateTest"}}


def ingest_folders(writer: VariantWriter, src: Path) -> None:
    """``train|test/<emotion>/<Usage>_<n>.jpg``: the file name's Usage gives val vs test."""
    files, split_of = [], {}
    for path in list_files(src):
        top = path.relative_to(src).parts[0]
        usage = path.stem.split("_")[0]
        stem_ok = len(path.stem.split("_")) == 2 and path.stem.split("_")[1].isdigit()
        if top not in FOLDER_SPLITS or not stem_ok or usage not in FOLDER_SPLITS[top]:
            writer.reject(
                path.relative_to(src).as_posix(),
                f"malformed file name: expected {'|'.join(FOLDER_SPLITS)}/<emotion>/<Usage>_<n>.jpg",
            )
            continue
        files.append(path)
        split_of[path] = FER2013_USAGE_SPLIT[usage]
    ingest_class_folders(writer, src, "fer2013", files, split_of)
