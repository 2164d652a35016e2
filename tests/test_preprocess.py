import numpy as np
from PIL import Image

from fersynth.demo.renderer import FaceSpec, render_face
from fersynth.modeling.preprocess import Preprocess, PreprocessConfig, clahe, equalize, gaussian_blur


def _dark_face(mode="L"):
    return render_face(FaceSpec(identity=3, light=0.35), (96, 96), mode)


def test_equalize_stretches_a_dark_image():
    dark = np.asarray(_dark_face(), dtype=float)
    out = np.asarray(equalize(_dark_face()), dtype=float)
    assert out.std() > 1.5 * dark.std() and out.max() >= 250


def test_clahe_gray_and_rgb_keep_size_and_mode_and_add_local_contrast():
    for mode in ("L", "RGB"):
        image = _dark_face(mode)
        out = clahe(image, clip_limit=2.0, tile=4)
        assert out.size == image.size and out.mode == mode
        assert np.asarray(out.convert("L"), dtype=float).std() > np.asarray(image.convert("L"), dtype=float).std()


def test_blur_removes_high_frequencies():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48)).astype(np.uint8))
    diff = lambda im: np.abs(np.diff(np.asarray(im, dtype=float), axis=1)).mean()  # noqa: E731
    assert diff(gaussian_blur(noise, 1.5)) < 0.5 * diff(noise)


def test_chain_is_identity_when_off_and_applies_in_order():
    image = _dark_face()
    assert np.array_equal(np.asarray(Preprocess(PreprocessConfig())(image)), np.asarray(image))
    chained = Preprocess(PreprocessConfig(equalize=True, blur_sigma=1.0))(image)
    assert np.array_equal(np.asarray(chained), np.asarray(gaussian_blur(equalize(image), 1.0)))
