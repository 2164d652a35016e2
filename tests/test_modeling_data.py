import numpy as np
import pytest
import torch

from fersynth.ingest import ingest
from fersynth.modeling.data import PRESETS, AugmentConfig, BatchAugment, BatchLoader, InputConfig, cache_path, decoded
from fersynth.variants.variant import Variant


@pytest.fixture(scope="module")
def variant(tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    ingest("nhfi", tiny_demo / "nhfi", root / "nhfi")
    return Variant(root / "nhfi")


def test_images_are_decoded_once_then_memory_mapped(variant, tmp_path):
    rows = variant.manifest.sort_values("key").head(20)
    first = decoded(variant, rows, InputConfig(size=32), tmp_path)
    assert first.shape == (20, 1, 32, 32) and first.dtype == np.uint8
    again = decoded(variant, rows, InputConfig(size=32), tmp_path)
    assert isinstance(again, np.memmap) and np.array_equal(first, again)
    expected = np.asarray(next(variant.iter_images(rows.head(1)))[1].convert("L").resize((32, 32), 3))
    assert np.array_equal(first[0, 0], expected)
    # other settings, other cache entry
    assert cache_path(variant, rows, InputConfig(size=48), tmp_path) != cache_path(
        variant, rows, InputConfig(size=32), tmp_path
    )
    rgb = decoded(variant, rows, InputConfig(size=32, channels=3), tmp_path)
    assert rgb.shape == (20, 3, 32, 32) and np.array_equal(rgb[:, 0], rgb[:, 1])  # grey repeated


def test_loader_visits_every_image_once_per_epoch_and_is_seeded():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(4, 2).repeat(4, 3)
    labels = np.arange(10)
    loader = BatchLoader(images, labels, batch_size=3, seed=5)
    seen = torch.cat([y for _, y in loader])
    assert sorted(seen.tolist()) == list(range(10)) and len(loader) == 3  # 3 + 3 + 4: no batch of one
    for x, y in loader:  # images stay paired with their labels
        assert torch.allclose(x[:, 0, 0, 0] * 255, y.float())
    orders = [[y.tolist() for _, y in BatchLoader(images, labels, 3, seed=5)] for _ in range(2)]
    assert orders[0] == orders[1]


def test_augmentation_is_per_sample_and_flips_are_exact():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 24, 24)
    flipped = BatchAugment(AugmentConfig(horizontal_flip=True))(x, torch.Generator().manual_seed(1))
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, x, strict=True)]
    same = [torch.equal(a, b) for a, b in zip(flipped, x, strict=True)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True)) and 0 < sum(mirrored) < 16
    moved = BatchAugment(PRESETS["paper004"])(
        x.repeat(1, 1, 1, 1)[:1].repeat(8, 1, 1, 1), torch.Generator().manual_seed(2)
    )
    assert moved.shape == (8, 1, 24, 24) and moved.min() >= 0 and moved.max() <= 1
    assert len({round(float(m.sum()), 4) for m in moved}) == 8  # eight different draws, not one


def test_a_lone_last_training_image_joins_the_previous_batch():
    images = np.zeros((9, 1, 2, 2), dtype=np.uint8)
    sizes = [len(y) for _, y in BatchLoader(images, np.arange(9), batch_size=4, seed=0)]
    assert sizes == [4, 5]  # not [4, 4, 1]: BatchNorm cannot train on one image
    assert [len(y) for _, y in BatchLoader(images, np.arange(9), batch_size=4, shuffle=False)] == [4, 4, 1]
