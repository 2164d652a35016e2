import io

import numpy as np
import pytest
from PIL import Image

from fersynth.variants.png import encode_gray8
from fersynth.variants.variant import pixel_sha256, raw_sha256


@pytest.mark.parametrize("shape", [(48, 48), (1, 1), (3, 17), (224, 224)])
@pytest.mark.parametrize("level", [0, 6])
def test_pil_decodes_the_same_pixels(shape, level):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    image = Image.open(io.BytesIO(encode_gray8(pixels, level)))
    image.load()
    assert image.mode == "L" and image.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(image), pixels)
    assert pixel_sha256(image) == raw_sha256("L", image.size, pixels.tobytes())


def test_refuses_other_dtypes():
    with pytest.raises(ValueError):
        encode_gray8(np.zeros((4, 4), np.int16))
