import pandas as pd
import pytest
from openpyxl import Workbook

from fersynth.ingest import ingest
from fersynth.ingest.common import IngestConfig
from fersynth.variants.labels import CASME2
from fersynth.variants.variant import Variant
from tests.conftest import image_bytes, write_file

HEADER = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]


def _casme(tmp_path, rows, release="CASME2_RAW_selected", pattern="img{}.jpg", skip_frames=()):
    src = tmp_path / "casme2"
    book = Workbook()
    book.active.append(HEADER)
    for row in rows:
        book.active.append(row)
        subject, clip, onset, _, offset = row[:5]
        if not str(subject).isdigit() or not isinstance(onset, int) or not isinstance(offset, int):
            continue
        for frame in range(onset, offset + 1):
            if (clip, frame) in skip_frames:
                continue
            data = image_bytes("happy", (280, 340), "RGB", "JPEG", identity=int(subject) * 100 + frame)
            write_file(src / release / f"sub{int(subject):02d}" / clip / pattern.format(frame), data)
    src.mkdir(exist_ok=True)
    book.save(src / "CASME2-coding-20140508.xlsx")
    return src


ROWS = [
    [s, f"EP0{c}_0{s}", 10 * c, 10 * c + 2, 10 * c + 4, "12", emotion]
    for s in range(1, 11)
    for c, emotion in enumerate(["happiness", "disgust", "others"], start=1)
]


def test_split_is_by_subject_and_all_frames_are_read(tmp_path):
    src = _casme(tmp_path, ROWS)
    report = ingest("casme2", src, tmp_path / "out", IngestConfig(seed=3))
    manifest = Variant(tmp_path / "out").manifest
    assert len(manifest) == 10 * 3 * 5  # onset..offset inclusive
    assert manifest.groupby("subject")["split"].nunique().max() == 1
    assert manifest.groupby("clip")["split"].nunique().max() == 1
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert report["subject_splits"] == manifest.groupby("subject")["split"].first().to_dict()
    assert (manifest["label_space"] == "casme2").all()
    happiness = manifest[manifest["emotion"] == "happiness"]
    assert (happiness["label"] == CASME2.index("happiness")).all()
    assert set(zip(manifest["width"], manifest["height"], strict=True)) == {(280, 340)}


def test_apex_mode_and_missing_apex(tmp_path):
    rows = [
        [1, "EP01_01", 10, 12, 14, "12", "happiness"],
        [2, "EP01_02", 20, "/", 24, "4", "others"],
        [3, "EP01_03", 30, 31, 34, "4", "sadness"],
    ]
    src = _casme(tmp_path, rows)
    ingest("casme2", src, tmp_path / "mid", IngestConfig(casme2_frames="apex"))
    frames = Variant(tmp_path / "mid").manifest.set_index("clip")["frame"].to_dict()
    assert frames == {"EP01_01": 12, "EP01_02": 22, "EP01_03": 31}
    report = ingest("casme2", src, tmp_path / "drop", IngestConfig(casme2_frames="apex", casme2_missing_apex="drop"))
    assert set(Variant(tmp_path / "drop").manifest["clip"]) == {"EP01_01", "EP01_03"}
    assert report["dropped_by_rule"] == 1


def test_bad_rows_and_frames_are_quarantined(tmp_path):
    rows = [
        [1, "EP01_01", 10, 12, 14, "12", "happiness"],
        [2, "EP01_02", 10, 12, 14, "12", "contempt"],
        ["subject?", "EP01_03", 10, 12, 14, "12", "others"],
        [4, "EP01_04", 14, 12, 10, "12", "others"],
        [5, "EP01_05", "ten", 12, 14, "12", "others"],
        [6, "EP01_06", 10, 12, 12, "12", "fear"],
    ]
    src = _casme(tmp_path, rows, skip_frames={("EP01_06", 11)})
    (src / "CASME2_RAW_selected" / "sub01" / "EP01_01" / "img13.jpg").write_bytes(b"")
    report = ingest("casme2", src, tmp_path / "out")
    reasons = pd.read_csv(tmp_path / "out" / "quarantine.csv").set_index("source")["reason"].to_dict()
    assert reasons == {
        "CASME2_RAW_selected/sub01/EP01_01/img13.jpg": "corrupt image: empty file",
        "CASME2-coding-20140508.xlsx:3": "unknown label: Estimated Emotion 'contempt'",
        "CASME2-coding-20140508.xlsx:4": "malformed row: Subject 'subject?'",
        "CASME2-coding-20140508.xlsx:5": "malformed row: frames onset 14, apex 12, offset 10 out of order",
        "CASME2-coding-20140508.xlsx:6": "malformed row: OnsetFrame 'ten' is not a whole number",
        "CASME2_RAW_selected/sub06/EP01_06/img11.jpg": "missing file: frame not found",
    }
    assert report["kept"] == 4 + 2 and report["read"] == report["kept"] + len(reasons)


def test_cropped_release_is_detected(tmp_path):
    src = _casme(tmp_path, ROWS[:3], release="Cropped", pattern="reg_img{}.jpg")
    report = ingest("casme2", src, tmp_path / "out")
    assert report["format"] == "Cropped" and report["kept"] == 15


def test_bad_frame_option_fails_before_work():
    with pytest.raises(ValueError, match="casme2_frames"):
        IngestConfig(casme2_frames="peak")
