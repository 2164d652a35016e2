"""UTKFace: ``<age>_<gender>_<race>_<datetime>.jpg[.chip.jpg]``; the name is the only label.
Gender 0 male 1 female; race 0 white 1 black 2 asian 3 indian 4 others. Used to train the
demographic predictor, so every field must parse: names lacking one go to quarantine."""

from __future__ import annotations

from pathlib import Path

from fersynth.ingest.common import BadInput, IngestConfig, ingest_each_image
from fersynth.variants.labels import UTK_GENDERS, UTK_RACES, age_group
from fersynth.variants.variant import VariantWriter

MAX_AGE = 116


def parse_name(name: str) -> tuple[int, str, str]:
    """``'26_1_2_20170116174525125.jpg.chip.jpg'`` -> (26, 'female', 'asian')."""
    parts = name.split("_")
    if len(parts) < 4:
        raise BadInput(f"malformed file name: expected <age>_<gender>_<race>_<datetime>, got {len(parts)} fields")
    age_text, gender_text, race_text = parts[:3]
    if not _digits(age_text, 3) or not 0 <= int(age_text) <= MAX_AGE:
        raise BadInput(f"malformed file name: age {age_text[:20]!r}")
    if not _digits(gender_text, 1) or int(gender_text) not in UTK_GENDERS:
        raise BadInput(f"malformed file name: gender {gender_text[:20]!r}")
    if not _digits(race_text, 1) or int(race_text) not in UTK_RACES:
        raise BadInput(f"malformed file name: race {race_text[:20]!r}")
    return int(age_text), UTK_GENDERS[int(gender_text)], UTK_RACES[int(race_text)]


def _digits(text: str, at_most: int) -> bool:
    """ASCII digits only (``"³".isdigit()`` is true and ``int("³")`` fails), and not absurdly many."""
    return text.isascii() and text.isdigit() and len(text) <= at_most


def ingest_utkface(writer: VariantWriter, src: Path, config: IngestConfig) -> str:
    ingest_each_image(writer, src, "ingest utkface", config.limits, _record_from_name)
    return "folders"


def _record_from_name(path: Path) -> dict:
    """A UTKFace row's fields from its file name (``<age>_<gender>_<race>_<date>.jpg``)."""
    age, gender, ethnicity = parse_name(path.name)
    return {
        "dataset": "utkface",
        "label_space": "none",
        "age": float(age),
        "age_group": age_group(age),
        "gender": gender,
        "ethnicity": ethnicity,
        "synthetic": False,
    }
