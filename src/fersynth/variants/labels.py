"""Label spaces and every source's mapping into them, by name.

Canonical order for the 7 basic emotions is alphabetical, as in paper 001:
0 angry, 1 disgust, 2 fear, 3 happy, 4 neutral, 5 sad, 6 surprise.
CASME II keeps its own 7-class space (also alphabetical).
"""

from __future__ import annotations

BASIC7 = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
CASME2 = ("disgust", "fear", "happiness", "others", "repression", "sadness", "surprise")
LABEL_SPACES = {"basic7": BASIC7, "casme2": CASME2}

GENDERS = ("male", "female")
AGE_GROUPS = ("child", "young", "adult", "old")
ETHNICITIES = ("white", "black", "asian", "indian", "others")

# FER2013 Kaggle codes: 0 Angry 1 Disgust 2 Fear 3 Happy 4 Sad 5 Surprise 6 Neutral.
FER2013_CODES = {0: "angry", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral"}
FER2013_USAGE_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}

# AffectNet official lists: 0 Neutral 1 Happy 2 Sad 3 Surprise 4 Fear 5 Disgust 6 Anger 7 Contempt
# 8 None 9 Uncertain 10 No-Face. Codes 7-10 are outside the basic-7 space: dropped by rule.
AFFECTNET_CODES = {0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust", 6: "angry"}
AFFECTNET_DROPPED = {7: "contempt", 8: "none", 9: "uncertain", 10: "no-face"}

# Folder names used by the folder-per-class releases, mapped to canonical names.
# Releases differ in spelling (anger / angry, happiness / happy, ...): all are accepted.
FOLDER_NAMES = {
    "angry": "angry",
    "anger": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "happy": "happy",
    "happiness": "happy",
    "neutral": "neutral",
    "neutrality": "neutral",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
}
FOLDER_DROPPED = {"contempt"}

# CASME II spells its emotions a few ways across releases.
CASME2_NAMES = {name: name for name in CASME2} | {"happy": "happiness", "sad": "sadness", "other": "others"}

# UTKFace: gender 0 male 1 female; race 0 white 1 black 2 asian 3 indian 4 others.
UTK_GENDERS = {0: "male", 1: "female"}
UTK_RACES = {0: "white", 1: "black", 2: "asian", 3: "indian", 4: "others"}


def label_index(space: str, name: str) -> int:
    return LABEL_SPACES[space].index(name)


def age_group(age: int | float) -> str:
    """Paper 001's bands: child <15, young 15-29, adult 30-64, old 65+."""
    if age < 15:
        return "child"
    if age < 30:
        return "young"
    if age < 65:
        return "adult"
    return "old"
