"""Property-based fuzzing of the ingest readers (FER2013 CSV, AffectNet lists, CASME II sheet, file names).

For any generated source, ``ingest`` ends in a ``FersynthError`` with nothing written, or in a variant
whose books balance (``kept + quarantined = read``) on disk: never in another exception, never hanging.
Generators draw mostly well-formed parts with hostile ones mixed in, so that most examples get past the
header and reach the row, path and image checks.
"""

import io
import json
import os
import re
import signal
import tempfile
import zipfile
from contextlib import contextmanager
from functools import cache
from pathlib import Path, PurePosixPath

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from fersynth.errors import FersynthError, InputError
from fersynth.ingest import ingest
from fersynth.ingest.common import IngestConfig
from fersynth.ingest.fer2013 import N_PIXELS
from fersynth.variants.labels import CASME2, UTK_GENDERS, UTK_RACES
from fersynth.variants.variant import Variant
from tests.conftest import image_bytes, pixel_string, write_file

# database=None: no example database in the checkout. Every example builds its files in a temporary folder
# of its own (pytest's tmp_path is shared by all the examples of a test).
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
HANG_SECONDS = 10  # one example takes well under a second; past this, ingest hangs (e.g. loops over 10**17 frames)
ONE_PROCESS = IngestConfig(workers=1)


# checks shared by all readers ---------------------------------------------------------------------
class _Hang(BaseException):
    """Raised by the alarm; not an ``Exception``, so no ``except Exception`` in fersynth swallows it."""


@contextmanager
def _hang_guard():
    def alarm(signum, frame):
        raise _Hang

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    try:
        yield
    except _Hang:
        raise AssertionError(f"ingest still running after {HANG_SECONDS} s: it hangs") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _ingest_checked(dataset: str, src: Path, out: Path, config: IngestConfig = ONE_PROCESS) -> dict | None:
    """Run ingest: None where it refused with a FersynthError (and wrote nothing beside ``src``), else its
    report, once the variant on disk is checked against it."""
    before = sorted(os.listdir(out.parent))
    try:
        with _hang_guard():
            report = ingest(dataset, src, out, config)
    except FersynthError:
        assert sorted(os.listdir(out.parent)) == before, "a refused ingest left files (output or staging)"
        return None
    _check_variant(out, report)
    return report


def _check_variant(out: Path, report: dict) -> None:
    counted = ("read", "kept", "quarantined")
    on_disk = json.loads((out / "ingest.json").read_text(encoding="utf-8"))
    assert report["kept"] + report["quarantined"] == report["read"]
    assert [on_disk[name] for name in counted] == [report[name] for name in counted]
    assert report["kept"] >= 1, "a source with no kept image must be an InputError, not an empty variant"
    manifest = Variant(out).manifest
    assert len(manifest) == report["kept"] and manifest["key"].is_unique
    for key in manifest["key"]:
        path = PurePosixPath(key)
        assert key and "\x00" not in key and not path.is_absolute() and ".." not in path.parts, key
    quarantine = _quarantine(out)
    assert list(quarantine.columns) == ["source", "reason"]
    assert len(quarantine) == report["quarantined"], "quarantine.csv does not read back as one row per input"


def _quarantine(out: Path) -> pd.DataFrame:
    text = (out / "quarantine.csv").read_bytes().decode("utf-8")  # a UnicodeDecodeError fails the property
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


@contextmanager
def _workdir():
    with tempfile.TemporaryDirectory(prefix="fuzz-ingest-") as work:
        yield Path(work)


def _mostly(good: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` about three times in four, else ``hostile`` (shrinks towards ``good``)."""
    return st.one_of(good, good, good, hostile)


def _line_text(max_size: int = 30) -> st.SearchStrategy[bytes]:
    """A line's worth of random text or bytes (NUL and invalid UTF-8 included), without a line break."""
    return st.one_of(st.text(max_size=max_size).map(str.encode), st.binary(max_size=max_size)).map(
        lambda raw: raw.replace(b"\n", b" ")
    )


def _field(choices: list[str], *more: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A hostile text field: one of ``choices``, ``more``, or random text."""
    return st.one_of(st.sampled_from(choices), *more, _line_text(10).map(lambda raw: raw.decode("utf-8", "replace")))


@cache
def _image(fmt: str = "PNG", size: int = 64, identity: int = 0) -> bytes:
    return image_bytes("happy", (size, size), "L" if fmt == "PNG" else "RGB", fmt, identity=identity)


# 1. FER2013 CSV -----------------------------------------------------------------------------------
PIXELS = [pixel_string(seed) for seed in range(3)]  # few pictures: rows repeat them, so duplicates happen
EMOTION_OF = ["3", "0", "6"]  # each picture's label in valid rows: two valid rows never conflict
USAGES = ["Training", "PublicTest", "PrivateTest"]
BAD_PIXEL = ["256", "65536", "-1", "99999999999999999999", "3.5", "³", "٣", "x", "+", "-", "nan", "1e3", "\x00", "\xff"]
BAD_EMOTION = ["7", "-1", "³", "٣", "3.5", "", "99999999999999999999", "sad", "3\x00", "\xff"]
BAD_USAGE = ["Validation", "training", "", "Training\x00", "PublicTest\xff", "Test"]
FER_HEADERS = {
    "kaggle": b"emotion,pixels,Usage",
    "icml": b"emotion, Usage, pixels",
    "bom": b"\xef\xbb\xbfemotion,pixels,Usage",
}
FER_ROWS = ["valid", "valid", "valid", "quoted", "pixel", "pixel", "count", "emotion", "usage", "fields", "empty"]
FER_ROWS += ["field_text", "line", "relabel"]


def _latin1(text: str) -> bytes:
    """``"\\xff"`` stands for the byte 0xff (not UTF-8); everything else is UTF-8."""
    return b"\xff".join(part.encode() for part in text.split("\xff"))


@st.composite
def fer_rows(draw, header: str) -> tuple[bytes, str]:
    """One data line and what it must become: ``valid`` (kept, or quarantined as a duplicate), ``broken``
    (never kept), ``relabel`` (a valid row's picture under another label: a conflict where both are read)
    or ``unknown`` (random content)."""
    picture = draw(st.integers(0, len(PIXELS) - 1))
    fields = {"emotion": EMOTION_OF[picture], "pixels": PIXELS[picture], "Usage": draw(st.sampled_from(USAGES))}
    kind = draw(st.sampled_from(FER_ROWS))
    verdict = "valid" if kind in ("valid", "quoted") else "relabel" if kind == "relabel" else "broken"
    if kind == "relabel":
        fields["emotion"] = draw(st.sampled_from([str(code) for code in range(7) if str(code) != fields["emotion"]]))
    if kind == "pixel":  # the first and last values are where a tokenizer slips
        values = fields["pixels"].split()
        position = draw(st.sampled_from([0, N_PIXELS - 1, None])) or draw(st.integers(0, N_PIXELS - 1))
        values[position] = draw(st.sampled_from(BAD_PIXEL))
        fields["pixels"] = " ".join(values)
    elif kind == "count":
        values = fields["pixels"].split()
        fields["pixels"] = " ".join(values[: -draw(st.integers(1, 3))] if draw(st.booleans()) else [*values, "7"])
    elif kind == "emotion":
        fields["emotion"] = draw(st.sampled_from(BAD_EMOTION))
    elif kind == "usage":
        fields["Usage"] = draw(st.sampled_from(BAD_USAGE))
    elif kind == "empty":
        return b"", "broken"
    elif kind == "line":
        return draw(_line_text()), "unknown"
    elif kind == "field_text":
        fields[draw(st.sampled_from(sorted(fields)))] = draw(_line_text(12)).decode("utf-8", "replace")
        verdict = "unknown"
    order = ["emotion", "Usage", "pixels"] if header == "icml" else ["emotion", "pixels", "Usage"]
    values = [f'"{fields[name]}"' if kind == "quoted" and name == "pixels" else fields[name] for name in order]
    if kind == "fields":
        values = values[:2] if draw(st.booleans()) else [*values, draw(st.sampled_from(["", "extra", "3"]))]
    return _latin1(",".join(values)), verdict


@st.composite
def fer_csvs(draw) -> tuple[str, bytes, list[str]]:
    header = draw(st.sampled_from(["kaggle", "kaggle", "icml", "bom", "random"]))
    header_line = FER_HEADERS[header] if header != "random" else draw(_line_text())
    rows = draw(st.lists(fer_rows(header), max_size=6))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = newline.join([header_line, *(line for line, _ in rows)]) + (newline if rows else b"")
    return header, data, [verdict for _, verdict in rows]


@settings(FUZZ, max_examples=400)
@given(fer_csvs())
def test_fer2013_csv_never_crashes_and_balances(csv_file):
    header, data, verdicts = csv_file
    with _workdir() as work:
        write_file(work / "src" / "fer2013.csv", data)
        report = _ingest_checked("fer2013", work / "src", work / "out")
        if header == "random":
            return
        relabelled = bool({"relabel", "unknown"} & set(verdicts))  # only these can give a valid row's picture
        assert report is not None or "valid" not in verdicts or relabelled, "a CSV with a valid row was refused"
        if report is None:
            return
        assert report["read"] == len(verdicts), "every line after the header is read once"
        kept = set(Variant(work / "out").manifest["source"])
        reasons = _quarantine(work / "out").set_index("source")["reason"]
        allowed = ("duplicate", "conflicting labels") if relabelled else ("duplicate",)
        for line_number, verdict in enumerate(verdicts, start=2):
            source = f"fer2013.csv:{line_number}"
            if verdict == "broken":
                assert source not in kept, f"line {line_number} is malformed but was kept"
            elif verdict == "valid":
                assert source in kept or reasons.get(source, "").startswith(allowed), reasons.get(source)


# 2. AffectNet lists -------------------------------------------------------------------------------
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)
AFFECTNET_IMAGES = {  # several, so that two fresh rows seldom list one image (a conflict)
    "1/a.png": _image("PNG", 64, 1),
    "1/b.jpg": _image("JPEG", 64, 2),
    "1/c.png": _image("PNG", 64, 3),
    "2/d.jpg": _image("JPEG", 64, 4),
    "2/é ä.png": _image("PNG", 64, 5),
}
# junk.png is not an image; link.png is a symlink to ../secret.png, outside the source
AFFECTNET_PATHS = ["1/junk.png", "1/link.png", "1/missing.jpg", "../outside.png", "1/../../outside.png", "./1/a.png"]
AFFECTNET_PATHS += ["1//b.jpg", " 1/a.png ", "1/../1/a.png", "<abs>/secret.png", "1/a.png\x00", "1\x00/a.png", "1", ""]
AFFECTNET_PATHS += ["<abs>/src/Manually_Annotated_Images/1/a.png"]
BOX = ["0", "8", "48", "64", "65", "-3", "inf", "nan", "1e9", "3.0", "3.5", "³", "", " 0 ", "99999999999999999999"]
EXPRESSION = ["³", "٣", "3.0", " 3 ", "", "-1", "inf", "nan", "99999999999999999999", "happy"]
AFFECTNET_ROWS = ["row", "row", "row", "row", "repeat", "conflict", "short", "line"]
AFFECTNET_HOSTILE = {  # column -> its hostile values
    0: _field(AFFECTNET_PATHS),
    **dict.fromkeys(range(1, 5), _field(BOX, st.integers(-5, 70).map(str))),
    5: _field(["1.0;2.0", '"1,2"', '"']),
    6: _field(EXPRESSION, st.integers(0, 12).map(str)),
    **dict.fromkeys((7, 8), _field(["nan", "x", "-0.2"])),
}


@st.composite
def affectnet_rows(draw) -> list[str]:
    """A well-formed row, or one with up to three hostile fields."""
    box = draw(st.sampled_from([["0", "0", "64", "64"], ["8", "4", "32", "40"]]))
    row = [draw(st.sampled_from(sorted(AFFECTNET_IMAGES))), *box, "", str(draw(st.integers(0, 6))), "0.1", "0.2"]
    for column in draw(st.sets(st.sampled_from(sorted(AFFECTNET_HOSTILE)), max_size=3)):
        row[column] = draw(AFFECTNET_HOSTILE[column])
    return row


@st.composite
def affectnet_lists(draw) -> bytes:
    header = draw(st.sampled_from(["header", "header", "header", "bom", "none", "random"]))
    headers = {"header": [AFFECTNET_HEADER.encode()], "bom": [("\ufeff" + AFFECTNET_HEADER).encode()], "none": []}
    lines = headers[header] if header in headers else [draw(_line_text())]
    rows: list[list[str]] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(AFFECTNET_ROWS))
        if kind == "line":
            lines.append(draw(_line_text()))
            continue
        if kind in ("repeat", "conflict") and rows:  # the same image listed twice, agreeing or not
            row = list(draw(st.sampled_from(rows)))
            if kind == "conflict" and len(row) > 6:
                row[6] = str((int(row[6]) + 1) % 7) if row[6].isascii() and row[6].isdigit() else "1"
        else:
            row = draw(affectnet_rows())
            if kind == "short":
                row = row[: draw(st.integers(0, 8))]
        rows.append(row)
        lines.append(",".join(row).replace("\n", " ").encode())
    return draw(st.sampled_from([b"\n", b"\r\n"])).join(lines) + b"\n"


def _affectnet_source(work: Path) -> Path:
    src = work / "src"
    images = src / "Manually_Annotated_Images"
    for name, data in AFFECTNET_IMAGES.items():
        write_file(images / name, data)
    write_file(images / "1" / "junk.png", b"\x89PNG\r\n\x1a\n not really")
    write_file(work / "secret.png", _image("PNG", 64, 8))
    write_file(src / "outside.png", _image("PNG", 64, 9))
    os.symlink(work / "secret.png", images / "1" / "link.png")
    return src


@settings(FUZZ, max_examples=300)
@given(affectnet_lists(), st.one_of(st.none(), affectnet_lists()))
def test_affectnet_lists_never_crash_and_keep_only_images_inside_the_root(training, validation):
    with _workdir() as work:
        src = _affectnet_source(work)
        for name, data in (("training.csv", training), ("validation.csv", validation)):
            if data is not None:
                write_file(src / "Manually_Annotated_file_lists" / name, data.replace(b"<abs>", os.fsencode(work)))
        report = _ingest_checked("affectnet", src, work / "out")
        if report is None:
            return
        images = (src / "Manually_Annotated_Images").resolve()
        for key in Variant(work / "out").manifest["key"]:
            assert (images / key).resolve().is_relative_to(images), f"kept {key!r} from outside the image root"
            assert key in AFFECTNET_IMAGES, f"kept {key!r}, which is not one of the images written"


# 3. CASME II sheet --------------------------------------------------------------------------------
CASME2_HEADER = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]
CASME2_CLIPS = {  # frames on disk; EP01_03 lacks its frame 2
    ("sub01", "EP01_01"): (1, 2, 3, 4),
    ("sub01", "EP01_03"): (1, 3),
    ("sub02", "EP02_03"): (10, 11, 12),
    ("sub02", "ép_1"): (1,),
}
SUBJECT = [1, 2, "1", "sub01", "02", "sub2", 1.0, 2.5, -1, 0, 10**17, "³", "", None, "sub", True]
FILENAME = ["EP01_02", "EP_link", "EP09_09", "..", ".", "/", "../sub02/EP02_03", "EP01_01/..", "sub01/EP01_01", ""]
FILENAME += [None, " EP01_01 ", "EP01_01\\x"]
FRAME = ["/", "", None, "3", "3.0", 2.5, 3.0, float("inf"), float("nan"), 2_000_000, 10**17, -(10**17), "ten", "³"]
FRAME += ["1e3", True, "2000000", -3, 0, 5, 9, 13]
EMOTION = [*CASME2, "happy", " Happiness ", "contempt", "", None, 3]


def _cell(choices: list) -> st.SearchStrategy:
    return st.one_of(
        st.sampled_from(choices), st.text(max_size=20).map(lambda text: ILLEGAL_CHARACTERS_RE.sub("", text))
    )


CASME2_HOSTILE = [_cell(SUBJECT), _cell(FILENAME), _cell(FRAME), _cell(FRAME), _cell(FRAME), _cell(["4+7"])]
CASME2_HOSTILE += [_cell(EMOTION)]


@st.composite
def casme2_rows(draw) -> list[list]:
    """Rows that are well-formed, or well-formed but for one to three cells, or repeats of an earlier row."""
    rows: list[list] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["valid", "valid", "hostile", "hostile", "repeat", "conflict"]))
        if kind in ("repeat", "conflict") and rows:
            row = list(draw(st.sampled_from(rows)))
            if kind == "conflict":
                row[6] = "fear" if row[6] != "fear" else "disgust"
            rows.append(row)
            continue
        (subject, clip), frames = draw(st.sampled_from(sorted(CASME2_CLIPS.items())))
        onset, offset = sorted(draw(st.lists(st.sampled_from(frames), min_size=2, max_size=2)))
        apex = draw(st.sampled_from([onset, offset, "/"]))
        row = [int(subject[3:]), clip, onset, apex, offset, "4", draw(st.sampled_from(CASME2))]
        if kind == "hostile":
            for column in draw(st.sets(st.integers(0, len(row) - 1), min_size=1, max_size=3)):
                row[column] = draw(CASME2_HOSTILE[column])
        rows.append(row)
    return rows


def _casme2_source(work: Path) -> Path:
    src = work / "src"
    release = src / "CASME2_RAW_selected"
    for (subject, clip), frames in CASME2_CLIPS.items():
        for frame in frames:
            write_file(release / subject / clip / f"img{frame}.jpg", _image("JPEG", 32, 100 + frame))
    write_file(release / "sub01" / "EP01_02" / "img1.jpg", b"\xff\xd8\xff not a jpeg")
    write_file(release / "sub01" / "EP01_02" / "img2.jpg", _image("JPEG", 32, 200))
    write_file(work / "outside_clip" / "img1.jpg", _image("JPEG", 32, 300))
    os.symlink(work / "outside_clip", release / "sub01" / "EP_link")
    return src


def _xlsx(rows: list[list], header: list[str] | None = CASME2_HEADER) -> bytes:
    book = Workbook()
    for row in ([header] if header else []) + rows:
        book.active.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


CASME2_CONFIGS = [
    IngestConfig(workers=1, casme2_frames=frames, casme2_missing_apex=missing)
    for frames in ("all", "apex")
    for missing in ("middle", "drop")
]


@settings(FUZZ, max_examples=200)
@given(
    casme2_rows(),
    st.sampled_from(["full", "full", "full", "full", "no emotion column", "no header"]),
    st.sampled_from(CASME2_CONFIGS),
)
def test_casme2_sheet_never_crashes_or_hangs(rows, header, config):
    columns = {"full": CASME2_HEADER, "no emotion column": CASME2_HEADER[:-1], "no header": None}[header]
    with _workdir() as work:
        src = _casme2_source(work)
        write_file(src / "CASME2-coding-20140508.xlsx", _xlsx(rows, columns))
        report = _ingest_checked("casme2", src, work / "out", config)
        if header != "full":
            assert report is None, "a sheet without the required columns must be an InputError"
        if report is None:
            return
        frames_root = (src / "CASME2_RAW_selected").resolve()
        for key in Variant(work / "out").manifest["key"]:
            assert (src / key).resolve().is_relative_to(frames_root), f"kept {key!r} from outside the release"


@cache
def _good_sheet() -> bytes:
    return _xlsx([[1, "EP01_01", 1, 2, 3, "4", "disgust"]])


@st.composite
def broken_sheets(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "truncated", "zip", "empty workbook"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "truncated":
        return _good_sheet()[: draw(st.integers(0, len(_good_sheet()) - 1))]
    if kind == "empty workbook":
        return _xlsx([], header=None)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(draw(st.sampled_from(["[Content_Types].xml", "xl/workbook.xml", "x"])), draw(st.binary()))
    return buffer.getvalue()


@settings(FUZZ, max_examples=50)
@given(broken_sheets())
def test_casme2_unreadable_sheet_is_an_input_error(sheet):
    with _workdir() as work:
        src = _casme2_source(work)
        write_file(src / "CASME2-coding-20140508.xlsx", sheet)
        before = sorted(os.listdir(work))
        try:
            with _hang_guard():
                ingest("casme2", src, work / "out", ONE_PROCESS)
        except InputError:
            assert sorted(os.listdir(work)) == before
        else:
            raise AssertionError("an unreadable coding sheet was ingested")


# 4. File names ------------------------------------------------------------------------------------
def _file_name(raw: bytes) -> bytes:
    """``raw`` made a possible file name: no ``/`` or NUL, not ``.`` or ``..``, under the length limit. No
    ``0x`` either, so that a ``0x...`` in the quarantine can only be a memory address."""
    name = re.sub(rb"0[xX]", b"0_", raw.replace(b"/", b"_").replace(b"\0", b"_")[:200])
    return name if name.strip(b".") else b"_" + name


def _names(hostile: list[bytes]) -> st.SearchStrategy[bytes]:
    raw = st.one_of(st.sampled_from(hostile), st.text(max_size=30).map(str.encode), st.binary(max_size=30))
    return raw.map(_file_name)


FOLDERS = [b"happy", b"sad", b"anger", b"Fear", b"neutral", b"surprise", b"disgust"]
BAD_FOLDERS = [b"contempt", b"bored", b".hidden", b"\xff", b"caf\xc3\xa9", b" happy", b"happy\r"]
BAD_NAMES = [b".hidden.png", b"noext", b"a.txt", b"\xff\xfe.png", b"caf\xc3\xa9.png", b"\xe9.png", b"a.png\r"]
GOOD_NAMES = st.tuples(st.integers(0, 99), st.sampled_from([".png", ".jpg", ".JPEG", ".webp", ".bmp"])).map(
    lambda parts: f"{parts[0]}{parts[1]}".encode()
)
CONTENTS = ["png", "jpeg", "png", "jpeg", "junk", "empty", "truncated"]


def _content(kind: str, identity: int) -> bytes:
    if kind in ("png", "jpeg"):
        return _image(kind.upper(), 32, identity)
    return {"junk": b"\x00\x01junk", "empty": b"", "truncated": _image("PNG", 32, 0)[:60]}[kind]


def _write_tree(root: Path, files: list[tuple[bytes, str]]) -> set[str]:
    """Write ``files`` ((relative path as bytes, content kind)) below ``root`` at the bytes level (names
    need not be UTF-8). Returns the relative paths, as text, of the files that hold a real image."""
    images = set()
    for number, (relative, kind) in enumerate(files):
        path = os.path.join(os.fsencode(root), relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as handle:
            handle.write(_content(kind, number % 3))  # identities repeat: some files are duplicates
        if kind in ("png", "jpeg"):
            images.add(os.fsdecode(relative))
    return images


def _unread(folder: bytes) -> bool:
    """A folder that ingest quarantines as a whole (hidden, or a name that is not UTF-8)."""
    try:
        folder.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return folder.startswith(b".")


def _check_no_address(work: Path, out: Path) -> None:
    text = (out / "quarantine.csv").read_bytes().decode("utf-8").replace(str(work), "")
    assert not re.search(r"0x[0-9a-fA-F]{6}", text), f"a memory address in the quarantine: {text}"


@settings(FUZZ, max_examples=150)
@given(
    st.sampled_from(["nhfi", "affectnet", "sfhq", "folder"]),
    st.lists(
        st.tuples(
            _mostly(st.sampled_from(FOLDERS), _names(BAD_FOLDERS)),
            _mostly(GOOD_NAMES, _names(BAD_NAMES)),
            st.sampled_from(CONTENTS),
        ),
        min_size=1,
        max_size=8,
        unique_by=lambda file: file[:2],
    ),
)
def test_class_folder_names_never_crash(dataset, files):
    with _workdir() as work:
        images = _write_tree(work / "src", [(folder + b"/" + name, kind) for folder, name, kind in files])
        report = _ingest_checked(dataset, work / "src", work / "out")
        if report is None:
            return
        folders = {folder for folder, _, _ in files}
        expected = sum(1 if _unread(f) else sum(1 for g, _, _ in files if g == f) for f in folders)
        assert report["read"] == expected, "every file is read once (a hidden or non-UTF-8 folder counts once)"
        assert set(Variant(work / "out").manifest["key"]) <= images, "kept a file that holds no image"
        _check_no_address(work, work / "out")


UTK_AGE = ["117", "³", "٣", "", "-1", "1.5", "99999999999999999999", "+5", " 5", "005"]
UTK_CODE = ["2", "5", "³", "", "01", "-0", " 1"]
UTK_SUFFIX = [".jpg", ".png", "", ".txt", ".JPG", ".jpg.chip"]
UTK_HOSTILE = [_field(UTK_AGE), _field(UTK_CODE), _field(UTK_CODE), _field(["", "x_y", "1_2_3"])]
UTK_HOSTILE += [st.sampled_from(UTK_SUFFIX)]


@st.composite
def utk_names(draw) -> bytes:
    """A well-formed name, or one with up to two hostile parts."""
    age, gender, race = draw(st.integers(0, 116)), draw(st.integers(0, 1)), draw(st.integers(0, 4))
    parts = [str(age), str(gender), str(race), str(draw(st.integers(20170101000000000, 20171231235959999)))]
    parts.append(".jpg.chip.jpg")
    for position in draw(st.sets(st.integers(0, len(parts) - 1), max_size=2)):
        parts[position] = draw(UTK_HOSTILE[position])
    return _file_name(("_".join(parts[:4]) + parts[4]).encode())


@settings(FUZZ, max_examples=150)
@given(
    st.lists(
        st.tuples(_mostly(utk_names(), _names(BAD_NAMES)), st.sampled_from(CONTENTS)),
        min_size=1,
        max_size=8,
        unique_by=lambda file: file[0],
    )
)
def test_utkface_names_never_crash(files):
    with _workdir() as work:
        images = _write_tree(work / "src", [(b"UTKFace/" + name, kind) for name, kind in files])
        report = _ingest_checked("utkface", work / "src", work / "out")
        if report is None:
            return
        assert report["read"] == len(files), "every file is read once"
        manifest = Variant(work / "out").manifest
        assert set(manifest["key"]) <= images, "kept a file that holds no image"
        assert manifest["age"].between(0, 116).all()
        assert set(manifest["gender"]) <= set(UTK_GENDERS.values())
        assert set(manifest["ethnicity"]) <= set(UTK_RACES.values())
        _check_no_address(work, work / "out")
