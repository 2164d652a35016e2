"""The gate's emotion check: a small FER classifier (``fersynth gate-train``) trained on a real
variant's train split, saved as safetensors + config, that says whether a generated face shows the
emotion its prompt asked for (paper 001 Table 11's "prompt effectiveness", measured instead of eyed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fersynth.atomic import atomic_path, write_json
from fersynth.config import check_seeds
from fersynth.log import get_logger
from fersynth.modeling.architectures import SmallCNN
from fersynth.modeling.checkpoint import load_checkpoint, save_checkpoint
from fersynth.modeling.small_cnn import ModelConfig, predict_proba, train_model
from fersynth.variants.labels import LABEL_SPACES
from fersynth.variants.variant import Variant

log = get_logger(__name__)


@dataclass(frozen=True)
class GateTrainConfig:
    """``configs/gate_train.yaml``."""

    seed: int = 42
    class_weighted: bool = True  # inverse-frequency loss weights: FER2013's rare disgust must still be recognised
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        check_seeds("gate_train", seed=self.seed)


class EmotionClassifier:
    def __init__(self, model: SmallCNN, classes: tuple[str, ...], size: int):
        self.model = model.eval()
        self.classes = classes
        self.size = size

    def predict_proba(self, images: list[Image.Image]) -> np.ndarray:
        """Class probabilities for RGB or grey PIL images of any size (seen as grey ``size`` squares)."""
        array = np.stack(
            [np.asarray(i.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR)) for i in images]
        )
        return predict_proba(self.model, array[:, None])

    def save(self, directory: Path, extra: dict | None = None) -> None:
        channels = [m.out_channels for m in self.model.features if hasattr(m, "out_channels")]
        config = {"classes": list(self.classes), "size": self.size, "channels": channels} | (extra or {})
        with atomic_path(Path(directory), kind="model") as tmp:
            save_checkpoint(tmp, self.model, config)

    @classmethod
    def load(cls, directory: Path) -> EmotionClassifier:
        state, config = load_checkpoint(directory)
        model = SmallCNN(len(config["classes"]), 1, tuple(config["channels"]))
        model.load_state_dict(state)
        return cls(model, tuple(config["classes"]), int(config["size"]))


def gate_train(variant_dir: Path, model_dir: Path, config: GateTrainConfig, metrics_path: Path | None = None) -> dict:
    """Train on the variant's train split, report accuracy on its val and test splits."""
    variant = Variant(variant_dir)
    manifest = variant.manifest.sort_values("key").reset_index(drop=True)
    manifest = manifest[manifest["label"].notna()]
    spaces = set(manifest["label_space"])
    if len(spaces) != 1:
        raise ValueError(f"gate-train needs one label space, found {sorted(spaces)}")
    classes = LABEL_SPACES[spaces.pop()]
    size = config.model.size
    splits = {s: manifest[manifest["split"] == s] for s in ("train", "val", "test")}
    arrays = {s: variant.load_array(rows, size, "L") for s, rows in splits.items()}
    labels = {s: rows["label"].to_numpy(dtype=np.int64) for s, rows in splits.items()}
    weights = None
    if config.class_weighted:
        counts = np.bincount(labels["train"], minlength=len(classes)).astype(np.float64)
        weights = np.where(counts > 0, counts.sum() / (len(classes) * np.maximum(counts, 1)), 0.0)
    model = train_model(
        arrays["train"], labels["train"], len(classes), config.model, config.seed, "gate-train", weights
    )
    classifier = EmotionClassifier(model, classes, size)
    metrics = {"train_images": int(len(labels["train"])), "classes": list(classes)}
    for split in ("val", "test"):
        if len(labels[split]):
            predicted = predict_proba(model, arrays[split]).argmax(1)
            metrics[f"{split}_accuracy"] = round(float((predicted == labels[split]).mean()), 4)
            recalls = [
                float((predicted[labels[split] == c] == c).mean())
                for c in range(len(classes))
                if (labels[split] == c).any()
            ]
            metrics[f"{split}_balanced_accuracy"] = round(float(np.mean(recalls)), 4)
    majority = np.bincount(labels["train"], minlength=len(classes)).argmax()
    metrics["test_majority_baseline"] = round(float((labels["test"] == majority).mean()), 4)
    classifier.save(model_dir, extra={"trained_on": str(variant_dir), "model": asdict(config.model)})
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    log.info("gate-train %s: %s", variant.name, metrics)
    return metrics
