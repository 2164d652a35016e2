"""The quality gate for generated faces (``fersynth gate``, and inside every generation stage).

Paper 001 looked at every generated image and threw away the cartoonish, distorted, dark ones and
those with more than one person; paper 000 asks for this to be automatic. An image passes when, in
this order (the first failure is the reason):

1. it is not blank (grey-level standard deviation), too dark or washed out (mean grey level);
2. it is not blurred (variance of the Laplacian at 256 px);
3. exactly one face is found (MTCNN from ``facenet-pytorch``, whose weights ship in the wheel), with at
   least ``min_face_probability`` and a box covering at least ``min_face_size`` of the image side;
4. when a classifier is configured, the intended emotion is among its ``emotion_top_k`` top classes.

The emotion check gates train rows only (:func:`split_gates`): a test set chosen by a classifier favours
the models that agree with it (sd_artificial's test split, chosen by ``models/gate`` trained on the merged
train split, gave the merged model 61% against 16% for the model trained on sd_artificial itself).

``score`` is the measurement behind the decision: the failing value for a rejection (mean grey level,
Laplacian variance, face probability, the intended emotion's probability); for an acceptance, the face
probability, or the intended emotion's probability when a classifier is configured.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fersynth.atomic import atomic_path
from fersynth.config import at_least, within
from fersynth.log import get_logger, progress
from fersynth.variants.files import read_bounded
from fersynth.variants.images import to_8bit

log = get_logger(__name__)
GATE_COLUMNS = ("file", "accepted", "reason", "faces", "score")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class GateConfig:
    """``configs/gate.yaml``."""

    detector: str = "mtcnn"  # mtcnn | none (skip the face check)
    mtcnn_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # P-, R-, O-net (facenet-pytorch's defaults)
    min_face_probability: float = 0.9
    min_face_size: float = 0.2  # shorter side of the face box / shorter side of the image
    blank_std_below: float = 8.0  # grey-level standard deviation
    dark_below: float = 40.0  # mean grey level, 0-255
    washed_out_above: float = 220.0
    blur_below: float = 15.0  # variance of the Laplacian of the grey image resized to 256 px
    classifier: str = ""  # a model directory saved by `fersynth gate-train`; "" = no emotion check
    emotion_top_k: int = 1  # the intended emotion must be among the classifier's top k classes

    def __post_init__(self) -> None:
        if self.detector not in ("mtcnn", "none"):
            raise ValueError(f"gate.detector must be mtcnn or none, not {self.detector!r}")
        shares = {"min_face_probability": self.min_face_probability, "min_face_size": self.min_face_size}
        within("gate", 0, 1, mtcnn_thresholds=self.mtcnn_thresholds, **shares)
        grey_levels = {"dark_below": self.dark_below, "washed_out_above": self.washed_out_above}
        within("gate", 0, 255, **grey_levels)
        at_least("gate", 0, blank_std_below=self.blank_std_below, blur_below=self.blur_below)
        at_least("gate", 1, emotion_top_k=self.emotion_top_k)


def gate_checks(config: GateConfig) -> list[str]:
    """What a gate with ``config`` checks, as recorded in metrics: ``["quality", "face", "emotion:models/gate"]``
    ("face" only with a detector, "emotion:<model>" only with a classifier)."""
    checks = ["quality"]
    if config.detector != "none":
        checks.append("face")
    if config.classifier:
        checks.append(f"emotion:{config.classifier}")
    return checks


def split_gates(config: GateConfig, splits) -> dict[str, GateConfig]:
    """The gate of each split: ``config`` for train; image quality and face checks only for every other
    split (val and test rows must not be chosen by a model that is later evaluated on them, or by one
    trained on the same data as a compared model).

    >>> {s: gate_checks(c) for s, c in split_gates(GateConfig(classifier="models/gate"), ["train", "test"]).items()}
    {'train': ['quality', 'face', 'emotion:models/gate'], 'test': ['quality', 'face']}
    """
    return {split: config if split == "train" else replace(config, classifier="") for split in splits}


@dataclass(frozen=True)
class GateResult:
    accepted: bool
    reason: (
        str  # ok | blank | dark | washed_out | blurred | no_face | multiple_faces | small_face | emotion:<top> | ...
    )
    faces: int  # faces found (-1: not looked for)
    score: float


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian at 256 px: low for blurred pictures."""
    resized = cv2.resize(grey, (256, 256), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(resized, cv2.CV_64F).var())


class Gate:
    def __init__(self, config: GateConfig):
        self.config = config
        self._detector = None
        self._classifier = None
        if config.classifier:
            from fersynth.generate.gate_classifier import EmotionClassifier

            self._classifier = EmotionClassifier.load(Path(config.classifier))

    @property
    def detector(self):
        if self._detector is None:
            import torch
            from facenet_pytorch import MTCNN

            device = "cuda" if torch.cuda.is_available() else "cpu"
            self._detector = MTCNN(keep_all=True, device=device, thresholds=list(self.config.mtcnn_thresholds))
        return self._detector

    def faces(self, image: Image.Image) -> tuple[int, float, float]:
        """(faces found at the probability threshold, best probability, best box's relative size)."""
        boxes, probabilities = self.detector.detect(image.convert("RGB"))
        if boxes is None:
            return 0, 0.0, 0.0
        probabilities = np.asarray(probabilities, dtype=np.float64)
        confident = probabilities >= self.config.min_face_probability
        best = int(np.argmax(probabilities))
        x0, y0, x1, y1 = (float(v) for v in boxes[best])
        relative = min(x1 - x0, y1 - y0) / min(image.size)
        return int(confident.sum()), float(probabilities[best]), relative

    def check(self, image: Image.Image, emotion: str | None = None) -> GateResult:
        config = self.config
        grey = np.asarray(image.convert("L"))
        std, mean = float(grey.std()), float(grey.mean())
        if std < config.blank_std_below:
            return GateResult(False, "blank", -1, std)
        if mean < config.dark_below:
            return GateResult(False, "dark", -1, mean)
        if mean > config.washed_out_above:
            return GateResult(False, "washed_out", -1, mean)
        sharp = sharpness(grey)
        if sharp < config.blur_below:
            return GateResult(False, "blurred", -1, sharp)
        faces, probability = -1, 1.0
        if config.detector == "mtcnn":
            faces, probability, relative = self.faces(image)
            if faces == 0:
                return GateResult(False, "no_face", 0, probability)
            if faces > 1:
                return GateResult(False, "multiple_faces", faces, probability)
            if relative < config.min_face_size:
                return GateResult(False, "small_face", faces, relative)
        if self._classifier is not None and emotion is not None:
            probabilities = self._classifier.predict_proba([image])[0]
            ranked = [self._classifier.classes[i] for i in np.argsort(-probabilities, kind="stable")]
            intended = float(probabilities[self._classifier.classes.index(emotion)])
            if emotion not in ranked[: config.emotion_top_k]:
                return GateResult(False, f"emotion:{ranked[0]}", faces, intended)
            return GateResult(True, "ok", faces, intended)
        return GateResult(True, "ok", faces, probability)


def gate_directory(in_dir: Path, out_csv: Path, config: GateConfig, emotion_from_name: bool = True) -> dict:
    """Gate every image under ``in_dir``; write ``file, accepted, reason, faces, score`` per image.
    With ``emotion_from_name``, the intended emotion is the file name's first ``-`` field (the
    generators' ``{emotion}-{ethnicity}-{age}-{gender}-...`` names) or the parent folder's name."""
    from fersynth.variants.labels import BASIC7

    gate = Gate(config)
    files = sorted(p for p in Path(in_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    rows = []
    for path in progress(files, desc="gate", unit="img"):
        relative = path.relative_to(in_dir).as_posix()
        emotion = None
        if emotion_from_name:
            for candidate in (path.stem.split("-")[0].lower(), path.parent.name.lower()):
                if candidate in BASIC7:
                    emotion = candidate
                    break
        try:
            with Image.open(io.BytesIO(read_bounded(path))) as opened:  # a FIFO among them: a row, not a hang
                image = to_8bit(opened).convert("RGB")
        except Exception as error:  # unreadable files are reported, not fatal
            rows.append(
                {"file": relative, "accepted": False, "reason": f"unreadable: {error}", "faces": -1, "score": 0}
            )
            continue
        result = gate.check(image, emotion)
        rows.append(
            {
                "file": relative,
                "accepted": result.accepted,
                "reason": result.reason,
                "faces": result.faces,
                "score": round(result.score, 4),
            }
        )
    with atomic_path(Path(out_csv)) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=GATE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    accepted = sum(r["accepted"] for r in rows)
    reasons: dict[str, int] = {}
    for row in rows:
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
    log.info("gate %s: %d images, %d accepted; %s", in_dir, len(rows), accepted, reasons)
    return {"images": len(rows), "accepted": accepted, "reasons": reasons}
