"""What the generative stages share: their params (backend, prompts, attempts, output format), writing
accepted pictures into a variant with full provenance (rank 0 only under ``torchrun``), and the attempts log."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from fersynth.atomic import atomic_path
from fersynth.config import at_least, check_seeds
from fersynth.generate.backends import Backend, BackendConfig
from fersynth.generate.convert import convert
from fersynth.generate.gate import GateResult
from fersynth.generate.prompts import FaceRequest, PromptConfig
from fersynth.generate.quota import Attempt
from fersynth.variants.labels import BASIC7
from fersynth.variants.variant import VariantWriter


@dataclass(frozen=True)
class ImageFormat:
    size: int = 224
    mode: str = "RGB"  # RGB | L

    def __post_init__(self) -> None:
        if self.mode not in ("RGB", "L") or self.size < 8:
            raise ValueError(f"format: mode RGB or L and size >= 8, got {self.mode!r} / {self.size}")


@dataclass(frozen=True)
class GenerationConfig:
    """The part of ``params.yaml: <generative variant>`` every generative stage has."""

    seed: int = 7
    max_attempts_per_image: int = 5  # a cell gives up after quota x this many attempts
    format: ImageFormat = field(default_factory=ImageFormat)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)

    def __post_init__(self) -> None:
        check_seeds("generation", seed=self.seed)
        at_least("generation", 1, max_attempts_per_image=self.max_attempts_per_image)


def accept_into(writer: VariantWriter, backend: Backend, split: str, dataset: str, image_format: ImageFormat):
    """An ``on_accept`` callback writing each accepted picture, converted, with its provenance."""

    def on_accept(request: FaceRequest, image: Image.Image, result: GateResult) -> None:
        writer.add(
            {
                "key": f"{split}/{request.file_name}",
                "source": request.file_name,
                "dataset": dataset,
                "split": split,
                "label": BASIC7.index(request.emotion),
                "emotion": request.emotion,
                "label_space": "basic7",
                "gender": request.gender,
                "age_group": request.age_group,
                "ethnicity": request.ethnicity,
                "synthetic": True,
                "generator": backend.name,
                "model": backend.model,
                "prompt": request.prompt,
                "seed": request.seed,
                "steps": backend.steps,
                "guidance": backend.guidance,
                "attempt": request.attempt,
            },
            convert(image, image_format.size, image_format.mode),
        )

    return on_accept


def write_attempts(path: Path, attempts_by_split: dict[str, list[Attempt]]) -> None:
    """The gate's verdict on every attempt (``file, accepted, reason, faces, score`` plus the request)."""
    rows = [
        {
            "file": a.request.file_name,
            "split": split,
            "accepted": a.result.accepted,
            "reason": a.result.reason,
            "faces": a.result.faces,
            "score": round(a.result.score, 4),
            "emotion": a.request.emotion,
            "gender": a.request.gender,
            "age_group": a.request.age_group,
            "ethnicity": a.request.ethnicity,
            "seed": a.request.seed,
            "attempt": a.request.attempt,
            "prompt": a.request.prompt,
        }
        for split, attempts in attempts_by_split.items()
        for a in attempts
    ]
    with atomic_path(Path(path)) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def generation_metrics(report: dict, short_cells) -> dict:
    """The metrics file of a generative stage: attempts, which checks gated which split, acceptance per
    emotion and per group, and how many cells were left short (a number, or a number per split)."""
    return {
        "attempts": report["attempts"],
        "gate": report["gate"],
        "accepted": report["accepted"],
        "acceptance_per_emotion": {e: v["acceptance"] for e, v in report["prompt_effectiveness"].items()},
        "acceptance_by_group": report["acceptance_by_group"],
        "short_cells": short_cells,
    }
