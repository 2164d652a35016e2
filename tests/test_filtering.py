import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fersynth.annotate.filtering import FilterConfig, filter_variant, grey_entropy
from fersynth.demo.renderer import FaceSpec, render_face
from fersynth.variants.variant import Variant, VariantWriter


def _face(identity):
    """A demo face with sensor noise, as photos have (a noiseless cartoon is nearly flat)."""
    return _png(
        np.asarray(render_face(FaceSpec(emotion="happy", identity=identity, noise=4.0), (48, 48), "L", identity))
    )


def _png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def source(tmp_path):
    rng = np.random.default_rng(0)
    items = [(f"face{i}", "train", _face(i)) for i in range(6)]
    items += [
        ("blank", "train", _png(np.full((48, 48), 128))),
        ("noise", "train", _png(rng.integers(0, 256, (48, 48)))),
        ("noise_test", "test", _png(rng.integers(0, 256, (48, 48)))),
        ("face_test", "test", _face(9)),
    ]
    with VariantWriter(tmp_path / "src") as writer:
        for key, split, data in items:
            writer.add(
                {
                    "key": key,
                    "source": f"s/{key}",
                    "split": split,
                    "emotion": "happy",
                    "label": 3,
                    "label_space": "basic7",
                    "dataset": "toy",
                },
                Image.open(io.BytesIO(data)),
                data,
            )
        writer.commit()
    truth = pd.DataFrame(
        {"source": [f"s/{k}" for k, _, _ in items], "unrecognisable": [None] * 6 + ["blank", "noise", "noise", None]}
    )
    truth.to_csv(tmp_path / "truth.csv", index=False)
    return tmp_path / "src"


def test_entropy_separates_faces_blank_and_noise():
    face = grey_entropy(Image.open(io.BytesIO(_face(1))))
    blank = grey_entropy(Image.new("L", (48, 48), 90))
    noise = grey_entropy(Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48)).astype(np.uint8)))
    assert blank == 0.0 and noise > 7.5 and 3.0 < face < 7.5


def test_flagged_train_images_leave_test_stays(source, tmp_path):
    report = filter_variant(source, tmp_path / "out", FilterConfig(), tmp_path / "m.json", tmp_path / "truth.csv")
    kept = set(Variant(tmp_path / "out").manifest["key"])
    assert "blank" not in kept and "noise" not in kept
    assert {"noise_test", "face_test"} <= kept  # scope train: held-out splits stay as published
    flagged = pd.read_csv(tmp_path / "out" / "flagged.csv").set_index("key")
    assert flagged["removed"].to_dict() == {"blank": True, "noise": True, "noise_test": False}
    assert report["against_ground_truth"] == {
        "planted": 3,
        "flagged": 3,
        "true_positives": 3,
        "precision": 1.0,
        "recall": 1.0,
    }
    assert report["kept"] + report["quarantined"] == report["read"] == 10


def test_scope_all_removes_everywhere(source, tmp_path):
    filter_variant(source, tmp_path / "out", FilterConfig(scope="all"))
    assert "noise_test" not in set(Variant(tmp_path / "out").manifest["key"])


def test_copied_rows_keep_their_bytes(source, tmp_path):
    filter_variant(source, tmp_path / "out", FilterConfig())
    before = dict((row["key"], data) for row, data in Variant(source).iter_bytes())
    after = dict((row["key"], data) for row, data in Variant(tmp_path / "out").iter_bytes())
    assert all(before[key] == data for key, data in after.items())


def test_bad_thresholds_fail_fast():
    with pytest.raises(ValueError):
        FilterConfig(entropy_min=6, entropy_max=5)
