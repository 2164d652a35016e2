"""``fersynth smote``: the smote-balanced variant of paper 004, built from a train split only.

1. minority classes get image-generator augmentations of their own train images;
2. SMOTE (imbalanced-learn) oversamples every class below the target on flattened pixels;
3. random undersampling trims every class above it.

The SMOTE-only arm (``configs/smote_only.yaml``: no augmentation, target = the largest class) skips 1 and 3,
so a comparison with the baseline measures SMOTE, not paper 004's whole pipeline (whose undersampling alone
removes a fifth of the demo's FER2013 train rows).
Val and test rows are copied byte for byte from the source variant, so no synthetic row and no
information from val/test can reach training (paper 004 applied SMOTE before splitting). Every
synthetic row records its generator and parents.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from PIL import Image

from fersynth.config import at_least, check_seeds
from fersynth.generate.smote_augment import ImageGeneratorConfig, augment, image_generator
from fersynth.log import get_logger, progress, summarize
from fersynth.variants.png import encode_gray8
from fersynth.variants.variant import Variant, VariantWriter, raw_sha256

log = get_logger(__name__)


@dataclass(frozen=True)
class SmoteConfig:
    """``configs/smote.yaml`` (or ``smote_only``). ``target_per_class`` is the train count every class ends
    with (0: the largest class's count, so nothing is undersampled: SMOTE alone when ``augment_copies`` is 0
    too); ``augment_copies`` is how many image-generator copies each minority image may get (before SMOTE
    fills the rest); ``size`` is the (square) side images are resized to for SMOTE."""

    seed: int = 42
    target_per_class: int = 4000
    augment_copies: int = 1
    k_neighbors: int = 5
    size: int = 48
    augment: ImageGeneratorConfig = field(default_factory=ImageGeneratorConfig)

    def __post_init__(self) -> None:
        if self.target_per_class < 0 or self.augment_copies < 0 or self.k_neighbors < 1:
            raise ValueError("k_neighbors must be >= 1, target_per_class and augment_copies >= 0")
        check_seeds("smote", seed=self.seed)
        at_least("smote", 1, size=self.size)


class ParentTrackingSMOTE(SMOTE):
    """SMOTE that remembers, for each synthetic sample, the two real samples it interpolates.

    imbalanced-learn draws ``X[row] + step * (X[neighbour] - X[row])`` inside ``_generate_samples``;
    we record (class, row, neighbour, step) there (``tests/test_smote.py`` checks the identity)."""

    def _generate_samples(self, X, nn_data, nn_num, rows, cols, steps, y_type=None, y=None):
        self.parents_.append((y_type, np.asarray(rows), np.asarray(nn_num[rows, cols]), np.asarray(steps).ravel()))
        return super()._generate_samples(X, nn_data, nn_num, rows, cols, steps, y_type, y)

    def fit_resample(self, X, y, **params):
        self.parents_: list = []
        return super().fit_resample(X, y, **params)

    def synthetic_parents(self, y: np.ndarray) -> list[tuple[int, int, float]]:
        """(index of base sample in X, index of neighbour in X, step) per synthetic sample, in the
        order imbalanced-learn appends them."""
        out = []
        for label, rows, neighbours, steps in self.parents_:
            members = np.flatnonzero(y == label)
            out += list(zip(members[rows].tolist(), members[neighbours].tolist(), steps.tolist(), strict=True))
        return out


def _pixels(image: Image.Image, size: int) -> np.ndarray:
    image = image.convert("L")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def build_smote_variant(source_dir: Path, out_dir: Path, config: SmoteConfig) -> dict:
    """Write the balanced variant; returns its report (per-class counts before and after)."""
    import torch

    source = Variant(source_dir)
    manifest = source.manifest
    train = manifest[manifest["split"] == "train"].sort_values("key")
    with VariantWriter(out_dir, report_name="smote.json", inputs=(source_dir,)) as writer:
        # 0. val and test: copied unchanged
        for row, data in source.iter_bytes(manifest[manifest["split"] != "train"]):
            writer.copy(row, data)
        # 1. real train images as arrays
        keys, labels, arrays, originals = [], [], [], {}
        for row, image in progress(source.iter_images(train), desc="smote: read train", total=len(train)):
            keys.append(row["key"])
            labels.append(int(row["label"]))
            arrays.append(_pixels(image, config.size))
            originals[row["key"]] = row
        before = Counter(labels)
        if config.target_per_class == 0:  # every class up to the largest: nothing undersampled
            config = replace(config, target_per_class=max(before.values()))
        # 2. image-generator augmentation of minority classes
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        generated = _augment_minorities(arrays, labels, keys, config, rng)
        all_keys = keys + [g["key"] for g in generated]
        X = np.stack(arrays + [g["pixels"] for g in generated]).reshape(len(all_keys), -1)
        y = np.array(labels + [g["label"] for g in generated])
        # 3. SMOTE up to the target
        smoted = _smote(X, y, all_keys, config)
        _unique_pixels(smoted, X, y, config)
        # 4. random undersampling of real train rows in classes above the target (no class above the
        #    target received synthetic rows)
        dropped = _undersample(keys, labels, config, rng)
        for row, data in source.iter_bytes(train[~train["key"].isin(dropped)]):
            writer.copy(row, data)
        for key in sorted(dropped):
            writer.reject(originals[key]["source"], "rule: undersampled to target_per_class", "rule")
        for item in generated + smoted:
            _add_synthetic(writer, item, config)
        after = Counter(r["label"] for r in writer.rows if r["split"] == "train")
        report = writer.commit(
            {
                "source": str(source_dir),
                "target_per_class": config.target_per_class,
                "train_before": _named(before, manifest),
                "train_after": _named(after, manifest),
                "augmented": len(generated),
                "smote": len(smoted),
            }
        )
    summarize(log, "smote", report)
    return report


def _augment_minorities(
    arrays: list[np.ndarray], labels: list[int], keys: list[str], config: SmoteConfig, rng: np.random.Generator
) -> list[dict]:
    """Image-generator copies of random images of each class below the target (at most
    ``augment_copies`` per image on average, never past the target)."""
    transform = image_generator((config.size, config.size), config.augment)
    generated = []
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        wanted = min(config.target_per_class - len(members), len(members) * config.augment_copies)
        for n, index in enumerate(rng.choice(members, size=max(wanted, 0), replace=True)):
            pixels = np.asarray(augment(Image.fromarray(arrays[index], "L"), transform), dtype=np.uint8)
            generated.append(
                {
                    "pixels": pixels,
                    "label": label,
                    "generator": "image_generator",
                    "parent": keys[index],
                    "key": f"augment/{label}/{n:06d}",
                }
            )
    return generated


def _smote(X: np.ndarray, y: np.ndarray, keys: list[str], config: SmoteConfig) -> list[dict]:
    """SMOTE rows for every class below the target, each naming its two parents."""
    counts = Counter(y.tolist())
    grow = {c: config.target_per_class for c, n in counts.items() if n < config.target_per_class}
    if not grow:
        return []
    k = min(config.k_neighbors, min(counts[c] for c in grow) - 1)
    if k < 1:
        raise ValueError(f"a class has a single train image; SMOTE needs two (counts {dict(counts)})")
    smote = ParentTrackingSMOTE(sampling_strategy=grow, k_neighbors=k, random_state=config.seed)
    # float: imbalanced-learn subtracts neighbours, which wraps around in uint8
    X_res, y_res = smote.fit_resample(X.astype(np.float32), y)
    rows = []
    for n, ((a, b, step), pixels, label) in enumerate(
        zip(smote.synthetic_parents(y), X_res[len(X) :], y_res[len(X) :], strict=True)
    ):
        rows.append(
            {
                "pixels": np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(config.size, -1),
                "label": int(label),
                "generator": "smote",
                "parent": f"{keys[a]};{keys[b]}",
                "key": f"smote/{int(label)}/{n:06d}",
                "step": step,
                "parent_index": (a, b),
            }
        )
    return rows


def _undersample(keys: list[str], labels: list[int], config: SmoteConfig, rng: np.random.Generator) -> set[str]:
    """Keys of real train rows dropped so that no class exceeds the target."""
    dropped: set[str] = set()
    for label in sorted(set(labels)):
        members = [key for key, y in zip(keys, labels, strict=True) if y == label]
        if len(members) > config.target_per_class:
            chosen = set(rng.choice(len(members), size=config.target_per_class, replace=False).tolist())
            dropped |= {key for i, key in enumerate(members) if i not in chosen}
    return dropped


def _unique_pixels(smoted: list[dict], X: np.ndarray, y: np.ndarray, config: SmoteConfig) -> None:
    """A SMOTE step below ~1/510 rounds back to the base image itself (an exact duplicate); such
    samples are redrawn at the midpoint of their two parents."""

    def digest(pixels: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes(), digest_size=16).digest()

    seen = {digest(row) for row in X}
    for item in smoted:
        if digest(item["pixels"]) in seen:
            a, b = item["parent_index"]
            mid = X[a].astype(np.float64) + 0.5 * (X[b].astype(np.float64) - X[a])
            item["pixels"] = np.clip(np.rint(mid), 0, 255).astype(np.uint8).reshape(item["pixels"].shape)
            item["step"] = 0.5
        seen.add(digest(item["pixels"]))


def _add_synthetic(writer: VariantWriter, item: dict, config: SmoteConfig) -> None:
    from fersynth.variants.labels import BASIC7

    pixels = item["pixels"]
    writer.add_encoded(
        {
            "key": item["key"],
            "source": item["key"],
            "dataset": "fer2013",
            "split": "train",
            "label": item["label"],
            "emotion": BASIC7[item["label"]],
            "label_space": "basic7",
            "synthetic": True,
            "generator": item["generator"],
            "parent": item["parent"],
            "seed": config.seed,
        },
        encode_gray8(pixels),
        raw_sha256("L", (pixels.shape[1], pixels.shape[0]), pixels.tobytes()),
        (pixels.shape[1], pixels.shape[0]),
        "L",
        "PNG",
    )


def _named(counts: Counter, manifest: pd.DataFrame) -> dict[str, int]:
    names = manifest.drop_duplicates("label").set_index("label")["emotion"].to_dict()
    return {names.get(label, str(label)): count for label, count in sorted(counts.items())}
