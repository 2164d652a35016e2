"""Who is in the demo data and what goes wrong with it: demographics, class mixes, nuisances, noise."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fersynth.config import at_least, within
from fersynth.demo.renderer import FaceSpec
from fersynth.variants.labels import AGE_GROUPS, BASIC7, CASME2, ETHNICITIES, GENDERS

# Class mixes follow the sources' own imbalance (paper 001 Table 1, paper 002 Table 1), in BASIC7 order.
CLASS_MIX = {
    "fer2013": (4953, 547, 5121, 8988, 6198, 6077, 4002),
    "nhfi": (890, 439, 570, 1406, 524, 746, 775),
    "affectnet": (1, 1, 1, 1, 1, 1, 1),
    "utkface": (0, 0, 0, 0, 1, 0, 0),
    "sfhq": (6, 2, 3, 30, 40, 6, 13),  # SFHQ: StyleGAN faces, mostly neutral and smiling
}
CASME2_MIX = dict(zip(CASME2, (4204, 127, 2360, 6367, 2187, 150, 1729), strict=True))
# In-the-wild sets under-represent children, old people and non-white faces; the balanced-set stage has to
# fill those cells, so the demo keeps that skew.
AGE_MIX = (0.08, 0.45, 0.40, 0.07)
ETHNICITY_MIX = (0.55, 0.15, 0.15, 0.08, 0.07)
AGE_RANGES = {"child": (1, 14), "young": (15, 29), "adult": (30, 64), "old": (65, 100)}


@dataclass(frozen=True)
class Nuisances:
    """Rates (per image) of the problems real FER data has; ``corrupt`` and ``malformed`` are counts
    per dataset of broken files and rows planted for ingestion to catch."""

    label_noise: float = 0.1
    blur: float = 0.1
    occlusion: float = 0.08
    low_light: float = 0.1
    duplicates: float = 0.02
    unrecognisable: float = 0.01  # blank or pure-noise pictures that still carry a label
    corrupt: int = 2
    malformed: int = 2

    def __post_init__(self) -> None:
        rates = ("label_noise", "blur", "occlusion", "low_light", "duplicates", "unrecognisable")
        within("demo.nuisances", 0, 1, **{name: getattr(self, name) for name in rates})
        at_least("demo.nuisances", 0, corrupt=self.corrupt, malformed=self.malformed)


@dataclass
class Face:
    """One demo image before it is written: what it truly shows and the label it is given."""

    spec: FaceSpec
    true_emotion: str
    given_emotion: str
    age: int
    nuisance: dict = field(default_factory=dict)

    @property
    def flipped(self) -> bool:
        return self.true_emotion != self.given_emotion


def draw_person(rng: np.random.Generator) -> tuple[str, str, str, int]:
    gender = GENDERS[rng.integers(2)]
    group = AGE_GROUPS[rng.choice(4, p=AGE_MIX)]
    ethnicity = ETHNICITIES[rng.choice(5, p=ETHNICITY_MIX)]
    low, high = AGE_RANGES[group]
    return gender, group, ethnicity, int(rng.integers(low, high + 1))


def draw_faces(
    n: int,
    mix: tuple[float, ...],
    classes: tuple[str, ...],
    nuisances: Nuisances,
    rng: np.random.Generator,
    intensity: tuple[float, float] = (0.7, 1.0),
) -> list[Face]:
    """``n`` faces with emotions drawn from ``mix``; a ``label_noise`` share gets a wrong label."""
    probabilities = np.asarray(mix, dtype=float) / np.sum(mix)
    labelled_classes = int(np.count_nonzero(probabilities))  # a label can only flip to another class
    faces = []
    for _ in range(n):
        emotion = classes[rng.choice(len(classes), p=probabilities)]
        gender, group, ethnicity, age = draw_person(rng)
        nuisance = {
            "blur": float(rng.uniform(0.8, 2.0)) if rng.random() < nuisances.blur else 0.0,
            "occlusion": bool(rng.random() < nuisances.occlusion),
            "light": float(rng.uniform(0.3, 0.5))
            if rng.random() < nuisances.low_light
            else float(rng.uniform(0.85, 1.15)),
            "angle": float(rng.uniform(-12, 12)),
        }
        spec = FaceSpec(
            emotion=emotion,
            intensity=float(rng.uniform(*intensity)),
            gender=gender,
            age_group=group,
            ethnicity=ethnicity,
            identity=int(rng.integers(2**31)),
            angle=nuisance["angle"],
            light=nuisance["light"],
            blur=nuisance["blur"],
            occlusion=nuisance["occlusion"],
            noise=4.0,
        )
        nuisance["unrecognisable"] = _unrecognisable(spec.identity, nuisances.unrecognisable)
        given = emotion
        if labelled_classes > 1 and rng.random() < nuisances.label_noise:
            given = classes[rng.choice([i for i in range(len(classes)) if classes[i] != emotion])]
        faces.append(Face(spec, emotion, given, age, nuisance))
    return faces


def _unrecognisable(identity: int, rate: float) -> str | None:
    """``blank``, ``noise`` or None; drawn from its own stream (seeded by the face identity) so the
    rate can change without moving any other draw."""
    draw = np.random.default_rng([identity, 7]).random()
    if draw >= rate:
        return None
    return "blank" if draw < rate / 2 else "noise"


def basic7_faces(dataset: str, n: int, nuisances: Nuisances, rng: np.random.Generator) -> list[Face]:
    return draw_faces(n, CLASS_MIX[dataset], BASIC7, nuisances, rng)


def ground_truth_row(source: str, face: Face, **extra) -> dict:
    return {
        "source": source,
        "true_emotion": face.true_emotion,
        "given_emotion": face.given_emotion,
        "flipped": face.flipped,
        "gender": face.spec.gender,
        "age": face.age,
        "age_group": face.spec.age_group,
        "ethnicity": face.spec.ethnicity,
        "identity": face.spec.identity,
        "blur": face.nuisance.get("blur", 0.0),
        "occlusion": face.nuisance.get("occlusion", False),
        "unrecognisable": face.nuisance.get("unrecognisable"),
        "light": face.nuisance.get("light", 1.0),
    } | extra
