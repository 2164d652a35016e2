"""FER2013: the Kaggle CSV (``emotion,pixels,Usage``) or the folder release (``train|test/<emotion>/``).

The CSV path streams (memory does not grow with the file), parses pixels in C (``np.fromstring``)
rather than through a Python ``str.split`` loop, and spreads parsing and PNG encoding over processes.
"""

from __future__ import annotations

import csv
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from fersynth.errors import InputError
from fersynth.ingest.common import (
    IngestConfig,
    basic7_record,
    die_with_parent,
    ingest_class_folders,
    scan_files,
    worker_count,
)
from fersynth.ingest.tables import TOO_LONG, bounded_lines, open_table
from fersynth.log import progress
from fersynth.variants.labels import FER2013_CODES, FER2013_USAGE_SPLIT
from fersynth.variants.png import encode_gray8
from fersynth.variants.variant import VariantWriter, raw_sha256

SIDE = 48
N_PIXELS = SIDE * SIDE
HEADER = ["emotion", "pixels", "Usage"]
BATCH_ROWS = 512


def detect(src: Path) -> str:
    """``csv`` or ``folders``. A CSV that is not a regular file (a FIFO, a link to a device) is still the
    CSV: opening it then says what it is, instead of "not found"."""
    if (src.suffix == ".csv" and not src.is_dir()) or os.path.lexists(src / "fer2013.csv"):
        return "csv"
    if (src / "train").is_dir() or (src / "test").is_dir():
        return "folders"
    raise InputError(f"{src}: neither fer2013.csv nor train/ test/ folders found")


def ingest_fer2013(writer: VariantWriter, src: Path, config: IngestConfig) -> str:
    fmt = detect(src)
    if fmt == "csv":
        ingest_csv(writer, src / "fer2013.csv" if src.is_dir() else src, worker_count(config))
    else:
        ingest_folders(writer, src, config)
    return fmt


# CSV ------------------------------------------------------------------------------------------
def ingest_csv(writer: VariantWriter, csv_path: Path, workers: int = 1) -> None:
    """Stream ``fer2013.csv``: the main process splits lines and keeps the books; ``workers``
    processes parse pixels, encode PNG and hash, a bounded number of batches in flight (memory stays
    flat, order is kept, so the output does not depend on ``workers``). The file must be a regular file
    (:func:`open_table`) and a line longer than :data:`MAX_LINE_BYTES` is one quarantined row."""
    with open_table(csv_path) as handle:
        lines = bounded_lines(handle)
        header = next(lines, b"")
        header = header if header is not None else TOO_LONG.encode()
        order = column_order(header.decode("utf-8-sig", "replace"), csv_path)
        batches = _batches(writer, csv_path.name, lines, order)
        with ExitStack() as stack:
            pool = (
                stack.enter_context(ProcessPoolExecutor(workers, initializer=die_with_parent)) if workers > 1 else None
            )
            bar = stack.enter_context(progress(None, desc="ingest fer2013 (csv)", unit="row"))
            in_flight: deque = deque()
            for batch in batches:
                pixels = [fields[1] for _, fields in batch]
                in_flight.append((batch, pool.submit(encode_batch, pixels) if pool else encode_batch(pixels)))
                while len(in_flight) > 2 * workers:
                    _keep(writer, csv_path.name, *in_flight.popleft(), bar)
            while in_flight:
                _keep(writer, csv_path.name, *in_flight.popleft(), bar)


def column_order(header: str, csv_path: Path) -> tuple[int, int, int]:
    """Positions of emotion, pixels and Usage. Kaggle's file has ``emotion,pixels,Usage``; the ICML
    release has ``emotion, Usage, pixels``: columns are found by name."""
    names = [name.strip() for name in header.strip().split(",")]
    if sorted(names) != sorted(HEADER):
        raise InputError(f"{csv_path}: header must have the columns {','.join(HEADER)}, got {header.strip()[:200]!r}")
    return tuple(names.index(column) for column in HEADER)


def _batches(
    writer: VariantWriter, file_name: str, lines: Iterator[bytes | None], order: tuple[int, int, int]
) -> Iterator[list]:
    """Lines as (line number, [emotion, pixels, Usage]); over-long lines and rows with another field
    count go to quarantine here."""
    batch = []
    for line_number, line in enumerate(lines, start=2):
        if line is None:
            writer.reject(f"{file_name}:{line_number}", TOO_LONG)
            continue
        line = line.rstrip(b"\r\n")
        if line.count(b",") == 2 and b'"' not in line:
            fields = line.split(b",")
        else:  # quoted fields or a wrong field count: let the csv module decide
            try:
                fields = [f.encode() for f in next(csv.reader([line.decode("utf-8", "replace")]), [])]
            except csv.Error as error:
                writer.reject(f"{file_name}:{line_number}", f"malformed row: {error}")
                continue
        if len(fields) != 3:
            writer.reject(f"{file_name}:{line_number}", f"malformed row: expected 3 fields, got {len(fields)}")
            continue
        batch.append((line_number, [fields[i] for i in order]))
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def parse_pixels(text: bytes) -> np.ndarray:
    """``b"70 80 82 ..."`` -> uint8 [48, 48]; raises ``ValueError`` with the quarantine reason.
    Parsed as int64 (huge values saturate), so 65536 is out of range rather than wrapping to 0."""
    if text.translate(None, b"0123456789 "):  # fromstring reads a bare "+" as 0 and "+ 9" as one value
        raise ValueError("malformed pixels: a value is not an integer")
    try:
        values = np.fromstring(text, dtype=np.int64, sep=" ")
    except ValueError:
        raise ValueError("malformed pixels: a value is not an integer") from None
    if values.size != N_PIXELS:
        raise ValueError(f"malformed pixels: expected {N_PIXELS} values")
    if values.min() < 0 or values.max() > 255:
        raise ValueError("malformed pixels: a value is outside 0-255")
    return values.astype(np.uint8).reshape(SIDE, SIDE)


def encode_batch(pixel_texts: list[bytes]) -> list[tuple[bytes, str] | str]:
    """Per row: (PNG bytes, pixel sha256) or the reason it is malformed. Runs in worker processes."""
    out: list[tuple[bytes, str] | str] = []
    for text in pixel_texts:
        try:
            pixels = parse_pixels(text)
        except ValueError as error:
            out.append(str(error))
            continue
        # Stored (uncompressed): at 48x48 zlib saves a third of 2.3 KB and costs more than all the rest.
        out.append((encode_gray8(pixels), raw_sha256("L", (SIDE, SIDE), pixels.tobytes())))
    return out


def _keep(writer: VariantWriter, file_name: str, batch, encoded, bar) -> None:
    results = encoded.result() if hasattr(encoded, "result") else encoded
    for (line_number, (emotion_code, _, usage)), result in zip(batch, results, strict=True):
        source = f"{file_name}:{line_number}"
        emotion_code, usage = emotion_code.strip().decode("utf-8", "replace"), usage.strip().decode("utf-8", "replace")
        if isinstance(result, str):
            writer.reject(source, result)
        elif not (emotion_code.isascii() and emotion_code.isdigit()) or int(emotion_code) not in FER2013_CODES:
            writer.reject(source, f"unknown label: emotion code {emotion_code!r}")
        elif usage not in FER2013_USAGE_SPLIT:
            writer.reject(source, f"unknown split: Usage {usage!r}")
        else:
            emotion = FER2013_CODES[int(emotion_code)]
            record = basic7_record("fer2013", f"row{line_number:06d}", source, emotion, FER2013_USAGE_SPLIT[usage])
            writer.add_encoded(record, result[0], result[1], (SIDE, SIDE), "L", "PNG")
    bar.update(len(batch))


# Folders --------------------------------------------------------------------------------------
FOLDER_SPLITS = {"train": {"Training"}, "test": {"PublicTest", "PrivateTest"}}


def ingest_folders(writer: VariantWriter, src: Path, config: IngestConfig) -> None:
    """``train|test/<emotion>/<Usage>_<n>.jpg``: the file name's Usage gives val vs test."""
    files, split_of = [], {}
    for path in scan_files(writer, src):
        top = path.relative_to(src).parts[0]
        usage = path.stem.split("_")[0]
        number = path.stem.split("_")[-1]
        stem_ok = len(path.stem.split("_")) == 2 and number.isascii() and number.isdigit()
        if top not in FOLDER_SPLITS or not stem_ok or usage not in FOLDER_SPLITS[top]:
            writer.reject(
                path.relative_to(src).as_posix(),
                f"malformed file name: expected {'|'.join(FOLDER_SPLITS)}/<emotion>/<Usage>_<n>.jpg",
            )
            continue
        files.append(path)
        split_of[path] = FER2013_USAGE_SPLIT[usage]
    ingest_class_folders(writer, src, "fer2013", files, config.limits, split_of, worker_count(config))
