"""A plain folder of face images without labels: SFHQ's parts (``images/images/SFHQ_pt<k>_<n>.jpg``,
synthetic StyleGAN2 faces, paper 003) or any other unlabeled folder. Rows get no emotion
(``label_space: none``) until ``fersynth autolabel`` gives them one."""

from __future__ import annotations

from pathlib import Path

from fersynth.ingest.common import IngestConfig, ingest_each_image
from fersynth.variants.variant import VariantWriter

SYNTHETIC_FOLDERS = {"sfhq": "sfhq-stylegan2"}  # dataset -> generator recorded on its rows


def ingest_unlabeled_folder(writer: VariantWriter, src: Path, dataset: str, config: IngestConfig) -> str:
    generator = SYNTHETIC_FOLDERS.get(dataset)
    record = {"dataset": dataset, "label_space": "none", "synthetic": generator is not None, "generator": generator}
    ingest_each_image(writer, src, f"ingest {dataset}", config.limits, lambda path: record)
    return "folder"
