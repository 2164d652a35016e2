"""NHFI and AffectNet (both releases) and UTKFace ingestion."""

import io
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from PIL import Image

from fersynth.ingest import ingest
from fersynth.ingest.common import BadInput
from fersynth.ingest.utkface import parse_name
from fersynth.variants.variant import Variant
from tests.conftest import image_bytes, write_file


def _reasons(out):
    return pd.read_csv(out / "quarantine.csv").set_index("source")["reason"].to_dict()


def test_nhfi_classes_splits_and_bad_inputs(tmp_path):
    src = tmp_path / "nhfi"
    for emotion in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"):
        for i in range(10):
            write_file(src / emotion / f"{i}.png", image_bytes(emotion, (224, 224), identity=i))
    write_file(src / "contempt" / "0.png", image_bytes("neutral", (224, 224), identity=99))
    write_file(src / "happy" / "broken.png", image_bytes()[:40])
    write_file(src / "notes.txt", b"hello")
    write_file(src / "happy" / "copy.png", image_bytes("happy", (224, 224), identity=0))
    report = ingest("nhfi", src, tmp_path / "out")
    manifest = Variant(tmp_path / "out").manifest
    assert report["read"] == 74 and report["kept"] == 70
    assert _reasons(tmp_path / "out") == {
        "contempt/0.png": "rule: class 'contempt' is outside the 7 basic emotions",
        "happy/broken.png": _reasons(tmp_path / "out")["happy/broken.png"],
        "notes.txt": "not an image: suffix .txt",
        "happy/copy.png": "duplicate: same pixels as happy/0.png",
    }
    assert _reasons(tmp_path / "out")["happy/broken.png"].startswith("corrupt image")
    assert report["dropped_by_rule"] == 1 and report["duplicates"] == 1
    # stratified 80/10/10 within every class; native 224x224 grayscale kept
    assert (
        manifest.groupby("emotion")["split"]
        .value_counts()
        .unstack()
        .loc[:, ["train", "val", "test"]]
        .eq([8, 1, 1])
        .all()
        .all()
    )
    assert set(zip(manifest["width"], manifest["height"], manifest["mode"], strict=True)) == {(224, 224, "L")}


def _affectnet_lists(src, rows):
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    write_file(src / "Manually_Annotated_file_lists" / "training.csv", ("\n".join([header, *rows]) + "\n").encode())


def test_affectnet_lists_crop_face_box_and_drop_codes_7_to_10(tmp_path):
    src = tmp_path / "affectnet"
    canvas = Image.new("RGB", (300, 280), (10, 200, 10))
    face = Image.open(io.BytesIO(image_bytes("sad", (224, 224), "RGB")))
    canvas.paste(face, (40, 30))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    for name in ("a", "b", "c", "d", "e", "f", "g"):
        write_file(src / "Manually_Annotated_Images" / "1" / f"{name}.png", buffer.getvalue())
    _affectnet_lists(
        src,
        [
            "1/a.png,40,30,224,224,1.0;2.0,2,0.1,0.2",  # sad
            "1/b.png,40,30,224,224,,7,0,0",  # contempt: rule
            "1/c.png,40,30,224,224,,10,0,0",  # no-face: rule
            "1/d.png,40,30,224,224,,13,0,0",  # unknown code
            "1/e.png,200,200,224,224,,1,0,0",  # box outside the image
            "1/missing.png,0,0,10,10,,1,0,0",  # no such file
            "1/f.png,abc,30,224,224,,1,0,0",  # not a number
            "1/g.png,0,0",  # too few fields
        ],
    )
    report = ingest("affectnet", src, tmp_path / "out")
    variant = Variant(tmp_path / "out")
    ((row, image),) = variant.iter_images()
    assert row["emotion"] == "sad" and row["label"] == 5
    assert image.size == (224, 224)
    assert image.getpixel((0, 0)) != (10, 200, 10)  # the green border was cropped away
    reasons = _reasons(tmp_path / "out")
    assert reasons["1/b.png"] == "rule: expression 7 (contempt) is not a basic emotion"
    assert reasons["1/c.png"] == "rule: expression 10 (no-face) is not a basic emotion"
    assert reasons["1/d.png"] == "unknown label: expression code 13"
    assert reasons["1/e.png"].startswith("bad face box")
    assert reasons["1/missing.png"] == "missing file: image not found"
    assert reasons["1/f.png"] == "malformed row: face_x 'abc' is not a whole number"
    assert reasons["training.csv:9"] == "malformed row: expected 9 fields, got 3"
    assert report["dropped_by_rule"] == 2 and report["read"] == 8 and report["format"] == "lists"


def test_affectnet_folder_release_maps_anger_and_drops_contempt(tmp_path):
    src = tmp_path / "affectnet"
    write_file(src / "anger" / "1.png", image_bytes("angry", (224, 224), "RGB"))
    write_file(src / "contempt" / "2.png", image_bytes("neutral", (224, 224), "RGB"))
    report = ingest("affectnet", src, tmp_path / "out")
    manifest = Variant(tmp_path / "out").manifest
    assert manifest[["emotion", "label"]].values.tolist() == [["angry", 0]]
    assert report["format"] == "folders" and report["dropped_by_rule"] == 1


def test_utkface_names(tmp_path):
    assert parse_name("26_1_2_20170116174525125.jpg.chip.jpg") == (26, "female", "asian")
    for bad in (
        "39_1_20170109150557335.jpg.chip.jpg",
        "x_0_1_2017.jpg",
        "20_2_1_2017.jpg",
        "20_0_5_2017.jpg",
        "200_0_1_2017.jpg",
    ):
        with pytest.raises(BadInput, match="malformed file name"):
            parse_name(bad)


def test_utkface_ingest_keeps_demographics(tmp_path):
    src = tmp_path / "utk"
    names = [
        f"{age}_{g}_{r}_2017010{i}.jpg.chip.jpg"
        for i, (age, g, r) in enumerate([(5, 0, 0), (22, 1, 1), (40, 0, 2), (70, 1, 3), (33, 0, 4)])
    ]
    for i, name in enumerate(names):
        write_file(src / name, image_bytes("neutral", (200, 200), "RGB", "JPEG", identity=i))
    write_file(src / "45_1_20170109.jpg.chip.jpg", image_bytes(fmt="JPEG", identity=50))
    report = ingest("utkface", src, tmp_path / "out")
    manifest = Variant(tmp_path / "out").manifest.set_index("source")
    assert manifest.loc[names[0], ["age", "gender", "age_group", "ethnicity"]].tolist() == [
        5.0,
        "male",
        "child",
        "white",
    ]
    assert manifest.loc[names[3], ["age_group", "ethnicity", "gender"]].tolist() == ["old", "indian", "female"]
    assert manifest["emotion"].isna().all() and (manifest["label_space"] == "none").all()
    assert report["quarantined"] == 1 and report["kept"] == 5


def test_affectnet_validation_list_without_header(tmp_path):
    src = tmp_path / "affectnet"
    write_file(src / "Manually_Annotated_Images" / "1" / "a.png", image_bytes("happy", (224, 224), "RGB"))
    write_file(src / "Manually_Annotated_Images" / "1" / "b.png", image_bytes("sad", (224, 224), "RGB", identity=2))
    lists = src / "Manually_Annotated_file_lists"
    write_file(lists / "validation.csv", b"1/a.png,0,0,224,224,,1,0,0\n1/b.png,0,0,224,224,,2,0,0\n")
    ingest("affectnet", src, tmp_path / "out")
    manifest = Variant(tmp_path / "out").manifest.set_index("source")
    assert manifest["emotion"].to_dict() == {"1/a.png": "happy", "1/b.png": "sad"}


def test_folder_spellings_of_other_releases(tmp_path):
    src = tmp_path / "nhfi"
    for i, folder in enumerate(["happiness", "sadness", "neutrality", "surprised", "fearful", "disgusted", "anger"]):
        write_file(src / folder / "0.png", image_bytes(identity=i))
    ingest("nhfi", src, tmp_path / "out")
    emotions = sorted(Variant(tmp_path / "out").manifest["emotion"])
    assert emotions == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def test_worker_processes_read_a_folder_release_into_the_same_bytes(tmp_path, monkeypatch):
    from fersynth.demo import DemoConfig, make_demo
    from fersynth.ingest import common
    from fersynth.ingest.common import IngestConfig

    monkeypatch.setattr(common, "MIN_FILES_FOR_POOL", 1)  # the pool even for a small release
    monkeypatch.setattr(common, "READ_BATCH_FILES", 7)  # many batches in flight, finishing out of order
    make_demo(DemoConfig(datasets=("affectnet",), affectnet_images=90, affectnet_format="folders"), tmp_path / "demo")
    src = tmp_path / "demo" / "affectnet"
    (src / "happy" / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # quarantined by a worker
    one = ingest("affectnet", src, tmp_path / "one", IngestConfig(workers=1))
    two = ingest("affectnet", src, tmp_path / "two", IngestConfig(workers=2))
    assert one == two and one["quarantined"] >= 3 and one["kept"] > 60
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    for name in files:  # manifest, shards, quarantine list and report, byte for byte
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    reasons = pd.read_csv(tmp_path / "two" / "quarantine.csv").set_index("source")["reason"]
    assert reasons["happy/bomb.png"].startswith("corrupt image")


def test_ingest_workers_die_with_the_stage(tmp_path):
    # DVC or a timeout kills the stage process: its pool workers must not live on holding its output streams
    script = (
        "import os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from fersynth.ingest.common import die_with_parent\n"
        "pool = ProcessPoolExecutor(2, initializer=die_with_parent)\n"
        "pool.submit(time.sleep, 60); pool.submit(time.sleep, 60); time.sleep(1)\n"
        "print(*[p.pid for p in pool._processes.values()], flush=True)\n"
        "time.sleep(60)\n"
    )
    stage = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in stage.stdout.readline().split()]
    assert len(workers) == 2
    stage.kill()
    stage.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead, only not reaped yet
        return stat.read().split(")")[-1].split()[0] != "Z"
