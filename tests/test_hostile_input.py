"""Hostile dataset contents: every case is quarantined with a reason (or is a one-line error), never a
crash, never silence, and ``kept + quarantined = read`` holds."""

import io
import os
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from openpyxl import Workbook, load_workbook
from PIL import Image

from fersynth.cli import main
from fersynth.errors import InputError
from fersynth.ingest import ingest
from fersynth.ingest.common import IngestConfig
from fersynth.variants.variant import Variant
from tests.conftest import at_most, image_bytes, pixel_string, write_file

AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)


def _quarantine(out):
    return pd.read_csv(out / "quarantine.csv", keep_default_na=False).set_index("source")["reason"].to_dict()


def _ingested(dataset, src, out, **config):
    report = ingest(dataset, src, out, IngestConfig(workers=1, **config))
    assert report["kept"] + report["quarantined"] == report["read"]
    assert len(Variant(out).manifest) == report["kept"] and len(_quarantine(out)) == report["quarantined"]
    return report, _quarantine(out)


def _png(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header_only(width, height):
    """A PNG that claims width x height pixels in a few bytes: a decompression bomb's header."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


# paths that leave the dataset ----------------------------------------------------------------------
def test_affectnet_list_paths_outside_the_image_root_are_quarantined(tmp_path):
    src = tmp_path / "affectnet"
    secret = write_file(tmp_path / "secret.jpg", image_bytes("happy", (64, 64), fmt="JPEG"))
    write_file(src / "Manually_Annotated_Images" / "1" / "ok.jpg", image_bytes("sad", (64, 64), fmt="JPEG"))
    rows = [
        "1/ok.jpg,0,0,64,64,,2,0,0",
        "../../secret.jpg,0,0,64,64,,1,0,0",
        f"{secret},0,0,64,64,,1,0,0",
        "1/../../../secret.jpg,0,0,64,64,,1,0,0",
    ]
    write_file(src / "Manually_Annotated_file_lists" / "training.csv", "\n".join([AFFECTNET_HEADER, *rows]).encode())
    os.symlink(secret, src / "Manually_Annotated_Images" / "1" / "link.jpg")
    rows.append("1/link.jpg,0,0,64,64,,1,0,0")
    write_file(src / "Manually_Annotated_file_lists" / "training.csv", "\n".join([AFFECTNET_HEADER, *rows]).encode())
    report, reasons = _ingested("affectnet", src, tmp_path / "out")
    assert report["kept"] == 1 and list(Variant(tmp_path / "out").manifest["key"]) == ["1/ok.jpg"]
    outside = [r for r in reasons.values() if r.startswith("outside source root")]
    assert len(outside) == 4


def test_casme2_filenames_that_leave_the_release_are_quarantined(tmp_path):
    src = _casme2(tmp_path / "casme2", [[1, "EP01_01", 1, 2, 3, "", "happiness"], [1, "../sub01", 1, 2, 3, "", "fear"]])
    report, reasons = _ingested("casme2", src, tmp_path / "out")
    assert report["kept"] == 3 and reasons["CASME2-coding-20140508.xlsx:3"].startswith("outside source root")


def test_symlinks_hidden_files_and_special_files_are_counted_not_skipped(tmp_path):
    src = tmp_path / "nhfi"
    for i in range(3):
        write_file(src / "happy" / f"{i}.png", image_bytes("happy", (48, 48), identity=i))
    outside = write_file(tmp_path / "elsewhere" / "x.png", image_bytes("sad", (48, 48), identity=7))
    os.symlink(outside, src / "happy" / "link_out.png")
    os.symlink(src / "happy" / "0.png", src / "sad_link.png")  # inside the root: read (then a duplicate)
    os.symlink(tmp_path / "gone.png", src / "happy" / "dangling.png")
    os.symlink(src / "happy", src / "sad")
    write_file(src / "happy" / ".DS_Store", b"junk")
    write_file(src / ".cache" / "happy" / "9.png", image_bytes("happy", (48, 48), identity=9))
    os.mkfifo(src / "happy" / "pipe.png")
    report, reasons = _ingested("nhfi", src, tmp_path / "out")
    assert report["kept"] == 3
    assert reasons["happy/link_out.png"].startswith("outside source root")
    assert reasons["happy/dangling.png"] == "dangling symlink"
    assert reasons["sad"] == "symlinked folder: not followed"
    assert reasons["happy/.DS_Store"] == "hidden file" and reasons[".cache"] == "hidden folder: not read"
    assert reasons["happy/pipe.png"] == "not a regular file"
    assert reasons["sad_link.png"].startswith("unknown label")  # read, then judged like any file


# pixels and sizes ----------------------------------------------------------------------------------
def test_a_16_bit_png_keeps_its_picture(tmp_path):
    src = tmp_path / "nhfi"
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    write_file(src / "happy" / "deep.png", _png(ramp))
    assert Image.open(src / "happy" / "deep.png").mode.startswith("I")
    _ingested("nhfi", src, tmp_path / "out")
    variant = Variant(tmp_path / "out")
    [(row, image)] = list(variant.iter_images())
    assert row["mode"] == "L" and row["format"] == "PNG"
    assert np.array_equal(np.asarray(image), np.rint(ramp / 257).astype(np.uint8))  # not clipped to white
    array = variant.load_array(variant.manifest, 64)
    assert array.min() == 0 and array.max() == 255 and np.unique(array).size > 200


def test_training_reads_a_16_bit_variant_by_value_range(tmp_path):
    """A variant written elsewhere (not through ingest) that stores a 16-bit PNG trains as its picture."""
    from fersynth.modeling.data import InputConfig, decoded
    from fersynth.variants.variant import VariantWriter

    ramp = (np.arange(48 * 48, dtype=np.uint32).reshape(48, 48) * 28).astype(np.uint16)  # 0 .. 64484
    with VariantWriter(tmp_path / "v") as writer:
        writer.add({"key": "a", "source": "a", "split": "train"}, Image.fromarray(ramp))
        writer.commit()
    variant = Variant(tmp_path / "v")
    assert variant.manifest["mode"].iloc[0].startswith("I")
    array = decoded(variant, variant.manifest, InputConfig(size=48), tmp_path / "cache")
    assert np.abs(array[0, 0].astype(int) - ramp / 257).max() <= 1  # PIL's convert("L") gives all 255


def test_fer2013_values_that_wrap_in_16_bits_are_out_of_range(tmp_path):
    pixels = pixel_string(1).split()
    rows = [
        f"3,{' '.join(['65536'] * 2304)},Training",
        f"3,{' '.join(['65791'] + pixels[1:])},Training",
        f"3,{' '.join(['99999999999999999999999'] + pixels[1:])},Training",
        f"³,{pixel_string(2)},Training",
        f"3,{pixel_string(3)},Training",
    ]
    write_file(tmp_path / "fer" / "fer2013.csv", "\n".join(["emotion,pixels,Usage", *rows]).encode())
    report, reasons = _ingested("fer2013", tmp_path / "fer", tmp_path / "out")
    assert report["kept"] == 1
    assert [reasons[f"fer2013.csv:{n}"] for n in (2, 3, 4)] == ["malformed pixels: a value is outside 0-255"] * 3
    assert reasons["fer2013.csv:5"] == "unknown label: emotion code '³'"


def test_fer2013_bare_signs_are_not_pixels(tmp_path):
    """Found by the fuzz test: numpy reads a trailing "+" as 0 and "+ 9" as one value."""
    zeros = ["0"] * 2303
    rows = [f"0,{' '.join([*zeros, '+'])},Training", f"0,{' '.join(['+', *zeros[:1151], '9', *zeros[1151:]])},Training"]
    write_file(
        tmp_path / "fer" / "fer2013.csv",
        "\n".join(["emotion,pixels,Usage", *rows, f"3,{pixel_string(4)},Training"]).encode(),
    )
    report, reasons = _ingested("fer2013", tmp_path / "fer", tmp_path / "out")
    assert report["kept"] == 1 and set(reasons.values()) == {"malformed pixels: a value is not an integer"}


def test_control_characters_in_names_stay_inside_their_quarantine_row(tmp_path):
    src = tmp_path / "nhfi"
    write_file(src / "happy" / "0.png", image_bytes("happy", (48, 48)))
    write_file(src / "happy" / "a\rb", b"x")
    report, reasons = _ingested("nhfi", src, tmp_path / "out")
    assert report["quarantined"] == 1 and reasons == {"happy/a\\x0db": "not an image: suffix (none)"}


def test_tiny_and_huge_images_are_quarantined_by_configurable_limits(tmp_path):
    src = tmp_path / "nhfi"
    write_file(src / "happy" / "ok.png", image_bytes("happy", (48, 48)))
    write_file(src / "happy" / "dot.png", _png(np.zeros((1, 1), np.uint8)))
    write_file(src / "happy" / "bomb.png", _png_header_only(20000, 20000))
    write_file(src / "happy" / "wide.png", _png(np.zeros((20, 3000), np.uint8)))
    report, reasons = _ingested("nhfi", src, tmp_path / "out")
    assert report["kept"] == 2  # ok.png and wide.png (60,000 pixels, 20 px tall)
    assert reasons["happy/dot.png"] == "too small: 1x1 < min_side 16"
    assert reasons["happy/bomb.png"].startswith("too large")
    _, reasons = _ingested("nhfi", src, tmp_path / "strict", max_pixels=50_000, min_side=32)
    assert reasons["happy/wide.png"].startswith("too large: 3000x20") and len(reasons) == 3


def test_a_source_with_nothing_usable_is_an_error_not_an_empty_variant(tmp_path, monkeypatch):
    write_file(tmp_path / "nhfi" / "happy" / "broken.png", b"not a png")
    with pytest.raises(InputError, match=r"no image kept .* 1 x corrupt image"):
        ingest("nhfi", tmp_path / "nhfi", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {}}))
    result = CliRunner().invoke(main, ["ingest", "nhfi", "--src", "empty", "--out", "out"])
    assert result.exit_code == 1 and "nothing found there" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


# names and rows that used to crash a whole ingest ---------------------------------------------------
def test_non_utf8_names_are_quarantined_with_their_bytes_escaped(tmp_path):
    src = tmp_path / "nhfi"
    write_file(src / "happy" / "ok.png", image_bytes("happy", (48, 48)))
    with open(os.path.join(os.fsencode(src / "happy"), b"caf\xe9.png"), "wb") as handle:
        handle.write(image_bytes("happy", (48, 48), identity=3))
    report, _ = _ingested("nhfi", src, tmp_path / "out")
    text = (tmp_path / "out" / "quarantine.csv").read_bytes().decode("utf-8")
    assert report["kept"] == 1 and "happy/caf\\xe9.png,malformed file name: not valid UTF-8" in text


def test_utkface_superscript_digits_are_a_malformed_name(tmp_path):
    src = tmp_path / "utk"
    write_file(src / "26_1_2_2017.jpg.chip.jpg", image_bytes("neutral", (64, 64), "RGB", "JPEG"))
    write_file(src / "²⁶_1_2_2017.jpg.chip.jpg", image_bytes("neutral", (64, 64), "RGB", "JPEG", identity=2))
    write_file(src / "26_¹_2_2017.jpg.chip.jpg", image_bytes("neutral", (64, 64), "RGB", "JPEG", identity=3))
    report, reasons = _ingested("utkface", src, tmp_path / "out")
    assert report["kept"] == 1
    assert reasons["²⁶_1_2_2017.jpg.chip.jpg"].startswith("malformed file name: age")
    assert reasons["26_¹_2_2017.jpg.chip.jpg"].startswith("malformed file name: gender")


def test_affectnet_duplicate_rows_and_non_finite_numbers(tmp_path):
    src = tmp_path / "affectnet"
    for name, emotion in zip("abcd", ("happy", "sad", "fear", "angry"), strict=True):
        write_file(src / "Manually_Annotated_Images" / "1" / f"{name}.jpg", image_bytes(emotion, (64, 64), fmt="JPEG"))
    rows = [
        "1/a.jpg,0,0,64,64,,1,0,0",
        "1/a.jpg,0,0,64,64,,1,0.5,0.5",  # the same listing again (valence differs: not used)
        "1/b.jpg,0,0,64,64,,1,0,0",
        "1/b.jpg,0,0,64,64,,2,0,0",  # the same image under another label: neither is trusted
        "1/c.jpg,inf,0,64,64,,1,0,0",
        "1/d.jpg,0,nan,64,64,,³,0,0",
    ]
    write_file(src / "Manually_Annotated_file_lists" / "training.csv", "\n".join([AFFECTNET_HEADER, *rows]).encode())
    report, reasons = _ingested("affectnet", src, tmp_path / "out")
    assert list(Variant(tmp_path / "out").manifest["key"]) == ["1/a.jpg"]
    assert reasons["training.csv:3"] == "duplicate row: same as training.csv:2" and report["duplicates"] == 1
    assert reasons["training.csv:4"].startswith("conflicting rows") and reasons["training.csv:5"].startswith("conflict")
    assert reasons["1/c.jpg"] == "malformed row: face_x 'inf' is not a whole number"
    assert reasons["1/d.jpg"] == "malformed row: expression '³' is not a whole number"


def _casme2(src, rows, frames=3):
    """A coding sheet with ``rows`` and frames 1..frames of clip EP01_01 (and EP02_01) of sub01."""
    workbook = Workbook()
    workbook.active.append(
        ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]
    )
    for row in rows:
        workbook.active.append(row)
    src.mkdir(parents=True)
    workbook.save(src / "CASME2-coding-20140508.xlsx")
    for clip in ("EP01_01", "EP02_01"):
        for frame in range(1, frames + 1):
            data = image_bytes("happy", (64, 64), "RGB", "JPEG", identity=frame + 100 * int(clip[2:4]))
            write_file(src / "CASME2_RAW_selected" / "sub01" / clip / f"img{frame}.jpg", data)
    return src


def test_casme2_duplicate_rows_and_an_absurd_offset_are_one_quarantine_row_each(tmp_path):
    rows = [
        [1, "EP01_01", 1, 2, 3, "", "happiness"],
        [1, "EP01_01", 1, 2, 3, "", "happiness"],  # repeated
        [1, "EP02_01", 1, 2, 2000000, "", "fear"],  # a typo in OffsetFrame
        [1, "EP02_01", 1, 2, "inf", "", "fear"],
        [1, "EP03_01", 10**17, None, 10**17 + 5, "", "fear"],
    ]
    report, reasons = _ingested("casme2", _casme2(tmp_path / "casme2", rows), tmp_path / "out")
    assert report["kept"] == 3 and report["read"] == 3 + 4
    assert reasons["CASME2-coding-20140508.xlsx:3"] == "duplicate row: same as CASME2-coding-20140508.xlsx:2"
    assert "outside the clip's frames on disk (1..3)" in reasons["CASME2-coding-20140508.xlsx:4"]
    assert reasons["CASME2-coding-20140508.xlsx:5"] == "malformed row: OffsetFrame 'inf' is not a whole number"
    assert reasons["CASME2-coding-20140508.xlsx:6"] == "missing file: clip folder not found"


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x00" * 100])
def test_a_corrupt_or_empty_coding_sheet_is_one_line_error(tmp_path, monkeypatch, content):
    src = _casme2(tmp_path / "casme2", [[1, "EP01_01", 1, 2, 3, "", "happiness"]])
    (src / "CASME2-coding-20140508.xlsx").write_bytes(content)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {}}))
    result = CliRunner().invoke(main, ["ingest", "casme2", "--src", "casme2", "--out", "out"])
    assert result.exit_code == 1 and "cannot read the coding sheet" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_a_sheet_without_rows_or_columns_is_one_line_error(tmp_path):
    src = _casme2(tmp_path / "casme2", [])
    workbook = Workbook()
    workbook.save(src / "CASME2-coding-20140508.xlsx")
    with pytest.raises(InputError, match="the coding sheet is empty"):
        ingest("casme2", src, tmp_path / "out")
    workbook.active.append(["Subject", "Filename"])
    workbook.save(src / "CASME2-coding-20140508.xlsx")
    with pytest.raises(InputError, match="missing from header"):
        ingest("casme2", src, tmp_path / "out")


def test_quarantine_lists_are_deterministic(tmp_path):
    src = tmp_path / "nhfi"
    write_file(src / "happy" / "ok.png", image_bytes("happy", (48, 48)))
    write_file(src / "happy" / "junk.png", os.urandom(64))
    write_file(src / "happy" / "cut.png", image_bytes("happy", (48, 48), identity=2)[:60])
    _ingested("nhfi", src, tmp_path / "a")
    _ingested("nhfi", src, tmp_path / "b")
    first = (tmp_path / "a" / "quarantine.csv").read_text()
    assert first == (tmp_path / "b" / "quarantine.csv").read_text() and " at 0x" not in first
    assert "corrupt image: not a recognised image format" in first


# issue 22: the ingest probes -----------------------------------------------------------------------


def test_casme2_a_stray_frame_far_away_does_not_stretch_the_clip(tmp_path):
    rows = [[1, "EP01_01", 1, 2, 3, "", "happiness"], [1, "EP02_01", 1, 2, 1000, "", "fear"]]  # a typo in OffsetFrame
    src = _casme2(tmp_path / "casme2", rows)
    write_file(src / "CASME2_RAW_selected" / "sub01" / "EP02_01" / "img1000.jpg", image_bytes("sad", (64, 64)))
    report, reasons = _ingested("casme2", src, tmp_path / "out")
    assert report["kept"] == 3 and report["read"] == 3 + 1, "the row is one quarantine row, not 996 missing frames"
    assert reasons["CASME2-coding-20140508.xlsx:3"] == "malformed row: frames 1..1000 but only 4 of them are on disk"


def test_casme2_a_cell_in_the_sheets_far_corner_is_not_walked_to(tmp_path):
    src = _casme2(tmp_path / "casme2", [[1, "EP01_01", 1, 2, 3, "", "happiness"]])
    workbook = load_workbook(src / "CASME2-coding-20140508.xlsx")
    workbook.active["XFD1048576"] = "x"  # the sheet's dimension becomes A1:XFD1048576 (17 billion cells)
    workbook.save(src / "CASME2-coding-20140508.xlsx")
    with at_most(30):
        report, reasons = _ingested("casme2", src, tmp_path / "out")
    assert report["kept"] == 3 and report["read"] == 3 + 1
    assert reasons == {
        "CASME2-coding-20140508.xlsx:10001-": "malformed sheet: rows past row 10000 are not read (a coding sheet "
        "has a few hundred)"
    }


def test_symlink_loops_are_quarantined_not_a_traceback(tmp_path):
    src = tmp_path / "nhfi"
    write_file(src / "happy" / "0.png", image_bytes("happy", (48, 48)))
    os.symlink("loop.png", src / "happy" / "loop.png")
    os.symlink("b", src / "a")
    os.symlink("a", src / "b")
    report, reasons = _ingested("nhfi", src, tmp_path / "out")
    assert report["kept"] == 1 and reasons == dict.fromkeys(["a", "b", "happy/loop.png"], "symlink loop")

    src = tmp_path / "affectnet"
    write_file(src / "Manually_Annotated_Images" / "1" / "ok.jpg", image_bytes("sad", (64, 64), fmt="JPEG"))
    os.symlink("loop.jpg", src / "Manually_Annotated_Images" / "1" / "loop.jpg")
    rows = [AFFECTNET_HEADER, "1/ok.jpg,0,0,64,64,,2,0,0", "1/loop.jpg,0,0,64,64,,1,0,0"]
    write_file(src / "Manually_Annotated_file_lists" / "training.csv", "\n".join(rows).encode())
    report, reasons = _ingested("affectnet", src, tmp_path / "out_affectnet")
    assert report["kept"] == 1 and reasons["1/loop.jpg"] == "symlink loop: subDirectory_filePath 'loop.jpg'"

    src = _casme2(tmp_path / "casme2", [[1, "EP01_01", 1, 2, 3, "", "happiness"], [1, "EP03_01", 1, 2, 3, "", "fear"]])
    os.symlink("EP03_01", src / "CASME2_RAW_selected" / "sub01" / "EP03_01")
    report, reasons = _ingested("casme2", src, tmp_path / "out_casme2")
    assert report["kept"] == 3 and reasons["CASME2-coding-20140508.xlsx:3"] == "symlink loop: Filename 'EP03_01'"


def test_an_oversized_image_is_refused_from_its_size_before_it_is_read(tmp_path):
    src = tmp_path / "nhfi"
    write_file(src / "happy" / "ok.png", image_bytes("happy", (48, 48)))
    with open(src / "happy" / "x.png", "wb") as handle:
        handle.truncate(100 * 2**20)  # sparse: no disk used, but read whole it is 100 MB of memory
    report, reasons = _ingested("nhfi", src, tmp_path / "out")
    assert report["kept"] == 1 and reasons["happy/x.png"] == "too large: 100.0 MB > 64.0 MB"
    report, reasons = _ingested("nhfi", src, tmp_path / "out_1mb", max_file_mb=1)
    assert reasons["happy/x.png"] == "too large: 100.0 MB > 1.0 MB"


TABLES = {
    "fer2013": "fer2013.csv",
    "affectnet": "Manually_Annotated_file_lists/training.csv",
    "casme2": "CASME2-coding-20140508.xlsx",
}


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
@pytest.mark.parametrize("dataset", sorted(TABLES))
def test_a_fifo_or_a_device_given_as_a_table_is_a_one_line_error(tmp_path, dataset, special):
    src = _casme2(tmp_path / "casme2", []) if dataset == "casme2" else tmp_path / dataset
    table = src / TABLES[dataset]
    table.parent.mkdir(parents=True, exist_ok=True)
    table.unlink(missing_ok=True)
    if special == "fifo":
        os.mkfifo(table)  # opened plainly, it blocks until a writer comes: forever
    else:
        os.symlink(special, table)
    kind = "a FIFO" if special == "fifo" else "a character device"
    with at_most(10), pytest.raises(InputError, match=f"not a regular file: {kind}"):
        ingest(dataset, src, tmp_path / "out", IngestConfig(workers=1))
    assert not (tmp_path / "out").exists()


def test_an_overlong_csv_line_is_one_quarantine_row(tmp_path):
    lines = [
        "emotion,pixels,Usage",
        f"3,{pixel_string(1)},Training",
        "3," + "7 " * 100_000,
        f"4,{pixel_string(2)},Training",
    ]
    write_file(tmp_path / "fer2013" / "fer2013.csv", ("\n".join(lines) + "\n").encode())
    report, reasons = _ingested("fer2013", tmp_path / "fer2013", tmp_path / "out")
    assert report["kept"] == 2 and reasons == {"fer2013.csv:3": "malformed row: longer than 65536 bytes"}

    src = tmp_path / "affectnet"
    write_file(src / "Manually_Annotated_Images" / "1" / "ok.jpg", image_bytes("sad", (64, 64), fmt="JPEG"))
    rows = [AFFECTNET_HEADER, "1/ok.jpg,0,0,64,64," + "1;" * 100_000 + ",2,0,0", "1/ok.jpg,0,0,64,64,,2,0,0"]
    write_file(src / "Manually_Annotated_file_lists" / "training.csv", "\n".join(rows).encode())
    report, reasons = _ingested("affectnet", src, tmp_path / "out_affectnet")
    assert report["kept"] == 1 and reasons == {"training.csv:2": "malformed row: longer than 65536 bytes"}


def test_the_same_picture_under_two_labels_is_a_conflict_not_a_duplicate(tmp_path):
    src = tmp_path / "nhfi"
    for rel, identity in [("happy/a.png", 1), ("sad/a.png", 1), ("fear/a.png", 1), ("happy/b.png", 2)]:
        write_file(src / rel, image_bytes("happy", (48, 48), identity=identity))
    write_file(src / "happy" / "b_copy.png", image_bytes("happy", (48, 48), identity=2))
    write_file(src / "happy" / "c.png", image_bytes("happy", (48, 48), identity=3))
    report, reasons = _ingested("nhfi", src, tmp_path / "out")
    assert sorted(Variant(tmp_path / "out").manifest["key"]) == ["happy/b.png", "happy/c.png"]
    assert reasons["happy/b_copy.png"] == "duplicate: same pixels as happy/b.png" and report["duplicates"] == 1
    conflict = "conflicting labels: the same picture is fear/a.png (fear), happy/a.png (happy), sad/a.png (sad)"
    assert [reasons[rel] for rel in ("happy/a.png", "sad/a.png", "fear/a.png")] == [conflict] * 3

    lines = ["emotion,pixels,Usage", f"3,{pixel_string(1)},Training", f"4,{pixel_string(1)},PrivateTest"]
    lines += [f"3,{pixel_string(2)},Training", f"3,{pixel_string(2)},PublicTest", f"5,{pixel_string(3)},Training"]
    write_file(tmp_path / "fer2013" / "fer2013.csv", ("\n".join(lines) + "\n").encode())
    report, reasons = _ingested("fer2013", tmp_path / "fer2013", tmp_path / "out_fer2013")
    assert sorted(Variant(tmp_path / "out_fer2013").manifest["source"]) == ["fer2013.csv:5", "fer2013.csv:6"]
    assert (
        reasons["fer2013.csv:2"].startswith("conflicting labels")
        and reasons["fer2013.csv:3"] == reasons["fer2013.csv:2"]
    )
    assert reasons["fer2013.csv:4"] == "duplicate: same pixels as fer2013.csv:5"
