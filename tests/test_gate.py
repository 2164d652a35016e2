"""The quality gate on real photos shipped inside installed packages (no download): matplotlib's Grace
Hopper portrait and scikit-image's astronaut are faces; scikit-image's coffee cup and scikit-learn's
flower and China photos are not."""

import csv
from importlib.resources import files

import numpy as np
import pytest
from PIL import Image, ImageFilter

from fersynth.generate.gate import Gate, GateConfig, gate_directory

REAL = GateConfig()  # the defaults are meant for real photos


def photo(package: str, path: str) -> Image.Image:
    with Image.open(files(package) / path) as image:
        return image.convert("RGB")


@pytest.fixture(scope="module")
def faces():
    return {
        "hopper": photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
        "astronaut": photo("skimage", "data/astronaut.png"),
    }


@pytest.fixture(scope="module")
def non_faces():
    return {
        "coffee": photo("skimage", "data/coffee.png"),
        "flower": photo("sklearn", "datasets/images/flower.jpg"),
        "china": photo("sklearn", "datasets/images/china.jpg"),
    }


@pytest.fixture(scope="module")
def gate():
    return Gate(REAL)


def test_real_face_photos_are_accepted(gate, faces):
    portrait = faces["astronaut"].crop((100, 0, 400, 300))  # head and shoulders
    for name, image in {"hopper": faces["hopper"], "astronaut portrait": portrait}.items():
        result = gate.check(image)
        assert result.accepted, (name, result)
        assert result.faces == 1 and result.score > 0.9


def test_a_face_too_small_for_a_fer_crop_is_rejected(gate, faces):
    result = gate.check(faces["astronaut"])  # half-body shot: the face is ~17% of the side
    assert (result.accepted, result.reason, result.faces) == (False, "small_face", 1)
    assert result.score < REAL.min_face_size


def test_photos_without_faces_are_rejected(gate, non_faces):
    for name, image in non_faces.items():
        result = gate.check(image)
        assert not result.accepted, (name, result)
        assert result.reason in {"no_face", "small_face"}, (name, result)


def test_two_people_side_by_side_are_rejected(gate, faces):
    left = faces["hopper"].resize((300, 350))
    right = faces["astronaut"].crop((100, 0, 400, 350))
    pair = Image.new("RGB", (600, 350))
    pair.paste(left, (0, 0))
    pair.paste(right, (300, 0))
    result = gate.check(pair)
    assert (result.accepted, result.reason, result.faces) == (False, "multiple_faces", 2)


def test_blank_dark_washed_out_and_blurred_pictures_are_rejected(gate, faces):
    hopper = faces["hopper"]
    assert gate.check(Image.new("RGB", (256, 256), (128, 128, 128))).reason == "blank"
    dark = Image.fromarray((np.asarray(hopper) * 0.12).astype(np.uint8))
    assert gate.check(dark).reason == "dark"
    washed = Image.fromarray((255 - (255 - np.asarray(hopper).astype(float)) * 0.12).astype(np.uint8))
    assert gate.check(washed).reason == "washed_out"
    blurred = hopper.filter(ImageFilter.GaussianBlur(12))
    result = gate.check(blurred)
    assert result.reason == "blurred" and result.score < REAL.blur_below
    assert gate.check(hopper).accepted  # the same photo, untouched, passes


def test_no_detector_skips_the_face_check(non_faces):
    assert Gate(GateConfig(detector="none")).check(non_faces["coffee"]).accepted


def test_gate_directory_writes_one_row_per_image(tmp_path, faces, non_faces):
    folder = tmp_path / "generated"
    (folder / "happy").mkdir(parents=True)
    faces["hopper"].save(folder / "happy" / "a.png")
    non_faces["coffee"].save(folder / "neutral-white-adult-male-s1-a0.png")
    (folder / "broken.png").write_bytes(b"not a png")
    report = gate_directory(folder, tmp_path / "gate.csv", REAL)
    with open(tmp_path / "gate.csv") as handle:
        rows = {r["file"]: r for r in csv.DictReader(handle)}
    assert list(next(iter(rows.values()))) == ["file", "accepted", "reason", "faces", "score"]
    assert rows["happy/a.png"]["accepted"] == "True" and rows["happy/a.png"]["faces"] == "1"
    assert rows["neutral-white-adult-male-s1-a0.png"]["reason"] == "no_face"
    assert rows["broken.png"]["reason"].startswith("unreadable")
    assert (report["images"], report["accepted"], report["reasons"]["no_face"]) == (3, 1, 1)
