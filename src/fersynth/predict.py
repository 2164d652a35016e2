"""``fersynth predict``: a trained classifier on new pictures and videos (paper 001, Appendix A).

Faces are found with MTCNN (``facenet-pytorch``, weights in its wheel), cropped with a margin, prepared
exactly as in training (:func:`fersynth.modeling.data.model_input`) and classified. Out come
``predictions.csv`` (one row per source, frame and face: box, face probability, emotion and every class
probability; a picture or sampled frame without a face gets one row saying so), annotated copies
(``annotated/``: PNG for pictures, MP4 for videos, boxes and emotions drawn), ``quarantine.csv`` (what could
not be read, and why) and ``summary.json``. Pictures are read with the project's decoder limits, so a
decompression bomb is refused, not decoded.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fersynth.atomic import atomic_path
from fersynth.images import ImageLimits, ImageRejected, decode_image, to_8bit
from fersynth.log import get_logger, progress

log = get_logger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
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
    """A ``fersynth train`` model (an experiment's first trial, or a trial directory) with a face finder."""

    def __init__(self, model_dir: Path, config: PredictConfig):
        from fersynth.errors import InputError
        from fersynth.modeling.trained import load_trained

        try:
            self.model, self.spec, self.classes = load_trained(Path(model_dir))
        except (OSError, ValueError, KeyError) as error:
            raise InputError(f"{model_dir} is not a `fersynth train` model: {error}") from None
        self.config = config
        self._detector = None

    @property
    def detector(self):
        if self._detector is None:
            from facenet_pytorch import MTCNN

            self._detector = MTCNN(keep_all=True, device="cpu")
        return self._detector

    def faces(self, image: Image.Image) -> list[Face]:
        """Faces at or above the probability threshold, left to right; the whole picture without detection."""
        if not self.config.detect:
            return [Face((0, 0, image.width, image.height), 1.0)]
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
        from fersynth.modeling.trained import class_probabilities
        from fersynth.preprocess import Preprocess

        if not faces:
            return np.zeros((0, len(self.classes)))
        preprocess = Preprocess(self.spec.input.preprocess)
        arrays = np.stack([model_input(image.crop(face.box), self.spec.input, preprocess) for face in faces])
        return class_probabilities(self.model, arrays, len(self.classes)).astype(np.float64)

    def read_picture(self, data: bytes) -> Image.Image:
        """A file's or an upload's bytes as an RGB picture, within the decoder limits; a ``ValueError``
        with the reason (too large, not a picture, unsupported pixels) otherwise."""
        try:
            image = decode_image(data, ImageLimits(max_pixels=self.config.max_pixels, min_side=1))
        except ImageRejected:
            raise
        except Exception as error:  # noqa: BLE001 - PIL raises many types for broken files
            raise ValueError(f"not a picture: {error}") from None
        return to_8bit(image).convert("RGB")

    def annotate(self, image: Image.Image, source: str = "") -> tuple[list[dict], Image.Image]:
        """One RGB picture: its prediction rows (as in ``predictions.csv``) and a copy with the boxes and
        emotions drawn."""
        faces = self.faces(image)
        rows = _rows(self, source, "", "", faces, self.probabilities(image, faces))
        return rows, _draw_pil(image, faces, [row["emotion"] for row in rows if row["face"] != ""])


def collect_sources(inputs: list[Path]) -> tuple[list[Path], list[dict]]:
    """Pictures and videos named or found under folders (sorted, recursively); other files are
    quarantined with the reason, not skipped in silence."""
    sources, quarantined = [], []
    for path in inputs:
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for candidate in candidates:
            suffix = candidate.suffix.lower()
            if not candidate.exists():
                quarantined.append({"source": str(candidate), "reason": "no such file"})
            elif suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES:
                sources.append(candidate)
            else:
                reason = f"not a picture or video ({suffix or 'no suffix'})"
                quarantined.append({"source": str(candidate), "reason": reason})
    return sources, quarantined


def predict(model_dir: Path, inputs: list[Path], out_dir: Path, config: PredictConfig) -> dict:
    """Classify every face in ``inputs`` into ``out_dir`` (written atomically); the summary."""
    predictor = Predictor(model_dir, config)
    sources, quarantined = collect_sources([Path(p) for p in inputs])
    read = len(sources) + len(quarantined)
    columns = BASE_COLUMNS + ["probability"] + [f"p_{name}" for name in predictor.classes]
    rows: list[dict] = []
    with atomic_path(Path(out_dir), kind="predictions", inputs=[Path(model_dir), *inputs]) as tmp:
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
            "model": str(model_dir),
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
    rows, picture = predictor.annotate(predictor.read_picture(source.read_bytes()), str(source))
    picture.save(annotated)
    return rows


def _video(predictor: Predictor, source: Path, annotated: Path) -> list[dict]:
    import cv2

    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise ValueError("unreadable video (OpenCV cannot open it)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer, rows, frame_index = None, [], 0
    faces: list[Face] = []
    emotions: list[str] = []
    try:
        while not predictor.config.max_frames or frame_index < predictor.config.max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if writer is None:
                height, width = frame.shape[:2]
                writer = cv2.VideoWriter(str(annotated), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if frame_index % predictor.config.every_nth_frame == 0:
                image = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                faces = predictor.faces(image)
                probabilities = predictor.probabilities(image, faces)
                found = _rows(predictor, str(source), frame_index, round(frame_index / fps, 3), faces, probabilities)
                emotions = [row["emotion"] for row in found if row["face"] != ""]
                rows += found
            for face, emotion in zip(faces, emotions, strict=True):
                x0, y0, x1, y1 = face.box
                cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 2)
                cv2.putText(frame, emotion, (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1)
            writer.write(frame)
            frame_index += 1
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if frame_index == 0:
        raise ValueError("video without a readable frame")
    return rows


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


def _draw_pil(image: Image.Image, faces: list[Face], emotions: list[str]) -> Image.Image:
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(min(image.size) / 200))
    for face, emotion in zip(faces, emotions, strict=True):
        draw.rectangle(face.box, outline=(0, 255, 0), width=line)
        draw.text((face.box[0] + line, max(0, face.box[1] - 12)), emotion, fill=(0, 255, 0))
    return canvas


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def _counts(values) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))
