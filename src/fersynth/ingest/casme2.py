"""CASME II micro-expressions: the coding sheet (``CASME2-coding-*.xlsx``) and frame folders
(``CASME2_RAW_selected/subNN/<Filename>/img<N>.jpg`` or ``Cropped/subNN/<Filename>/reg_img<N>.jpg``).

Keeps CASME II's own 7-class label space. Frames are all onset..offset frames or the apex only;
splits are by subject (done by the caller), so frames of one clip never straddle a split.
"""

from __future__ import annotations

import re
from pathlib import Path

from openpyxl import load_workbook

from fersynth.ingest.common import BadInput, DroppedByRule, IngestConfig, read_image_file
from fersynth.labels import CASME2, CASME2_NAMES
from fersynth.log import progress
from fersynth.variant import VariantWriter

RELEASES = {"CASME2_RAW_selected": "img{}.jpg", "Cropped": "reg_img{}.jpg"}
REQUIRED = ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion")


def find_sheet(src: Path) -> Path:
    sheets = sorted(src.glob("CASME2-coding*.xlsx")) or sorted(src.glob("*.xlsx"))
    if not sheets:
        raise FileNotFoundError(f"{src}: no CASME2-coding-*.xlsx found")
    return sheets[0]


def find_release(src: Path) -> tuple[Path, str]:
    for folder, pattern in RELEASES.items():
        if (src / folder).is_dir():
            return src / folder, pattern
    raise FileNotFoundError(f"{src}: neither CASME2_RAW_selected/ nor Cropped/ found")


def read_sheet(sheet: Path) -> list[tuple[int, dict]]:
    """Rows of the coding sheet as (excel row number, {column: value})."""
    workbook = load_workbook(sheet, read_only=True, data_only=True)
    rows = workbook.worksheets[0].iter_rows(values_only=True)
    header = [str(h).strip() if h is not None else "" for h in next(rows)]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ValueError(f"{sheet}: columns {missing} missing from header {header}")
    out = [
        (number, dict(zip(header, values, strict=False)))
        for number, values in enumerate(rows, start=2)
        if any(v is not None for v in values)
    ]
    workbook.close()
    return out


def _subject(value) -> str:
    match = re.fullmatch(r"(?:sub)?0*(\d+)", str(value).strip().lower()) if value is not None else None
    if not match:
        raise BadInput(f"malformed row: Subject {value!r}")
    return f"sub{int(match.group(1)):02d}"


def _frame(value, column: str) -> int | None:
    text = str(value).strip() if value is not None else ""
    if column == "ApexFrame" and text in ("/", ""):
        return None
    try:
        return int(float(text))
    except ValueError as error:
        raise BadInput(f"malformed row: {column} {value!r}") from error


def select_frames(onset: int, apex: int | None, offset: int, config: IngestConfig) -> list[int]:
    if config.casme2_frames == "all":
        return list(range(onset, offset + 1))
    if apex is not None:
        return [apex]
    if config.casme2_missing_apex == "drop":
        raise DroppedByRule("rule: apex frame unknown ('/') and casme2_missing_apex is 'drop'")
    return [(onset + offset) // 2]


def ingest_casme2(writer: VariantWriter, src: Path, config: IngestConfig) -> str:
    sheet = find_sheet(src)
    frames_root, pattern = find_release(src)
    for number, row in progress(read_sheet(sheet), desc="ingest casme2", unit="clip"):
        row_source = f"{sheet.name}:{number}"
        try:
            subject = _subject(row["Subject"])
            clip = str(row["Filename"]).strip() if row["Filename"] is not None else ""
            if not clip:
                raise BadInput("malformed row: empty Filename")
            emotion = CASME2_NAMES.get(str(row["Estimated Emotion"]).strip().lower())
            if emotion is None:
                raise BadInput(f"unknown label: Estimated Emotion {row['Estimated Emotion']!r}")
            onset, apex, offset = (_frame(row[c], c) for c in ("OnsetFrame", "ApexFrame", "OffsetFrame"))
            if onset > offset or (apex is not None and not onset <= apex <= offset):
                raise BadInput(f"malformed row: frames onset {onset}, apex {apex}, offset {offset} out of order")
            frames = select_frames(onset, apex, offset, config)
        except BadInput as error:
            writer.reject(row_source, str(error), error.category)
            continue
        for frame in frames:
            path = frames_root / subject / clip / pattern.format(frame)
            source = path.relative_to(src).as_posix()
            try:
                if not path.is_file():
                    raise BadInput("missing file: frame not found")
                data, image = read_image_file(path)
            except BadInput as error:
                writer.reject(source, str(error))
                continue
            record = {
                "key": source,
                "source": source,
                "dataset": "casme2",
                "label_space": "casme2",
                "emotion": emotion,
                "label": CASME2.index(emotion),
                "subject": subject,
                "clip": clip,
                "frame": frame,
                "synthetic": False,
            }
            writer.add(record, image, data)
    return frames_root.name
