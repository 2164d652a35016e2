"""A plain folder of face images without labels: SFHQ's parts (``images/images/SFHQ_pt<k>_<n>.jpg``,
synthetic StyleGAN2 faces, paper 003) or any other unlabeled folder. Rows get no emotion
(``label_space: none``) until ``fersynth autolabel`` gives them one."""

from __future__ import annotations

from pathlib import Path

from fersynth.ingest.common import BadInput, IngestConfig, check_image_suffix, read_image_file, scan_files
from fersynth.log import progress
from fersynth.variants.variant import VariantWriter

SYNTHETIC_FOLDERS = {"sfhq": "sfhq-stylegan2"}  # dataset -> generator recorded on its rows


def ingest_unlabeled_folder(writer: VariantWriter, src: Path, dataset: str, config: IngestConfig) -> str:
    generator = SYNTHETIC_FOLDERS.get(dataset)
    for path in progress(scan_files(writer, src), desc=f"ingest {dataset}"):
        source = path.relative_to(src).as_posix()
        try:
            check_image_suffix(path)
            data, image = read_image_file(path, config.limits)
        except BadInput as error:
            writer.reject(source, str(error))
            continue
        record = {
            "key": source,
            "source": source,
            "dataset": dataset,
            "label_space": "none",
            "synthetic": generator is not None,
            "generator": generator,
        }
        writer.add(record, image, data)
    return "folder"
