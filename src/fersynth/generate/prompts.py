"""Prompt builders for generated faces.

- ``table11`` (paper 001, Appendix D): one template per emotion whose ``{person}`` slot is filled with
  "<ethnicity> <age> <gender>", e.g. "... a perfect face of a asian old female, feeling an extreme
  rage ...". The word used for each demographic group is a param: UTKFace's fifth group is "others",
  which paper 001's script wrote as "latin american".
- ``variations`` (paper 000, Table 1): age, gender, ethnicity, lighting, angle, obstruction and blur
  woven into one sentence, e.g. "An image of a child, Middle Eastern male with a scowling expression
  and tight lips, captured in shadowy light, from a side angle, covered with hair, with slight blur,
  expressing anger."

Templates come from params or from a YAML prompts file (``{emotion: template}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from fersynth.errors import ParamsError
from fersynth.variants.files import FileRejected, read_bounded
from fersynth.variants.labels import BASIC7

MAX_TEMPLATES_BYTES = 2**20  # a template per emotion: a few KB

TABLE11 = {
    "angry": "A detailed photographic portrait of a perfect face of a {person}, feeling an extreme rage, expressing a "
    "very angry face, features well-defined, facing the camera, realistic, 4K, hd",
    "disgust": "A detailed photographic portrait of a perfect face of a {person}, feeling angry, with expression of "
    "very disgusted, forehead wrinkler, brow lowerer, cheek raiser, narrowed eyes, nose wrinkler, upper lip raiser, "
    "chin raiser, lip part, facing the camera, realistic, 4K, hd",
    "fear": "A detailed photographic portrait of a perfect face of a {person}, expressing great dread, with facial "
    "gestures of fearful, fright, in panic, facing the camera, realistic, 4K, hd",
    "happy": "A detailed photo portrait of a perfect whole front face of a {person}, expressing very happiness, facial "
    "gestures of happy, smiling, facial features well-defined, facing the camera, background any, ultra realistic, "
    "4K, hd",
    "neutral": "A detailed photo portrait of a perfect face of a {person}, expressing neutrality, facial gestures of "
    "neutral, facial features well-defined, facing the camera, background any, ultra realistic, 4K, hd",
    "sad": "A detailed photo portrait of a perfect whole front face of a {person}, very sad face with tears, "
    "expressing extreme frustration, crying, facial features well-defined, facing the camera, background any, ultra "
    "realistic, 4K, hd",
    "surprise": "A detailed photographic portrait of a perfect face of a {person}, expressive face of surprise with "
    "the mouth open, extremely amazed, eyebrows very raised, upper eyelid raised, lips parted, jaw dropped, facial "
    "features well-defined, facing the camera, background any, realistic, 4K, hd",
}
# Paper 001 Table 11: the share of generated images that showed the intended emotion.
TABLE11_EFFECTIVENESS = {
    "angry": 0.4,
    "disgust": 0.3,
    "fear": 0.6,
    "happy": 0.9,
    "neutral": 0.8,
    "sad": 0.9,
    "surprise": 0.5,
}

VARIATIONS_TEMPLATE = (
    "An image of a {age}, {ethnicity} {gender} with {expression}, captured in {lighting} light, from a {angle} angle, "
    "{obstruction}, {blur}, expressing {emotion_word}."
)
EXPRESSIONS = {  # what the face does, per emotion (paper 000's example: "a scowling expression and tight lips")
    "angry": ("a scowling expression and tight lips", "anger"),
    "disgust": ("a wrinkled nose and a raised upper lip", "disgust"),
    "fear": ("wide-open eyes and raised, drawn-together eyebrows", "fear"),
    "happy": ("a broad smile and raised cheeks", "happiness"),
    "neutral": ("relaxed features and a closed mouth", "neutrality"),
    "sad": ("drooping eyelids and lowered lip corners", "sadness"),
    "surprise": ("raised eyebrows and an open mouth", "surprise"),
}
# FACS action units of each emotion's prototype (Ekman & Friesen's EMFACS), in the words FACS names them.
# Paper 001 wrote them into its disgust and surprise prompts "to improve the accuracy of the synthetic images".
ACTION_UNITS = {
    "angry": ("brow lowerer", "upper lid raiser", "lid tightener", "lip tightener"),  # AU 4, 5, 7, 23
    "disgust": ("nose wrinkler", "upper lip raiser", "lip corner depressor", "lower lip depressor"),  # AU 9, 10, 15, 16
    "fear": (  # AU 1, 2, 4, 5, 7, 20, 26
        "inner brow raiser",
        "outer brow raiser",
        "brow lowerer",
        "upper lid raiser",
        "lid tightener",
        "lip stretcher",
        "jaw drop",
    ),
    "happy": ("cheek raiser", "lip corner puller"),  # AU 6, 12
    "neutral": (),  # no action unit
    "sad": ("inner brow raiser", "brow lowerer", "lip corner depressor"),  # AU 1, 4, 15
    "surprise": ("inner brow raiser", "outer brow raiser", "upper lid raiser", "jaw drop"),  # AU 1, 2, 5B, 26
}
# The action-unit phrases paper 001's Table 11 has in its disgust and surprise templates (removed by ``none``).
TABLE11_ACTION_UNITS = {
    "disgust": "forehead wrinkler, brow lowerer, cheek raiser, narrowed eyes, nose wrinkler, upper lip raiser, "
    "chin raiser, lip part, ",
    "surprise": "eyebrows very raised, upper eyelid raised, lips parted, jaw dropped, ",
}
ACTION_UNIT_CHOICES = ("paper", "all", "none")
# Where a template's expression ends (table11, variations): the action units go there.
AFTER_EXPRESSION = (", facial features well-defined", ", features well-defined", ", facing the camera", ", captured in")

# Paper 000 Table 1, the nuisance columns. "none" leaves that clause out of the prompt.
LIGHTINGS = ("bright", "low", "shadowy")
ANGLES = ("frontal", "side", "top-down", "bottom-up")
OBSTRUCTIONS = ("none", "hands", "hair", "glasses", "mask")
BLURS = ("none", "slight", "moderate")


@dataclass(frozen=True)
class PromptConfig:
    """``params.yaml: generate.prompts``."""

    style: str = "table11"  # table11 (paper 001) | variations (paper 000)
    file: str = ""  # optional YAML {emotion: template}; replaces the built-in templates of the style
    ethnicity_words: dict[str, str] = field(
        default_factory=lambda: {
            "white": "white",
            "black": "black",
            "asian": "asian",
            "indian": "indian",
            "others": "latin american",
        }
    )
    age_words: dict[str, str] = field(
        default_factory=lambda: {"child": "child", "young": "young", "adult": "adult", "old": "old"}
    )
    gender_words: dict[str, str] = field(default_factory=lambda: {"male": "male", "female": "female"})
    negative_prompt: str = ""
    # paper: the templates as published (table11: disgust and surprise name their action units) | all: every
    # emotion's prompt names its FACS action units | none: no prompt names any (table11's two lists removed)
    action_units: str = "paper"

    def __post_init__(self) -> None:
        if self.style not in ("table11", "variations"):
            raise ValueError(f"prompts.style must be table11 or variations, not {self.style!r}")
        if self.action_units not in ACTION_UNIT_CHOICES:
            raise ValueError(
                f"prompts.action_units must be one of {', '.join(ACTION_UNIT_CHOICES)}, not {self.action_units!r}"
            )


@dataclass(frozen=True)
class FaceRequest:
    """One image to generate: the cell it belongs to, the nuisances asked for, its prompt, and the
    seed and attempt number that make it reproducible and traceable."""

    emotion: str
    gender: str
    age_group: str
    ethnicity: str
    lighting: str = "bright"
    angle: str = "frontal"
    obstruction: str = "none"
    blur: str = "none"
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    attempt: int = 0

    @property
    def cell(self) -> tuple[str, str, str, str]:
        return (self.emotion, self.gender, self.age_group, self.ethnicity)

    @property
    def file_name(self) -> str:
        """Paper 001 saved ``{emotion}-{ethnicity}-{age}-{gender}-{time}.png`` (same second, same name:
        overwritten); the seed and attempt make ours unique."""
        return f"{self.emotion}-{self.ethnicity}-{self.age_group}-{self.gender}-s{self.seed}-a{self.attempt}.png"


def _read_templates(path: Path) -> dict:
    """``generate.prompts.file``: a regular YAML file of at most 1 MB holding a mapping, or a one-line error."""
    try:
        loaded = yaml.safe_load(read_bounded(path, MAX_TEMPLATES_BYTES))
    except (FileRejected, yaml.YAMLError, UnicodeDecodeError) as error:
        raise ParamsError(f"generate.prompts.file {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise ParamsError(f"generate.prompts.file {path}: not a mapping of emotion to template")
    return loaded


class PromptBuilder:
    def __init__(self, config: PromptConfig):
        self.config = config
        if config.file:
            self.templates = {str(k): str(v) for k, v in _read_templates(Path(config.file)).items()}
        else:
            self.templates = dict(TABLE11) if config.style == "table11" else dict.fromkeys(BASIC7, VARIATIONS_TEMPLATE)
        missing = set(BASIC7) - set(self.templates)
        if missing:
            raise ValueError(f"no prompt template for {sorted(missing)}")
        self.templates = {e: with_action_units(e, t, config.action_units) for e, t in self.templates.items()}

    def person(self, gender: str, age_group: str, ethnicity: str) -> str:
        words = self.config
        return f"{words.ethnicity_words[ethnicity]} {words.age_words[age_group]} {words.gender_words[gender]}"

    def request(
        self,
        emotion: str,
        gender: str,
        age_group: str,
        ethnicity: str,
        seed: int,
        attempt: int = 0,
        rng: np.random.Generator | None = None,
    ) -> FaceRequest:
        """The request for one image of a cell. With the ``variations`` style, lighting, angle,
        obstruction and blur are drawn from ``rng`` (paper 000 varied them across images)."""
        nuisances = {}
        if self.config.style == "variations":
            rng = rng if rng is not None else np.random.default_rng(seed)
            nuisances = {
                "lighting": str(rng.choice(LIGHTINGS)),
                "angle": str(rng.choice(ANGLES)),
                "obstruction": str(rng.choice(OBSTRUCTIONS)),
                "blur": str(rng.choice(BLURS)),
            }
        request = FaceRequest(emotion, gender, age_group, ethnicity, seed=seed, attempt=attempt, **nuisances)
        prompt = self.prompt(request)
        return replace(request, prompt=prompt, negative_prompt=self.config.negative_prompt)

    def prompt(self, request: FaceRequest) -> str:
        words = self.config
        expression, emotion_word = EXPRESSIONS[request.emotion]
        values = {
            "person": self.person(request.gender, request.age_group, request.ethnicity),
            "age": words.age_words[request.age_group],
            "gender": words.gender_words[request.gender],
            "ethnicity": words.ethnicity_words[request.ethnicity],
            "emotion": request.emotion,
            "expression": expression,
            "emotion_word": emotion_word,
            "lighting": request.lighting,
            "angle": request.angle,
            "obstruction": "unobstructed" if request.obstruction == "none" else f"covered with {request.obstruction}",
            "blur": "in sharp focus" if request.blur == "none" else f"with {request.blur} blur",
        }
        person = values["person"]
        values["a_person"] = f"{'an' if person[:1].lower() in 'aeiou' else 'a'} {person}"
        # "a {person}" reads "an asian old female" as the paper's example does
        template = re.sub(r"\ba \{person\}", "{a_person}", self.templates[request.emotion])
        return template.format(**values)


def with_action_units(emotion: str, template: str, mode: str) -> str:
    """``template`` with ``emotion``'s action units named (``all``), as it is (``paper``), or without any
    action-unit phrase (``none``: FACS names and paper 001's Table 11 wording, in any template). ``all`` adds
    the units the template does not name yet, the way Table 11 lists them, right after the expression: CLIP
    reads 77 tokens, and what follows is cut off in long prompts.

    >>> with_action_units("happy", "A photo of a {person}, smiling, facing the camera, 4K", "all")
    'A photo of a {person}, smiling, cheek raiser, lip corner puller, facing the camera, 4K'
    >>> with_action_units("happy", "a {person}, cheek raiser, smiling, lip corner puller", "none")
    'a {person}, smiling'
    """
    if mode == "paper":
        return template
    if mode == "none":
        return _AU_PATTERN.sub("", template)
    missing = [unit for unit in ACTION_UNITS.get(emotion, ()) if unit not in template]
    if not missing or TABLE11_ACTION_UNITS.get(emotion, "\0") in template:
        return template
    found = [template.find(a) for a in AFTER_EXPRESSION if a in template]
    at = min(found) if found else len(template.rstrip(" ."))
    return f"{template[:at]}, {', '.join(missing)}{template[at:]}"


# Every action-unit phrase a template may hold (longest first), with the comma before it.
_AU_PHRASES = sorted(
    {unit for units in ACTION_UNITS.values() for unit in units}
    | {phrase.strip() for text in TABLE11_ACTION_UNITS.values() for phrase in text.split(",") if phrase.strip()},
    key=len,
    reverse=True,
)
_AU_PATTERN = re.compile(r",\s*(?:" + "|".join(re.escape(p) for p in _AU_PHRASES) + r")\b")
