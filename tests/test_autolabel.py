import json

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from fersynth.annotate.autolabel import AutolabelConfig, autolabel, check_labeler
from fersynth.cli import main
from fersynth.errors import UsageError
from fersynth.ingest import ingest
from fersynth.modeling.data import InputConfig
from fersynth.train.recipe import TrainConfig
from fersynth.train.train import train
from fersynth.variants.labels import BASIC7
from fersynth.variants.variant import Variant, VariantWriter


@pytest.fixture(scope="module")
def labeled(tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("autolabel")
    mp = pytest.MonkeyPatch()
    mp.setenv("DVC_ROOT", str(root))
    ingest("fer2013", tiny_demo / "fer2013", root / "fer2013")
    report = ingest("sfhq", tiny_demo / "sfhq", root / "sfhq")
    config = TrainConfig(variants=(str(root / "fer2013"),), input=InputConfig(size=32), epochs=2, batch_size=16)
    train(config, root / "model", run_name="labeler")
    yield root, report
    mp.undo()


def test_a_plain_folder_ingests_unlabeled_and_quarantines_what_is_not_a_face_image(labeled, tiny_demo):
    root, report = labeled
    manifest = Variant(root / "sfhq").manifest
    assert manifest["label"].isna().all() and set(manifest["label_space"]) == {"none"}
    assert manifest["synthetic"].all() and set(manifest["generator"]) == {"sfhq-stylegan2"}
    assert set(manifest["split"]) == {"train", "val", "test"}
    quarantine = pd.read_csv(root / "sfhq" / "quarantine.csv")
    assert set(quarantine["source"]) == {
        "README.txt",
        "images/images/SFHQ_pt1_broken_0.jpg",
        "images/images/SFHQ_pt1_broken_1.jpg",
    }
    assert report["kept"] + report["quarantined"] == report["read"] == 83


def test_autolabel_matches_the_reference_class_counts_and_scores_the_hidden_labels(labeled, tiny_demo):
    root, _ = labeled
    config = AutolabelConfig(model=str(root / "model"), match_counts_of=str(root / "fer2013"), ratio=0.5, seed=1)
    truth = tiny_demo / "ground_truth" / "sfhq.csv"
    report = autolabel(root / "sfhq", root / "labeled", config, root / "metrics.json", truth)
    out = Variant(root / "labeled").manifest
    assert set(out["label_space"]) == {"basic7"} and out["label"].notna().all()
    assert (out["emotion"] == [BASIC7[i] for i in out["label"]]).all()
    # never more than ratio x the reference's count per split and class; all of a class when it has fewer
    reference = Variant(root / "fer2013").manifest.groupby(["split", "label"]).size()
    table = pd.read_csv(root / "labeled" / "autolabel.csv")
    predicted = table.assign(label=table["emotion"].map(BASIC7.index)).groupby(["split", "label"]).size()
    kept = out.groupby(["split", "label"]).size()
    for (split, label), n in predicted.items():
        target = round(0.5 * reference.get((split, label), 0))
        assert kept.get((split, label), 0) == min(n, target), (split, label)
    # every ingested face is either in the labeled variant or set aside with a reason
    source = Variant(root / "sfhq").manifest
    quarantine = pd.read_csv(root / "labeled" / "quarantine.csv")
    assert len(out) + len(quarantine) == len(source) and quarantine["reason"].str.startswith("rule:").all()
    assert set(out["sha256"]) <= set(source["sha256"]) and set(out["split"]) <= {"train", "val", "test"}
    # agreement with the labels the demo hid: computed on exactly the faces it drew
    metrics = json.loads((root / "metrics.json").read_text())
    agreement = metrics["agreement_with_hidden_labels"]
    hidden = pd.read_csv(truth).dropna(subset=["true_emotion"]).set_index("source")["true_emotion"]
    expected = (table.set_index("source")["emotion"] == hidden.reindex(table["source"]).to_numpy()).mean()
    assert agreement["all"]["images"] == len(table) == 80
    assert agreement["all"]["accuracy"] == pytest.approx(expected, abs=1e-4)
    assert report["kept"] == len(out)
    assert metrics["labeler"] == {"model": str(root / "model"), "trained_on": [str(root / "fer2013")]}


def test_a_confidence_floor_sets_faces_aside(labeled):
    root, _ = labeled
    config = AutolabelConfig(model=str(root / "model"), match_counts_of="", min_confidence=0.99)
    report = autolabel(root / "sfhq", root / "confident", config)
    table = pd.read_csv(root / "confident" / "autolabel.csv")
    assert (table["kept"] == (table["confidence"] >= 0.99)).all()
    assert report["kept"] == int(table["kept"].sum())


def _compare_params(root, labeled) -> dict:
    """hybrid (real + the labeled faces) vs fer2013, on fer2013's test set."""
    return {
        "autolabel": {"model": str(root / "model"), "match_counts_of": ""},
        "train": {
            "fer2013": {"variants": [str(root / "fer2013")]},
            "hybrid": {"variants": [str(root / "fer2013"), str(labeled)]},
        },
        "evaluate": {"models": {}, "test_sets": {"fer2013": str(root / "fer2013")}},
        "compare": {"pairs": {"hybrid": {"baseline": "fer2013", "test_sets": ["fer2013"]}}},
    }


def test_a_labeler_trained_on_a_compared_models_data_is_refused_in_one_line(labeled, tmp_path):
    root, _ = labeled  # root / "model" is trained on root / "fer2013"
    params = _compare_params(root, tmp_path / "labeled")
    with pytest.raises(UsageError, match="training data of fer2013"):
        check_labeler(root / "model", tmp_path / "labeled", params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    arguments = [str(root / "sfhq"), "--out", str(tmp_path / "labeled"), "--params", str(tmp_path / "params.yaml")]
    result = CliRunner().invoke(main, ["autolabel", *arguments])
    assert result.exit_code == 2 and "Traceback" not in result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("fersynth autolabel: error: autolabel.model") and "training data of fer2013" in line
    assert not (tmp_path / "labeled").exists()  # refused before any work
    # the same model may label a variant no compared model trains on
    no_pairs = params | {"compare": {"pairs": {}}}
    assert check_labeler(root / "model", tmp_path / "labeled", no_pairs) == (str(root / "fer2013"),)


def test_bad_params_a_missing_model_or_an_empty_reference_are_one_line_errors_before_any_work(labeled, tmp_path):
    root, _ = labeled
    with VariantWriter(tmp_path / "empty") as writer:
        writer.commit()
    params = _compare_params(root, tmp_path / "labeled") | {"compare": {"pairs": {}}}
    good = {"model": str(root / "model"), "match_counts_of": str(root / "fer2013")}
    for source, change, code, message in [
        (root / "sfhq", {"ratio": "1.0"}, 2, "AutolabelConfig.ratio must be a finite number, not '1.0'"),
        (root / "sfhq", {"min_confidence": "0.5"}, 2, "AutolabelConfig.min_confidence must be a finite number"),
        (root / "sfhq", {"seed": "abc"}, 2, "AutolabelConfig.seed must be a whole number, not 'abc'"),
        (root / "sfhq", {"ratio": -1}, 2, "autolabel.ratio must be > 0, not -1"),
        (root / "sfhq", {"min_confidence": 5}, 2, "autolabel.min_confidence must be within [0, 1], not 5"),
        (root / "sfhq", {"model": str(tmp_path / "nomodel")}, 2, "nomodel is not a `fersynth train` model"),
        (root / "sfhq", {"match_counts_of": str(tmp_path / "none")}, 2, "match_counts_of: " + str(tmp_path / "none")),
        (root / "sfhq", {"match_counts_of": str(root / "sfhq")}, 1, "has no labeled faces: no class counts to match"),
        (tmp_path / "empty", {}, 1, "empty holds no faces to label"),
    ]:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params | {"autolabel": good | change}))
        arguments = [str(source), "--out", str(tmp_path / "labeled"), "--params", str(tmp_path / "params.yaml")]
        result = CliRunner().invoke(main, ["autolabel", *arguments])
        assert result.exit_code == code and "Traceback" not in result.output, result.output
        [line] = result.output.strip().splitlines()
        assert line.startswith("fersynth autolabel: error: ") and message in line, line
        assert not (tmp_path / "labeled").exists()
