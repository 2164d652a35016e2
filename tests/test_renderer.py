import numpy as np

from fersynth.demo.renderer import EXPRESSIONS, FaceSpec, render_face


def test_same_spec_renders_identical_pixels():
    spec = FaceSpec(emotion="fear", identity=7, blur=1.0, occlusion=True, noise=3.0)
    a = np.asarray(render_face(spec, (64, 64), "L", seed=3))
    b = np.asarray(render_face(spec, (64, 64), "L", seed=3))
    assert np.array_equal(a, b)


def test_every_emotion_changes_the_face():
    neutral = np.asarray(render_face(FaceSpec(emotion="neutral", identity=1), (96, 96), "L"), dtype=int)
    for emotion in EXPRESSIONS:
        if emotion == "neutral":
            continue
        face = np.asarray(render_face(FaceSpec(emotion=emotion, identity=1), (96, 96), "L"), dtype=int)
        assert np.abs(face - neutral).sum() > 500, emotion


def test_intensity_zero_is_neutral():
    neutral = np.asarray(render_face(FaceSpec(emotion="neutral", identity=2), (48, 48), "L"))
    faint = np.asarray(render_face(FaceSpec(emotion="surprise", intensity=0.0, identity=2), (48, 48), "L"))
    assert np.array_equal(neutral, faint)


def test_size_mode_and_non_square():
    image = render_face(FaceSpec(), (280, 340), "RGB")
    assert image.size == (280, 340) and image.mode == "RGB"
    assert render_face(FaceSpec(), (48, 48), "L").mode == "L"


def test_skin_tone_follows_ethnicity():
    light = np.asarray(render_face(FaceSpec(ethnicity="white", identity=5), (128, 128), "L"), dtype=float)
    dark = np.asarray(render_face(FaceSpec(ethnicity="black", identity=5), (128, 128), "L"), dtype=float)
    centre = (slice(70, 80), slice(40, 50))  # a cheek
    assert light[centre].mean() > dark[centre].mean() + 60


def test_low_light_darkens():
    normal = np.asarray(render_face(FaceSpec(identity=4), (48, 48), "L"), dtype=float)
    dark = np.asarray(render_face(FaceSpec(identity=4, light=0.4), (48, 48), "L"), dtype=float)
    assert dark.mean() < 0.5 * normal.mean()
