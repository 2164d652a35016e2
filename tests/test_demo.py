import hashlib
import time

import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook
from PIL import Image

from fersynth.demo import DemoConfig, make_demo
from fersynth.demo.sampling import Nuisances
from fersynth.ingest import ingest
from fersynth.ingest.utkface import parse_name
from fersynth.variants.variant import Variant


def _tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    config = DemoConfig(datasets=("fer2013", "casme2"), fer2013_rows=40, casme2_subjects=2, casme2_clips_per_subject=2)
    make_demo(config, tmp_path / "a")
    time.sleep(1.1)  # file formats that stamp the time (xlsx) must not change the bytes
    make_demo(config, tmp_path / "b")
    make_demo(DemoConfig(**{**config.__dict__, "seed": 1}), tmp_path / "c")
    assert _tree_digest(tmp_path / "a" / "fer2013") == _tree_digest(tmp_path / "b" / "fer2013")
    assert _tree_digest(tmp_path / "a" / "casme2") == _tree_digest(tmp_path / "b" / "casme2")
    assert _tree_digest(tmp_path / "a" / "fer2013") != _tree_digest(tmp_path / "c" / "fer2013")


def test_native_formats(tiny_demo):
    header = (tiny_demo / "fer2013" / "fer2013.csv").read_text().splitlines()[:2]
    assert header[0] == "emotion,pixels,Usage"
    emotion, pixels, usage = header[1].split(",")
    assert (
        int(emotion) in range(7) and len(pixels.split()) == 2304 and usage in {"Training", "PublicTest", "PrivateTest"}
    )
    nhfi = next((tiny_demo / "nhfi" / "happy").glob("*.png"))
    assert Image.open(nhfi).size == (224, 224) and Image.open(nhfi).mode == "L"
    lists = (tiny_demo / "affectnet" / "Manually_Annotated_file_lists" / "training.csv").read_text().splitlines()
    assert lists[0].startswith("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression")
    sheet = load_workbook(tiny_demo / "casme2" / "CASME2-coding-20140508.xlsx").active
    assert [c.value for c in sheet[1]] == [
        "Subject",
        "Filename",
        "OnsetFrame",
        "ApexFrame",
        "OffsetFrame",
        "Action Units",
        "Estimated Emotion",
    ]
    frame = next((tiny_demo / "casme2" / "CASME2_RAW_selected").rglob("img*.jpg"))
    assert Image.open(frame).size == (280, 340) and Image.open(frame).mode == "RGB"
    names = [p.name for p in (tiny_demo / "utkface" / "UTKFace").glob("*.jpg.chip.jpg")]
    assert sum(1 for n in names if _parses(n)) >= 60


def _parses(name):
    try:
        parse_name(name)
    except Exception:
        return False
    return True


def test_ground_truth_matches_what_ingest_keeps(tiny_demo, tmp_path):
    report = ingest("fer2013", tiny_demo / "fer2013", tmp_path / "fer2013")
    truth = pd.read_csv(tiny_demo / "ground_truth" / "fer2013.csv").set_index("source")
    manifest = Variant(tmp_path / "fer2013").manifest.set_index("source")
    joined = manifest.merge(truth, how="left", left_index=True, right_index=True, suffixes=("", "_true"))
    assert joined["given_emotion"].notna().all()  # every kept image has its truth
    assert (joined["emotion"] == joined["given_emotion"]).all()
    flipped = joined["flipped"].astype(bool)
    assert (joined.loc[flipped, "emotion"] != joined.loc[flipped, "true_emotion"]).all()
    assert 0.03 < flipped.mean() < 0.2  # label_noise 0.1
    planted = truth["corrupt"].fillna(False).astype(bool)
    assert planted.sum() == report["bad_input"]
    assert truth["duplicate"].fillna(False).astype(bool).sum() == report["duplicates"]


def test_no_nuisances_means_clean_data(tmp_path):
    clean = Nuisances(
        label_noise=0, blur=0, occlusion=0, low_light=0, duplicates=0, unrecognisable=0, corrupt=0, malformed=0
    )
    make_demo(DemoConfig(datasets=("nhfi",), nhfi_images=30, nuisances=clean), tmp_path)
    truth = pd.read_csv(tmp_path / "ground_truth" / "nhfi.csv")
    report = ingest("nhfi", tmp_path / "nhfi", tmp_path / "out")
    assert report["kept"] == 30 and report["quarantined"] == 1  # only the README.txt beside the folders
    assert not truth["flipped"].fillna(False).astype(bool).any()


def test_folder_releases_roundtrip_through_ingest(tmp_path):
    config = DemoConfig(
        datasets=("fer2013", "affectnet"),
        fer2013_rows=80,
        fer2013_format="folders",
        affectnet_images=60,
        affectnet_format="folders",
    )
    make_demo(config, tmp_path)
    for dataset in ("fer2013", "affectnet"):
        report = ingest(dataset, tmp_path / dataset, tmp_path / "out" / dataset)
        truth = pd.read_csv(tmp_path / "ground_truth" / f"{dataset}.csv")
        planted = truth["corrupt"].fillna(False).astype(bool)
        assert report["format"] == "folders"
        assert report["read"] == len(truth)
        assert report["quarantined"] == planted.sum() + report["duplicates"]
        manifest = Variant(tmp_path / "out" / dataset).manifest.set_index("source")
        given = truth.set_index("source")["given_emotion"]
        assert (manifest["emotion"] == given.reindex(manifest.index)).all()


def test_expressions_are_learnable(tmp_path):
    """The demo must carry real signal: a linear model on raw pixels beats the majority class by far."""
    from sklearn.linear_model import LogisticRegression

    clean = Nuisances(
        label_noise=0, blur=0, occlusion=0, low_light=0, duplicates=0, unrecognisable=0, corrupt=0, malformed=0
    )
    make_demo(DemoConfig(datasets=("fer2013",), fer2013_rows=700, nuisances=clean), tmp_path / "demo")
    ingest("fer2013", tmp_path / "demo" / "fer2013", tmp_path / "out")
    variant = Variant(tmp_path / "out")
    pixels, labels, splits = [], [], []
    for row, image in variant.iter_images():
        pixels.append(np.asarray(image.resize((24, 24)), dtype=np.float32).ravel() / 255)
        labels.append(row["label"])
        splits.append(row["split"])
    pixels, labels, train = np.array(pixels), np.array(labels), np.array(splits) == "train"
    model = LogisticRegression(max_iter=300).fit(pixels[train], labels[train])
    accuracy = model.score(pixels[~train], labels[~train])
    majority = np.bincount(labels[~train]).max() / (~train).sum()
    assert accuracy > majority + 0.25, (accuracy, majority)


def test_usage_shares_move_fer2013_rows_between_the_splits_and_bad_shares_are_refused(tmp_path):
    """`demo.fer2013_usage` decides how many rows Kaggle's Usage puts in train, val and test (a larger test
    split is what gives comparisons power); the default is Kaggle's 80/10/10."""
    clean = Nuisances(
        label_noise=0, blur=0, occlusion=0, low_light=0, duplicates=0, unrecognisable=0, corrupt=0, malformed=0
    )
    splits = {}
    for name, usage in (("kaggle", (0.8, 0.1, 0.1)), ("wide_test", (0.5, 0.1, 0.4))):
        make_demo(
            DemoConfig(datasets=("fer2013",), fer2013_rows=200, fer2013_usage=usage, nuisances=clean), tmp_path / name
        )
        ingest("fer2013", tmp_path / name / "fer2013", tmp_path / name / "out")
        splits[name] = Variant(tmp_path / name / "out").manifest["split"].value_counts()
    assert splits["kaggle"].sum() == splits["wide_test"].sum() == 200
    assert splits["kaggle"]["train"] > 140 and splits["kaggle"]["test"] < 35  # about 160 / 20 / 20
    assert 50 < splits["wide_test"]["test"] < 110 and splits["wide_test"]["train"] < 125  # about 100 / 20 / 80
    for bad in ((0.8, 0.1), (0.9, 0.1, 0.1), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)):
        with pytest.raises(ValueError, match="fer2013_usage is three shares"):
            DemoConfig(fer2013_usage=bad)
