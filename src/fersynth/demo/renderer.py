"""Procedural face renderer for demo data: expression, demographics and nuisances are controlled.

The faces are cartoon-like but carry real signal: each emotion moves brows, eyes and mouth the way
its action units do, and gender, age group and ethnicity change hair, skin tone and wrinkles, so a
classifier trained on them learns something and later stages can be scored against ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Per-expression geometry at full intensity. Keys: mouth curve (+ smile, - frown), mouth opening,
# inner-brow lowering (+ angry, - sad/fear), brow raise, eye opening, nose wrinkle, lip asymmetry.
EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "angry": {"curve": -0.35, "open": 0.1, "brow_in": 1.0, "brow_up": -0.5, "eye": 0.75},
    "disgust": {"curve": -0.45, "open": 0.15, "brow_in": 0.5, "eye": 0.6, "wrinkle": 1.0, "asym": 0.8},
    "fear": {"curve": -0.25, "open": 0.6, "brow_in": -0.6, "brow_up": 0.8, "eye": 1.35},
    "happy": {"curve": 1.0, "open": 0.35, "eye": 0.7},
    "sad": {"curve": -0.8, "brow_in": -0.9, "brow_up": 0.25, "eye": 0.8},
    "surprise": {"open": 1.0, "brow_up": 1.0, "eye": 1.45},
    # CASME II's own classes (micro-expressions are rendered at low intensity by the caller).
    "happiness": {"curve": 1.0, "open": 0.2, "eye": 0.8},
    "sadness": {"curve": -0.8, "brow_in": -0.9, "brow_up": 0.25, "eye": 0.8},
    "repression": {"curve": -0.15, "open": -0.5, "brow_in": 0.3, "eye": 0.9},
    "others": {"brow_up": 0.35, "asym": 0.5},
}

SKIN_TONES = {
    "white": (236, 204, 180),
    "black": (104, 72, 52),
    "asian": (226, 196, 150),
    "indian": (170, 124, 90),
    "others": (196, 150, 112),
}
HAIR_COLOURS = {
    "white": (120, 80, 40),
    "black": (25, 20, 18),
    "asian": (20, 18, 16),
    "indian": (30, 22, 18),
    "others": (60, 40, 25),
}


@dataclass(frozen=True)
class FaceSpec:
    """Everything that decides one rendered face. ``identity`` seeds face shape, so two specs with
    the same identity and different emotions show the same person."""

    emotion: str = "neutral"
    intensity: float = 1.0
    gender: str = "male"
    age_group: str = "adult"
    ethnicity: str = "white"
    identity: int = 0
    angle: float = 0.0  # in-plane rotation, degrees
    light: float = 1.0  # <1 darker, >1 washed out
    blur: float = 0.0  # Gaussian radius at 128 px
    occlusion: bool = False
    noise: float = 0.0  # Gaussian noise std, 0-255 scale


def _expression(spec: FaceSpec) -> dict[str, float]:
    geometry = EXPRESSIONS[spec.emotion]
    base = {"curve": 0.0, "open": 0.0, "brow_in": 0.0, "brow_up": 0.0, "eye": 1.0, "wrinkle": 0.0, "asym": 0.0}
    out = {}
    for key, neutral_value in base.items():
        target = geometry.get(key, neutral_value)
        out[key] = neutral_value + spec.intensity * (target - neutral_value)
    return out


def _draw(spec: FaceSpec, canvas: int = 128) -> Image.Image:
    rng = np.random.default_rng(spec.identity)
    s = canvas / 128.0
    background = tuple(int(v) for v in rng.integers(40, 200, size=3))
    img = Image.new("RGB", (canvas, canvas), background)
    draw = ImageDraw.Draw(img)
    skin = np.array(SKIN_TONES[spec.ethnicity]) + rng.integers(-12, 13, size=3)
    skin = tuple(int(v) for v in np.clip(skin, 0, 255))
    hair = HAIR_COLOURS[spec.ethnicity]
    if spec.ethnicity == "white" and rng.random() < 0.4:
        hair = (200, 170, 90)
    if spec.age_group == "old":
        hair = (205, 205, 200)
    child = spec.age_group == "child"
    cx, cy = 64 * s, (66 if not child else 70) * s
    face_w = (40 + rng.uniform(-3, 3) + (2 if spec.gender == "male" else -2)) * s
    face_h = (50 + rng.uniform(-3, 3) - (6 if child else 0)) * s
    # 1. hair behind the head (long for female faces)
    if spec.gender == "female":
        draw.rounded_rectangle(
            (cx - face_w - 8 * s, cy - face_h - 6 * s, cx + face_w + 8 * s, cy + face_h + 14 * s),
            radius=int(20 * s),
            fill=hair,
        )
    # 2. face and neck
    draw.rectangle((cx - 14 * s, cy + face_h - 8 * s, cx + 14 * s, canvas), fill=skin)
    draw.ellipse((cx - face_w, cy - face_h, cx + face_w, cy + face_h), fill=skin)
    draw.chord((cx - face_w, cy - face_h - 4 * s, cx + face_w, cy - face_h * 0.2), 180, 360, fill=hair)
    expr = _expression(spec)
    eye_dx = (16 + rng.uniform(-2, 2)) * s
    eye_y = cy - (6 if not child else 2) * s
    eye_r = (5.5 if child else 4.5) * s
    eye_h = eye_r * 0.75 * expr["eye"]
    white = (245, 245, 245)
    # 3. eyes, brows
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse((ex - eye_r * 1.5, eye_y - eye_h, ex + eye_r * 1.5, eye_y + eye_h), fill=white)
        pupil = min(eye_r, eye_h)
        draw.ellipse((ex - pupil, eye_y - pupil, ex + pupil, eye_y + pupil), fill=(30, 25, 20))
        brow_y = eye_y - (10 + 5 * expr["brow_up"]) * s
        inner = (ex - side * 7 * s, brow_y + 5 * expr["brow_in"] * s)
        outer = (ex + side * 9 * s, brow_y - 1.5 * expr["brow_in"] * s)
        draw.line((inner, outer), fill=hair if spec.age_group != "old" else (150, 150, 150), width=max(1, int(3 * s)))
    # 4. nose, with a disgust wrinkle
    draw.line(
        ((cx, eye_y + 2 * s), (cx - 3 * s, cy + 12 * s), (cx + 2 * s, cy + 13 * s)),
        fill=tuple(int(v * 0.7) for v in skin),
        width=max(1, int(2 * s)),
    )
    if expr["wrinkle"] > 0.2:
        for dy in (0, 3):
            draw.arc(
                (cx - 8 * s, eye_y + (2 + dy) * s, cx + 8 * s, eye_y + (10 + dy) * s),
                200,
                340,
                fill=tuple(int(v * 0.6) for v in skin),
                width=max(1, int(expr["wrinkle"] * 2 * s)),
            )
    # 5. mouth: a quadratic curve through three points, opened when needed
    mouth_y = cy + 26 * s
    half = (14 + 4 * max(expr["curve"], 0)) * s
    lift = expr["curve"] * 7 * s
    asym = expr["asym"] * 4 * s
    left = (cx - half, mouth_y - lift - asym)
    right = (cx + half, mouth_y - lift + asym)
    mid = (cx, mouth_y + lift * 0.6)
    points = [_bezier(left, mid, right, t / 12) for t in range(13)]
    lip = (150, 60, 60)
    opening = expr["open"] * 10 * s
    if opening > 1:
        lower = [(x, y + opening * math.sin(math.pi * i / 12)) for i, (x, y) in enumerate(points)]
        draw.polygon(points + lower[::-1], fill=(60, 20, 20), outline=lip)
    else:
        draw.line(points, fill=lip, width=max(1, int((3 + min(opening, 0) * 2) * s)))
    # 6. age: forehead lines and cheek wrinkles
    if spec.age_group in ("adult", "old"):
        n_lines = 1 if spec.age_group == "adult" else 3
        for k in range(n_lines):
            y = eye_y - (20 + 4 * k) * s
            draw.arc((cx - 16 * s, y, cx + 16 * s, y + 6 * s), 200, 340, fill=tuple(int(v * 0.75) for v in skin))
    if spec.age_group == "old":
        for side in (-1, 1):
            draw.arc(
                (cx + side * 22 * s - 6 * s, cy + 8 * s, cx + side * 22 * s + 6 * s, cy + 30 * s),
                90 - side * 60,
                90 + side * 60,
                fill=tuple(int(v * 0.7) for v in skin),
            )
    if spec.gender == "male" and spec.age_group in ("adult", "old") and rng.random() < 0.3:
        draw.chord(
            (cx - face_w * 0.8, cy + 10 * s, cx + face_w * 0.8, cy + face_h),
            0,
            180,
            fill=tuple(int(v * 0.8) for v in hair),
        )
        draw.line(points, fill=lip, width=max(1, int(3 * s)))
    # 7. occlusion: a dark bar (sunglasses) or a hand-coloured patch over the mouth
    if spec.occlusion:
        if rng.random() < 0.5:
            draw.rectangle((cx - face_w, eye_y - 6 * s, cx + face_w, eye_y + 6 * s), fill=(15, 15, 15))
        else:
            draw.ellipse((cx - 4 * s, mouth_y - 14 * s, cx + 30 * s, mouth_y + 16 * s), fill=skin, outline=(0, 0, 0))
    return img


def _bezier(p0, p1, p2, t):
    return (
        (1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t**2 * p2[0],
        (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t**2 * p2[1],
    )


def render_face(spec: FaceSpec, size: tuple[int, int] = (48, 48), mode: str = "L", seed: int = 0) -> Image.Image:
    """Render ``spec`` as a PIL image of ``size`` (width, height) in ``mode`` ("L" or "RGB").

    >>> render_face(FaceSpec(emotion="happy"), (48, 48), "L").size
    (48, 48)
    """
    width, height = size
    side = max(width, height)
    canvas = 128 if side <= 128 else side
    img = _draw(spec, canvas)
    if spec.angle:
        img = img.rotate(spec.angle, resample=Image.BILINEAR, fillcolor=img.getpixel((0, 0)))
    if spec.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(spec.blur * canvas / 128))
    if canvas != side:
        img = img.resize((side, side), Image.BILINEAR)
    if (width, height) != (side, side):
        left, top = (side - width) // 2, (side - height) // 2
        img = img.crop((left, top, left + width, top + height))
    pixels = np.asarray(img, dtype=np.float32) * spec.light
    if spec.noise > 0:
        pixels += np.random.default_rng(seed).normal(0, spec.noise, pixels.shape)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return img.convert(mode) if mode != "RGB" else img
