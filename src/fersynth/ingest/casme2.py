"""CASME II micro-expressions: the coding sheet (``CASME2-coding-*.xlsx``) and frame folders
(``CASME2_RAW_selected/subNN/<Filename>/img<N>.jpg`` or ``Cropped/subNN/<Filename>/reg_img<N>.jpg``).

Keeps CASME II's own 7-class label space. Frames are all onset..offset frames or the apex only;
splits are by subject (done by the caller), so frames of one clip never straddle a split.
"""

from __future__ import annotations

import io
import os
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fersynth.errors import InputError
from fersynth.ingest.common import (
    BadInput,
    DroppedByRule,
    DuplicateInput,
    IngestConfig,
    check_inside,
    parse_int,
    printable,
    read_image_file,
)
from fersynth.log import progress
from fersynth.variants.files import FileRejected, read_bounded
from fersynth.variants.labels import CASME2, CASME2_NAMES
from fersynth.variants.variant import VariantWriter

RELEASES = {"CASME2_RAW_selected": "img{}.jpg", "Cropped": "reg_img{}.jpg"}
MAX_SHEET_BYTES = 16 * 2**20  # CASME II's sheet is 30 KB
MAX_SHEET_ROWS = 10_000  # CASME II's has 256 rows, CAS(ME)^3's about 1,100
MAX_SHEET_COLUMNS = 256  # of the header; CASME II's has 9
REQUIRED = ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion")


def find_sheet(src: Path) -> Path:
    sheets = sorted(src.glob("CASME2-coding*.xlsx")) or sorted(src.glob("*.xlsx"))
    if not sheets:
        raise InputError(f"{src}: no CASME2-coding-*.xlsx found")
    return sheets[0]


def find_release(src: Path) -> tuple[Path, str]:
    for folder, pattern in RELEASES.items():
        if (src / folder).is_dir():
            return src / folder, pattern
    raise InputError(f"{src}: neither CASME2_RAW_selected/ nor Cropped/ found")


def read_sheet(writer: VariantWriter, sheet: Path) -> list[tuple[int, dict]]:
    """Rows of the coding sheet as (excel row number, {column: value}). A sheet that cannot be read at
    all (not a regular file, over :data:`MAX_SHEET_BYTES`, not a zip, a broken part, no header) is an
    :class:`InputError`: there is no row to quarantine. Rows past :data:`MAX_SHEET_ROWS` are one
    quarantine row (:func:`sheet_rows`)."""
    from openpyxl import load_workbook

    try:
        data = read_bounded(sheet, MAX_SHEET_BYTES)
    except FileRejected as error:
        raise InputError(f"{sheet}: cannot read the coding sheet: {error}") from None
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            return sheet_rows(writer, sheet, workbook.worksheets[0])
        finally:
            workbook.close()
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 (openpyxl raises zip, XML, key and index errors on broken files)
        raise InputError(f"{sheet}: cannot read the coding sheet ({type(error).__name__}: {error})") from error


def sheet_rows(writer: VariantWriter, sheet: Path, worksheet) -> list[tuple[int, dict]]:
    """The header's columns and the rows under it, without walking the sheet's declared dimension: a
    5 KB file with one cell at XFD1048576 declares 17 billion cells, which openpyxl pads every row to.
    The declared size is dropped, columns end at the header's last name (at most
    :data:`MAX_SHEET_COLUMNS`) and rows at :data:`MAX_SHEET_ROWS`; what lies past that is one quarantine
    row, not a silent cut."""
    worksheet.reset_dimensions()
    first = next(worksheet.iter_rows(max_row=1, max_col=MAX_SHEET_COLUMNS, values_only=True), None)
    if first is None:
        raise InputError(f"{sheet}: the coding sheet is empty")
    header = [str(h).strip() if h is not None else "" for h in first]
    while header and not header[-1]:
        header.pop()
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"{sheet}: columns {missing} missing from header {header[:20]}")
    rows = []
    cells = worksheet.iter_rows(min_row=2, max_row=MAX_SHEET_ROWS + 1, max_col=len(header), values_only=True)
    for number, values in enumerate(cells, start=2):
        if number > MAX_SHEET_ROWS:  # openpyxl yields this row only when the sheet goes on past the bound
            reason = f"malformed sheet: rows past row {MAX_SHEET_ROWS} are not read (a coding sheet has a few hundred)"
            writer.reject(f"{sheet.name}:{number}-", reason)
        elif any(v is not None for v in values):
            rows.append((number, dict(zip(header, values, strict=True))))
    return rows


def _subject(value) -> str:
    match = re.fullmatch(r"(?:sub)?0*(\d{1,6})", str(value).strip().lower(), re.ASCII) if value is not None else None
    if not match:
        raise BadInput(f"malformed row: Subject {printable(value)[:40]!r}")
    return f"sub{int(match.group(1)):02d}"


def _clip(value) -> str:
    """The Filename cell: one folder name (a path with ``/``, ``..`` or NUL would leave the release)."""
    clip = str(value).strip() if value is not None else ""
    if not clip:
        raise BadInput("malformed row: empty Filename")
    if "/" in clip or "\\" in clip or clip in (".", "..") or "\x00" in clip:
        raise BadInput(f"outside source root: Filename {printable(clip)[:80]!r}")
    return clip


def _frame(value, column: str) -> int | None:
    text = str(value).strip() if value is not None else ""
    if column == "ApexFrame" and text in ("/", ""):
        return None
    return parse_int(value, column)


def select_frames(onset: int, apex: int | None, offset: int, config: IngestConfig) -> Sequence[int]:
    """The frames to ingest, ascending; a lazy ``range`` for all frames (the sheet may say 2,000,000)."""
    if config.casme2_frames == "all":
        return range(onset, offset + 1)
    if apex is not None:
        return (apex,)
    if config.casme2_missing_apex == "drop":
        raise DroppedByRule("rule: apex frame unknown ('/') and casme2_missing_apex is 'drop'")
    return ((onset + offset) // 2,)


def frames_on_disk(clip_dir: Path, pattern: str) -> list[int]:
    """Frame numbers of the files in ``clip_dir`` named like ``pattern`` (``img{}.jpg``), each once
    (``img7.jpg`` and ``img07.jpg`` are one frame number)."""
    prefix, suffix = pattern.split("{}")
    name = re.compile(rf"{re.escape(prefix)}([0-9]{{1,9}}){re.escape(suffix)}", re.ASCII)
    return sorted({int(m.group(1)) for entry in os.scandir(clip_dir) if (m := name.fullmatch(entry.name))})


@dataclass(frozen=True)
class ClipRow:
    """One parsed row of the coding sheet."""

    number: int  # excel row
    subject: str
    clip: str
    emotion: str
    frames: Sequence[int]


def parse_row(number: int, row: dict, config: IngestConfig) -> ClipRow:
    """One sheet row, or :class:`BadInput`."""
    subject = _subject(row["Subject"])
    clip = _clip(row["Filename"])
    emotion = CASME2_NAMES.get(str(row["Estimated Emotion"]).strip().lower())
    if emotion is None:
        raise BadInput(f"unknown label: Estimated Emotion {printable(row['Estimated Emotion'])[:40]!r}")
    onset, apex, offset = (_frame(row[c], c) for c in ("OnsetFrame", "ApexFrame", "OffsetFrame"))
    if onset > offset or (apex is not None and not onset <= apex <= offset):
        raise BadInput(f"malformed row: frames onset {onset}, apex {apex}, offset {offset} out of order")
    return ClipRow(number, subject, clip, emotion, select_frames(onset, apex, offset, config))


def ingest_casme2(writer: VariantWriter, src: Path, config: IngestConfig) -> str:
    sheet = find_sheet(src)
    frames_root, pattern = find_release(src)
    parsed: list[ClipRow] = []
    for number, row in read_sheet(writer, sheet):
        try:
            parsed.append(parse_row(number, row, config))
        except BadInput as error:
            writer.reject(f"{sheet.name}:{number}", str(error), error.category)
    listings: dict[tuple[str, str], list[ClipRow]] = {}
    for clip in parsed:
        listings.setdefault((clip.subject, clip.clip), []).append(clip)
    for clip in progress(parsed, desc="ingest casme2", unit="clip"):
        clip_dir = frames_root / clip.subject / clip.clip
        try:
            check_unique_clip(listings[(clip.subject, clip.clip)], clip, sheet.name)
            check_inside(frames_root, clip_dir, "Filename")
            check_frames_on_disk(clip_dir, pattern, clip.frames)
        except BadInput as error:
            writer.reject(f"{sheet.name}:{clip.number}", str(error), error.category)
            continue
        for frame in clip.frames:
            _ingest_frame(writer, src, frames_root, clip_dir / pattern.format(frame), frame, clip, config)
    return frames_root.name


def check_unique_clip(listings: list[ClipRow], clip: ClipRow, sheet_name: str) -> None:
    """One row per (subject, clip): a repeat that agrees with the first row is a duplicate; rows of one
    clip that disagree (emotion or frames) are all refused, as neither can be trusted."""
    if len(listings) == 1:
        return
    first = listings[0]
    if any((other.emotion, other.frames) != (first.emotion, first.frames) for other in listings):
        rows = ", ".join(f"{sheet_name}:{other.number}" for other in listings)
        raise BadInput(f"conflicting rows: the clip is listed {len(listings)} times ({rows})")
    if clip.number != first.number:
        raise DuplicateInput(f"duplicate row: same as {sheet_name}:{first.number}")


def check_frames_on_disk(clip_dir: Path, pattern: str, frames: Sequence[int]) -> None:
    """The sheet's frames must lie within the clip's frames on disk, and most of them must be there: a
    typo such as OffsetFrame 2000000 is one refused row, not two million missing-frame rows, even with a
    stray ``img3000058.jpg`` in the folder. Gaps of a few frames inside the range stay per frame, so the
    missing-frame rows of a clip never outnumber its files."""
    if not clip_dir.is_dir():
        raise BadInput("missing file: clip folder not found")
    present = frames_on_disk(clip_dir, pattern)
    if not present:
        raise BadInput("missing file: no frames in the clip folder")
    if frames[0] < present[0] or frames[-1] > present[-1]:
        raise BadInput(
            f"malformed row: frames {frames[0]}..{frames[-1]} outside the clip's frames on disk "
            f"({present[0]}..{present[-1]})"
        )
    found = bisect_right(present, frames[-1]) - bisect_left(present, frames[0])  # frames is a run: one range
    if len(frames) - found > max(found, 1):
        raise BadInput(f"malformed row: frames {frames[0]}..{frames[-1]} but only {found} of them are on disk")


def _ingest_frame(
    writer: VariantWriter, src: Path, frames_root: Path, path: Path, frame: int, clip: ClipRow, config: IngestConfig
) -> None:
    source = path.relative_to(src).as_posix()
    try:
        check_inside(frames_root, path, "frame")
        if not path.is_file():
            raise BadInput("missing file: frame not found")
        data, image = read_image_file(path, config.limits)
    except BadInput as error:
        writer.reject(source, str(error))
        return
    record = {
        "key": source,
        "source": source,
        "dataset": "casme2",
        "label_space": "casme2",
        "emotion": clip.emotion,
        "label": CASME2.index(clip.emotion),
        "subject": clip.subject,
        "clip": clip.clip,
        "frame": frame,
        "synthetic": False,
    }
    writer.add(record, image, data)
