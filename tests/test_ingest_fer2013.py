import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fersynth.errors import InputError
from fersynth.ingest import ingest
from fersynth.variants.labels import BASIC7
from fersynth.variants.variant import Variant
from tests.conftest import image_bytes, pixel_string, write_file


def _csv(tmp_path, lines):
    path = tmp_path / "src" / "fer2013.csv"
    path.parent.mkdir(parents=True)
    path.write_text("emotion,pixels,Usage\n" + "\n".join(lines) + "\n")
    return path.parent


def test_csv_codes_are_remapped_by_name_and_usage_gives_split(tmp_path):
    src = _csv(
        tmp_path,
        [
            f"4,{pixel_string(1)},Training",
            f"6,{pixel_string(2)},PublicTest",
            f"0,{pixel_string(3)},PrivateTest",
            f"1,{pixel_string(4)},Training",
        ],
    )
    report = ingest("fer2013", src, tmp_path / "out")
    manifest = Variant(tmp_path / "out").manifest.set_index("source")
    # FER2013's 4 is sad and 6 is neutral; the canonical order is alphabetical
    assert manifest.loc["fer2013.csv:2", ["emotion", "label", "split"]].tolist() == [
        "sad",
        BASIC7.index("sad"),
        "train",
    ]
    assert manifest.loc["fer2013.csv:3", ["emotion", "label", "split"]].tolist() == ["neutral", 4, "val"]
    assert manifest.loc["fer2013.csv:4", ["emotion", "label", "split"]].tolist() == ["angry", 0, "test"]
    assert manifest.loc["fer2013.csv:5", "emotion"] == "disgust"
    assert report["format"] == "csv" and report["kept"] == 4


def test_csv_pixels_survive_exactly(tmp_path):
    pixels = pixel_string(7)
    src = _csv(tmp_path, [f"3,{pixels},Training"])
    ingest("fer2013", src, tmp_path / "out")
    ((_, image),) = Variant(tmp_path / "out").iter_images()
    assert image.size == (48, 48) and image.mode == "L"
    assert np.asarray(image).ravel().tolist() == [int(v) for v in pixels.split()]


def test_csv_malformed_rows_are_quarantined_with_reasons(tmp_path):
    good = pixel_string(1)
    src = _csv(
        tmp_path,
        [
            f"3,{good},Training",
            f"3,{' '.join(['1'] * 2303)},Training",
            f"3,{good.replace(good.split()[5], 'x7', 1)},Training",
            f"3,{' '.join(['256'] * 2304)},Training",
            f"7,{pixel_string(2)},Training",
            f"sad,{pixel_string(3)},Training",
            f"3,{pixel_string(4)},Validation",
            "3,1 2 3",
            f"3,{pixel_string(5)},Training,extra",
        ],
    )
    report = ingest("fer2013", src, tmp_path / "out")
    reasons = pd.read_csv(tmp_path / "out" / "quarantine.csv").set_index("source")["reason"].to_dict()
    assert reasons == {
        "fer2013.csv:3": "malformed pixels: expected 2304 values",
        "fer2013.csv:4": "malformed pixels: a value is not an integer",
        "fer2013.csv:5": "malformed pixels: a value is outside 0-255",
        "fer2013.csv:6": "unknown label: emotion code '7'",
        "fer2013.csv:7": "unknown label: emotion code 'sad'",
        "fer2013.csv:8": "unknown split: Usage 'Validation'",
        "fer2013.csv:9": "malformed row: expected 3 fields, got 2",
        "fer2013.csv:10": "malformed row: expected 3 fields, got 4",
    }
    assert report["read"] == 9 and report["kept"] == 1 and report["kept"] + report["quarantined"] == report["read"]


def test_csv_duplicates_across_usage_keep_the_test_copy(tmp_path):
    same = pixel_string(11)
    src = _csv(tmp_path, [f"3,{same},Training", f"3,{same},PrivateTest", f"3,{same},PublicTest"])
    report = ingest("fer2013", src, tmp_path / "out")
    manifest = Variant(tmp_path / "out").manifest
    assert manifest[["source", "split"]].values.tolist() == [["fer2013.csv:3", "test"]]
    assert report["duplicates"] == 2


def test_icml_column_order_bom_and_crlf(tmp_path):
    path = tmp_path / "src" / "fer2013.csv"
    path.parent.mkdir()
    rows = [f"4, Training,{pixel_string(1)}", f'3, PrivateTest,"{pixel_string(2)}"']
    path.write_bytes(("\ufeffemotion, Usage, pixels\r\n" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    report = ingest("fer2013", path.parent, tmp_path / "out")
    manifest = Variant(tmp_path / "out").manifest
    assert manifest[["emotion", "split"]].values.tolist() == [["sad", "train"], ["happy", "test"]]
    assert report["quarantined"] == 0


def test_csv_wrong_header_is_an_error_not_silence(tmp_path):
    path = tmp_path / "src" / "fer2013.csv"
    path.parent.mkdir()
    path.write_text("label,image\n1,2\n")
    with pytest.raises(InputError, match="header"):
        ingest("fer2013", path.parent, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_folder_release(tmp_path):
    src = tmp_path / "src"
    write_file(src / "train" / "happy" / "Training_1.jpg", image_bytes("happy", fmt="JPEG"))
    write_file(src / "test" / "sad" / "PublicTest_2.jpg", image_bytes("sad", fmt="JPEG"))
    write_file(src / "test" / "fear" / "PrivateTest_3.jpg", image_bytes("fear", fmt="JPEG"))
    write_file(src / "train" / "sad" / "picture.jpg", image_bytes("sad", fmt="JPEG", identity=3))
    write_file(src / "test" / "sad" / "Training_4.jpg", image_bytes("sad", fmt="JPEG", identity=4))
    write_file(src / "train" / "angry" / "Training_5.jpg", b"\xff\xd8\xff garbage")
    write_file(src / "train" / "bored" / "Training_6.jpg", image_bytes("neutral", fmt="JPEG", identity=6))
    report = ingest("fer2013", src, tmp_path / "out")
    manifest = Variant(tmp_path / "out").manifest.set_index("source")
    assert manifest["split"].to_dict() == {
        "test/fear/PrivateTest_3.jpg": "test",
        "test/sad/PublicTest_2.jpg": "val",
        "train/happy/Training_1.jpg": "train",
    }
    reasons = pd.read_csv(tmp_path / "out" / "quarantine.csv").set_index("source")["reason"]
    assert reasons["train/sad/picture.jpg"].startswith("malformed file name")
    assert reasons["test/sad/Training_4.jpg"].startswith("malformed file name")
    assert reasons["train/angry/Training_5.jpg"].startswith("corrupt image")
    assert reasons["train/bored/Training_6.jpg"] == "unknown label: folder 'bored'"
    assert report["format"] == "folders" and report["read"] == 7
    ((_, image),) = Variant(tmp_path / "out").iter_images(Variant(tmp_path / "out").manifest.head(1))
    assert isinstance(image, Image.Image) and image.size == (48, 48)


def test_images_keep_native_bytes_in_folder_release(tmp_path):
    data = image_bytes("happy", fmt="JPEG")
    write_file(tmp_path / "src" / "train" / "happy" / "Training_1.jpg", data)
    ingest("fer2013", tmp_path / "src", tmp_path / "out")
    ((_, stored),) = Variant(tmp_path / "out").iter_bytes()
    assert stored == data
    assert Image.open(io.BytesIO(stored)).format == "JPEG"
