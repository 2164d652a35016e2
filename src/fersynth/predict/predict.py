"""``fersynth predict``: a trained classifier on new pictures and videos (paper 001, Appendix A).

The classifier is ``fer`` (the ``fer`` package's FER2013 network: real faces) or a ``fersynth train`` model
(the trial the MLflow registry calls best), see :mod:`fersynth.predict.face_models`. Faces are found with MTCNN
(``facenet-pytorch``, weights in its wheel), cropped with a margin, prepared exactly as the model was trained
(:func:`fersynth.modeling.data.model_input`) and classified. Out come ``predictions.csv`` (one row per source,
frame and face: box, face probability, emotion and every class probability; a picture or sampled frame without
a face gets one row saying so), annotated copies (``annotated/``: PNG for pictures, MP4 for videos, boxes and
"emotion probability" labels drawn), ``quarantine.csv`` (what could not be read, and why) and ``summary.json``
(which model ran, what it was trained on and what that means for these pictures). Pictures are read with the
project's decoder limits, so a decompression bomb is refused, not decoded; every file's type and size are
checked before it is opened for reading (a FIFO or ``/dev/zero`` is quarantined, not read), and a video's frame
size is checked from its header before a frame is decoded.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fersynth.atomic import atomic_path
from fersynth.log import get_logger, progress
from fersynth.variants.files import MAX_FILE_BYTES, FileRejected, check_regular, read_bounded
from fersynth.variants.images import ImageLimits, ImageRejected, check_size, decode_image, to_8bit

log = get_logger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
# A video is streamed frame by frame, never read whole: its cap only refuses a sparse file of absurd size.
MAX_VIDEO_BYTES = 64 * 2**30
# MTCNN's smallest face (its min_face_size, passed explicitly below): on a picture with a shorter side its image
# pyramid is empty and detection fails inside torch.cat, so such pictures are refused before detection.
MIN_FACE_SIDE = 20
BASE_COLUMNS = ["source", "frame", "time_s", "face", "x0", "y0", "x1", "y1", "face_probability", "emotion", "note"]


@dataclass(frozen=True)
class PredictConfig:
    detect: bool = True  # False: every picture is one face already (e.g. FER2013's 48 px crops)
    min_face_probability: float = 0.9
    margin: float = 0.1  # the box grows by this share of its size on every side before cropping
    every_nth_frame: int = 1  # videos: classify every n-th frame (boxes are drawn on all of them)
    max_frames: int = 0  # videos: stop after this many frames (0: all)
    max_pixels: int = 40_000_000  # larger pictures are quarantined: 'too large'

    def __post_init__(self) -> None:
        if not 0 <= self.min_face_probability <= 1 or self.margin < 0:
            raise ValueError("min_face_probability is in [0, 1] and margin >= 0")
        if self.every_nth_frame < 1 or self.max_frames < 0:
            raise ValueError("every_nth_frame >= 1 and max_frames >= 0")


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the source picture
    probability: float


class Predictor:
    """An emotion classifier (:func:`fersynth.predict.face_models.load_face_model`) with a face finder."""

    def __init__(self, model: str | Path, config: PredictConfig):
        from fersynth.predict.face_models import load_face_model

        self.model = load_face_model(model)
        self.classes: tuple[str, ...] = tuple(self.model.classes)
        self.info = self.model.info
        self.config = config
        self.limits = ImageLimits(max_pixels=config.max_pixels, min_side=MIN_FACE_SIDE if config.detect else 1)
        self._detector = None

    @property
    def detector(self):
        if self._detector is None:
            from facenet_pytorch import MTCNN

            self._detector = MTCNN(keep_all=True, device="cpu", min_face_size=MIN_FACE_SIDE)
        return self._detector

    def faces(self, image: Image.Image) -> list[Face]:
        """Faces at or above the probability threshold, left to right; the whole picture without detection.
        A picture outside :attr:`limits` raises :class:`ImageRejected` with a short reason (MTCNN's own error on a
        thin picture is a torch.cat message)."""
        if not self.config.detect:
            return [Face((0, 0, image.width, image.height), 1.0)]
        check_size(image.size, self.limits)
        boxes, probabilities = self.detector.detect(image.convert("RGB"))
        if boxes is None:
            return []
        found = []
        for box, probability in zip(boxes, probabilities, strict=True):
            if probability is None or probability < self.config.min_face_probability:
                continue
            x0, y0, x1, y1 = (float(v) for v in box)
            grow_x, grow_y = (x1 - x0) * self.config.margin, (y1 - y0) * self.config.margin
            clamped = (
                max(0, int(round(x0 - grow_x))),
                max(0, int(round(y0 - grow_y))),
                min(image.width, int(round(x1 + grow_x))),
                min(image.height, int(round(y1 + grow_y))),
            )
            if clamped[2] - clamped[0] >= 2 and clamped[3] - clamped[1] >= 2:
                found.append(Face(clamped, float(probability)))
        return sorted(found, key=lambda face: face.box)

    def probabilities(self, image: Image.Image, faces: list[Face]) -> np.ndarray:
        """Class probabilities, one row per face, from crops prepared as in training."""
        from fersynth.modeling.data import model_input
        from fersynth.modeling.preprocess import Preprocess

        if not faces:
            return np.zeros((0, len(self.classes)))
        prepared = self.model.input
        preprocess = Preprocess(prepared.preprocess)
        arrays = np.stack([model_input(image.crop(face.box), prepared, preprocess) for face in faces])
        return self.model.probabilities(arrays)

    def read_picture(self, data: bytes) -> Image.Image:
        """A file's or an upload's bytes as an RGB picture, within :attr:`limits` (checked from the header,
        before decoding); a ``ValueError`` with the reason (too large, too small, not a picture, unsupported
        pixels) otherwise."""
        try:
            image = decode_image(data, self.limits)
        except ImageRejected:
            raise
        except Exception as error:  # noqa: BLE001 - PIL raises many types for broken files
            raise ValueError(f"not a picture: {error}") from None
        return to_8bit(image).convert("RGB")

    def annotate(self, image: Image.Image, source: str = "") -> tuple[list[dict], Image.Image]:
        """One RGB picture: its prediction rows (as in ``predictions.csv``) and a copy with the boxes and
        labels drawn."""
        faces = self.faces(image)
        rows = _rows(self, source, "", "", faces, self.probabilities(image, faces))
        return rows, draw_labels(image, faces, _labels(rows))


def collect_sources(inputs: list[Path]) -> tuple[list[Path], list[dict]]:
    """Pictures and videos named or found under folders (sorted, recursively). Every other entry met (a
    dangling link, a link loop, a FIFO, a device, a link to a folder, a file of another kind) is quarantined
    with the reason, never skipped in silence: read = predicted + quarantined."""
    sources, quarantined = [], []
    for path in inputs:
        for candidate, problem in _walk(path) if path.is_dir() else [(path, "")]:
            reason = problem or _refusal(candidate)
            if reason:
                quarantined.append({"source": str(candidate), "reason": reason})
            else:
                sources.append(candidate)
    return sources, quarantined


def _walk(folder: Path) -> Iterator[tuple[Path, str]]:
    """Every entry under ``folder`` but its subfolders, sorted, each with "" or why it cannot be a source. Links
    to folders are not followed (a link to a parent would never end); files behind links are."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        yield folder, f"unreadable folder: {error.strerror or error}"
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)
        elif entry.is_symlink() and path.is_dir():
            yield path, "a link to a folder: links inside a folder are not followed"
        else:
            yield path, ""


def _refusal(candidate: Path) -> str:
    """Why ``candidate`` is not a source ("" when it is one): its type and size from ``stat`` (which never
    blocks, unlike opening a FIFO), then its suffix."""
    suffix = candidate.suffix.lower()
    try:
        check_regular(candidate, MAX_VIDEO_BYTES if suffix in VIDEO_SUFFIXES else MAX_FILE_BYTES)
    except FileRejected as error:
        return str(error)
    if suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES:
        return ""
    return f"not a picture or video ({suffix or 'no suffix'})"


def predict(model: str | Path, inputs: list[Path], out_dir: Path, config: PredictConfig) -> dict:
    """Classify every face in ``inputs`` with ``model`` (``fer`` or a ``fersynth train`` model directory) into
    ``out_dir`` (written atomically); the summary."""
    predictor = Predictor(model, config)
    sources, quarantined = collect_sources([Path(p) for p in inputs])
    read = len(sources) + len(quarantined)
    columns = BASE_COLUMNS + ["probability"] + [f"p_{name}" for name in predictor.classes]
    rows: list[dict] = []
    with atomic_path(Path(out_dir), kind="predictions", inputs=[predictor.model.path, *inputs]) as tmp:
        annotated = tmp / "annotated"
        annotated.mkdir(parents=True)
        for index, source in enumerate(progress(sources, desc="predict", unit="file")):
            name = f"{index:04d}_{source.stem}"
            try:
                if source.suffix.lower() in VIDEO_SUFFIXES:
                    rows += _video(predictor, source, annotated / f"{name}.mp4")
                else:
                    rows += _picture(predictor, source, annotated / f"{name}.png")
            except (OSError, ValueError) as error:  # ImageRejected is a ValueError
                quarantined.append({"source": str(source), "reason": " ".join(str(error).split())})
                for partial in annotated.glob(f"{name}.*"):
                    partial.unlink()
        _write_csv(tmp / "predictions.csv", columns, rows)
        _write_csv(tmp / "quarantine.csv", ["source", "reason"], quarantined)
        summary = {
            "model": asdict(predictor.info),
            "classes": list(predictor.classes),
            "read": read,
            "kept": read - len(quarantined),
            "quarantined": len(quarantined),
            "faces": sum(1 for row in rows if row["face"] != ""),
            "without_face": sum(1 for row in rows if row["face"] == ""),
            "emotions": _counts(row["emotion"] for row in rows if row["emotion"]),
            "config": asdict(config),
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("predict: model %s (%s): %s", predictor.info.name, predictor.info.weights, predictor.info.caveat)
    log.info(
        "predict: read %d, kept %d, quarantined %d; %d face(s), %d picture(s)/frame(s) without one -> %s",
        summary["read"],
        summary["kept"],
        summary["quarantined"],
        summary["faces"],
        summary["without_face"],
        out_dir,
    )
    return summary


def _picture(predictor: Predictor, source: Path, annotated: Path) -> list[dict]:
    # bounded, non-blocking: the file may have become a FIFO or grown since it was collected
    rows, picture = predictor.annotate(predictor.read_picture(read_bounded(source, MAX_FILE_BYTES)), str(source))
    picture.save(annotated)
    return rows


def _video(predictor: Predictor, source: Path, annotated: Path) -> list[dict]:
    import cv2

    check_regular(source, MAX_VIDEO_BYTES)  # again, right before OpenCV opens it: opening a FIFO would block
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise ValueError("unreadable video (OpenCV cannot open it)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer, rows, frame_index = None, [], 0
    faces: list[Face] = []
    labels: list[str] = []
    try:
        _check_frame_size(predictor, capture)
        while not predictor.config.max_frames or frame_index < predictor.config.max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if writer is None:
                height, width = frame.shape[:2]
                check_size((width, height), predictor.limits)  # a container whose header gave no size
                writer = cv2.VideoWriter(str(annotated), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if frame_index % predictor.config.every_nth_frame == 0:
                image = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                faces = predictor.faces(image)
                probabilities = predictor.probabilities(image, faces)
                found = _rows(predictor, str(source), frame_index, round(frame_index / fps, 3), faces, probabilities)
                labels = _labels(found)
                rows += found
            if faces:  # the same drawing as on pictures, in RGB
                drawn = draw_labels(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)), faces, labels)
                frame = cv2.cvtColor(np.asarray(drawn), cv2.COLOR_RGB2BGR)
            writer.write(frame)
            frame_index += 1
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if frame_index == 0:
        raise ValueError("video without a readable frame")
    return rows


def _check_frame_size(predictor: Predictor, capture) -> None:
    """The frame size from the container's header (no frame decoded yet) within the predictor's limits: an
    8000x8000 MJPG AVI of 780 KB is refused before its first 192 MB frame. A header without a size (0) is
    checked on the first frame instead."""
    import cv2

    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width > 0 and height > 0:
        check_size((width, height), predictor.limits)


def _rows(predictor, source, frame, time_s, faces: list[Face], probabilities: np.ndarray) -> list[dict]:
    empty = {"source": source, "frame": frame, "time_s": time_s}
    if not faces:
        blank = dict.fromkeys(BASE_COLUMNS[3:], "") | {"note": "no face found"}
        return [empty | blank | {"probability": ""} | {f"p_{c}": "" for c in predictor.classes}]
    rows = []
    for number, (face, row) in enumerate(zip(faces, probabilities, strict=True)):
        best = int(np.argmax(row))
        rows.append(
            empty
            | dict(zip(("x0", "y0", "x1", "y1"), face.box, strict=True))
            | {
                "face": number,
                "face_probability": round(face.probability, 4),
                "emotion": predictor.classes[best],
                "note": "",
                "probability": round(float(row[best]), 4),
            }
            | {f"p_{c}": round(float(p), 4) for c, p in zip(predictor.classes, row, strict=True)}
        )
    return rows


def _labels(rows: list[dict]) -> list[str]:
    """``"happy 0.97"`` per face row (rows of pictures without a face give none)."""
    return [f"{row['emotion']} {row['probability']:.2f}" for row in rows if row["face"] != ""]


BOX_COLOUR = (0, 255, 0)
TEXT_COLOUR = (0, 0, 0)


def draw_labels(image: Image.Image, faces: list[Face], labels: list[str]) -> Image.Image:
    """A copy of ``image`` with a green box around each face and its label in black on a green band above the
    box (inside it when the box touches the top), in a TrueType font sized to the box: readable on a large
    photo and on a 48 px crop alike."""
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(min(image.size) / 200))
    for face, label in zip(faces, labels, strict=True):
        x0, y0, x1, y1 = face.box
        draw.rectangle(face.box, outline=BOX_COLOUR, width=line)
        font = label_font(max(10, round(0.16 * (x1 - x0))))
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        pad = max(1, font.size // 8)
        height = bottom - top + 2 * pad
        width = right - left + 2 * pad
        band_left = max(0, min(x0, image.width - width))  # a face at the right edge keeps its label in view
        band_top = y0 - height if y0 >= height else y0
        draw.rectangle((band_left, band_top, band_left + width, band_top + height), fill=BOX_COLOUR)
        draw.text((band_left + pad - left, band_top + pad - top), label, fill=TEXT_COLOUR, font=font)
    return canvas


@functools.lru_cache(maxsize=64)
def label_font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans Bold at ``size`` px: the TrueType font matplotlib ships (found in its data folder, not by
    searching the system, so every machine draws the same labels); Pillow's own scalable font without it."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    if path.is_file():
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def _counts(values) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))
