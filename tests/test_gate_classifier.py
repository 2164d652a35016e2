import json

import pytest

from fersynth.generate.artificial import ArtificialConfig, all_cells, generate_artificial
from fersynth.generate.backends import DemoBackend, DemoBackendConfig
from fersynth.generate.gate import Gate, GateConfig
from fersynth.generate.gate_classifier import EmotionClassifier, GateTrainConfig, gate_train
from fersynth.generate.prompts import PromptBuilder, PromptConfig
from fersynth.ingest import ingest
from fersynth.modeling.small_cnn import ModelConfig
from fersynth.report.contact_sheet import contact_sheets
from fersynth.variants.labels import BASIC7

FAST = GateTrainConfig(model=ModelConfig(epochs=15))


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    from fersynth.demo import DemoConfig, make_demo

    root = tmp_path_factory.mktemp("gate")
    make_demo(DemoConfig(datasets=("fer2013",), fer2013_rows=700), root / "demo")  # the session demo is too small
    ingest("fer2013", root / "demo" / "fer2013", root / "fer2013")
    metrics = gate_train(root / "fer2013", root / "model", FAST, root / "metrics.json")
    return root, metrics


def test_gate_classifier_learns_emotions_and_reloads(classifier_dir):
    root, metrics = classifier_dir
    assert json.loads((root / "metrics.json").read_text()) == metrics
    assert metrics["test_accuracy"] > metrics["test_majority_baseline"] + 0.15
    classifier = EmotionClassifier.load(root / "model")
    assert classifier.classes == BASIC7 and classifier.size == 48


def test_gate_with_a_classifier_rejects_the_wrong_emotion(classifier_dir):
    root, _ = classifier_dir
    gate = Gate(GateConfig(detector="none", classifier=str(root / "model")))
    builder = PromptBuilder(PromptConfig())
    faces = DemoBackend(DemoBackendConfig(size=128)).generate(
        [builder.request(e, "female", "adult", "white", seed=s) for e in ("happy", "surprise") for s in range(6)]
    )
    asked = ["happy"] * 6 + ["surprise"] * 6
    right = [gate.check(face, emotion) for face, emotion in zip(faces, asked, strict=True)]
    wrong = [gate.check(face, "sad") for face in faces]  # the same faces, claimed to be sad
    # the emotion check discriminates: far more faces pass under their own emotion than under "sad"
    assert sum(r.accepted for r in right) >= sum(r.accepted for r in wrong) + 4
    assert all(r.reason.startswith("emotion:") for r in wrong if not r.accepted)


def test_contact_sheets_one_png_per_class(tmp_path):
    config = ArtificialConfig(per_cell={"test": 2})
    generate_artificial(tmp_path / "art", config, GateConfig(detector="none"), cells=all_cells()[::20])
    counts = contact_sheets(tmp_path / "art", tmp_path / "sheets", per_class=4, columns=2, thumb=32)
    assert set(counts) == set(BASIC7) and set(counts.values()) == {4}
    from PIL import Image

    with Image.open(tmp_path / "sheets" / "happy.png") as sheet:
        assert sheet.size == (2 * 32, 2 * (32 + 14))
