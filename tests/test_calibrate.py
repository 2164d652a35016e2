import io
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image
from skimage import data
from torch import nn

from fersynth.annotate.calibrate import CalibrateConfig, calibrate, check_judges, load_judges
from fersynth.annotate.calibrate.calibrate import decide, vote
from fersynth.annotate.calibrate.judges import FER_CLASSES, FerJudge, JudgeInfo, TrainedJudge, judge_conflicts
from fersynth.cli import main
from fersynth.errors import UsageError
from fersynth.modeling.architectures import build_model
from fersynth.modeling.checkpoint import save_checkpoint
from fersynth.variants.labels import BASIC7
from fersynth.variants.variant import Variant, VariantWriter

# Eileen Collins (scikit-image's astronaut), smiling: the face box MTCNN finds in the picture
ASTRONAUT_FACE = (181, 62, 268, 172)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _variant(path, rows):
    """rows: (key, split, emotion, synthetic, picture)."""
    with VariantWriter(path) as writer:
        for key, split, emotion, synthetic, picture in rows:
            encoded = _png(picture)
            writer.add(
                {
                    "key": key,
                    "source": f"{key}.png",
                    "split": split,
                    "emotion": emotion,
                    "label": BASIC7.index(emotion),
                    "label_space": "basic7",
                    "dataset": "toy",
                    "synthetic": synthetic,
                    "generator": "sdxl" if synthetic else None,
                    "gender": "female",
                    "age_group": "adult",
                    "ethnicity": "white",
                },
                Image.open(io.BytesIO(encoded)),
                encoded,
            )
        writer.commit()
    return path


@pytest.fixture(scope="module")
def smiling():
    return Image.fromarray(data.astronaut()).crop(ASTRONAUT_FACE).convert("L").resize((48, 48))


@pytest.fixture(scope="module")
def fer_judge():
    return FerJudge()


def fixed_judge(directory, favourite: str, classes=FER_CLASSES, variants=("data/real",)):
    """A saved `fersynth train` classifier that sees ``favourite`` in every face; its classes in ``classes``'
    order (FER2013's by default, not basic7's)."""
    model = build_model("paper001_cnn", len(classes), 1, 48, width=0.25)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    head.bias.data[classes.index(favourite)] = 6.0
    config = {
        "architecture": "paper001_cnn",
        "width": 0.25,
        "input": {"size": 48, "channels": 1},
        "classes": list(classes),
        "variants": list(variants),
        "seed": 0,
    }
    save_checkpoint(directory, model, config)
    return directory


def test_the_fer_judge_sees_a_smile_in_a_real_photo(fer_judge, smiling, tmp_path):
    variant = Variant(_variant(tmp_path / "v", [("a", "train", "sad", True, smiling)]))
    probabilities = fer_judge.probabilities(variant, variant.manifest)
    assert probabilities.shape == (1, 7)
    assert BASIC7[int(probabilities[0].argmax())] == "happy" and probabilities[0].max() > 0.9
    assert np.isclose(probabilities.sum(), 1.0, atol=1e-4)
    assert fer_judge.info.kind == "fer" and len(fer_judge.info.sha256) == 64


def test_a_judge_is_read_by_class_name_not_by_position(tmp_path, smiling):
    variant = Variant(_variant(tmp_path / "v", [("a", "train", "sad", True, smiling)]))
    for favourite in ("sad", "surprise", "neutral"):  # columns 4, 5, 6 in FER2013's order; 5, 6, 4 in basic7's
        judge = TrainedJudge(fixed_judge(tmp_path / favourite, favourite))
        assert BASIC7[int(judge.probabilities(variant, variant.manifest)[0].argmax())] == favourite
    with pytest.raises(UsageError, match="not the seven basic emotions"):
        TrainedJudge(fixed_judge(tmp_path / "casme", "happiness", classes=("happiness", "others", "surprise")))


def test_votes_by_mean_and_by_majority():
    # three judges, two faces: judges 1 and 3 say angry weakly, judge 2 says disgust strongly
    p = np.zeros((3, 2, 7))
    p[0, :, 0], p[0, :, 1] = 0.6, 0.4
    p[1, :, 0], p[1, :, 1] = 0.05, 0.95
    p[2, :, 0], p[2, :, 1] = 0.6, 0.4
    p[:, 1] = np.eye(7)[[0, 1, 2]]  # second face: three different emotions
    voted, strength = vote(p, "mean")
    assert voted.tolist() == [1, 0] and np.isclose(strength[0], 1.75 / 3)
    voted, strength = vote(p, "majority")
    assert voted.tolist() == [0, -1] and np.allclose(strength, [2 / 3, 1 / 3])


def test_decisions_follow_action_and_min_confidence():
    asked = np.array([3, 3, 3, 3])  # happy
    voted = np.array([3, 5, 5, -1])  # happy, sad (strong), sad (weak), no majority
    strength = np.array([0.9, 0.8, 0.3, 0.4])
    relabel = decide(asked, voted, strength, CalibrateConfig(action="relabel", min_confidence=0.5))
    assert relabel["decision"].tolist() == ["kept", "relabelled", "dropped", "dropped"]
    assert relabel["final_emotion"].tolist() == ["happy", "sad", "", ""]
    assert "below min_confidence 0.5" in relabel["reason"][2] and "no majority" in relabel["reason"][3]
    drop = decide(asked, voted, strength, CalibrateConfig(action="drop"))
    assert drop["decision"].tolist() == ["kept", "dropped", "dropped", "dropped"]
    assert drop["reason"][1] == "calibrate: the judges voted sad (0.80); the prompt asked for happy"


@pytest.mark.parametrize("action", ["relabel", "drop"])
def test_calibrate_relabels_or_drops_what_the_judges_do_not_see_and_keeps_real_rows(
    action, fer_judge, smiling, tmp_path
):
    source = _variant(
        tmp_path / "src",
        [
            ("g_happy", "train", "happy", True, smiling),
            ("g_sad", "train", "sad", True, smiling),  # asked for sad, shows a smile
            ("g_test", "test", "sad", True, smiling),  # outside calibrate.splits: untouched
            ("r_train", "train", "sad", False, smiling),  # real: never judged
            ("r_val", "val", "happy", False, smiling),
            ("r_val2", "val", "sad", False, smiling),  # labelled sad, shows a smile: the judge is wrong here
        ],
    )
    config = CalibrateConfig(judges=("fer",), action=action, min_confidence=0.5)
    report = calibrate(source, tmp_path / "out", config, [fer_judge], tmp_path / "m.json")
    out = Variant(tmp_path / "out").manifest.set_index("key")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert report["kept"] + report["quarantined"] == report["read"] == 6
    assert metrics["judged"] == 2 and metrics["kept"] == 1
    assert out.loc["g_happy", "emotion"] == "happy"
    for key in ("g_test", "r_train", "r_val", "r_val2"):  # not judged: label and pixels as they were
        assert out.loc[key, "emotion"] == Variant(source).manifest.set_index("key").loc[key, "emotion"]
    if action == "relabel":
        assert out.loc["g_sad", "emotion"] == "happy" and out.loc["g_sad", "label"] == BASIC7.index("happy")
        assert metrics["relabelled_to"] == {"sad -> happy": 1}
        assert len(out) == 6
    else:
        assert "g_sad" not in out.index and len(out) == 5
        quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
        assert quarantine["source"].tolist() == ["g_sad.png"]
        assert quarantine["reason"][0].startswith("calibrate: the judges voted happy (1.00)")
    assert metrics["agreement"]["images"] == 2 and metrics["agreement"]["agreement"] == 0.5
    assert metrics["agreement_by"]["prompt_emotion"]["happy"]["agreement"] == 1.0
    assert metrics["agreement_by"]["prompt_emotion"]["sad"]["agreement"] == 0.0
    lo, hi = metrics["agreement"]["ci95"]
    assert 0 < lo < 0.5 < hi < 1
    real = metrics["judges_on_real_faces"]
    assert real["images"] == 2 and real["accuracy"]["fer"] == 0.5 and real["majority_class_share"] == 0.5
    assert real["unseen_by_judge"]["fer"] == {"images": 2, "accuracy": 0.5}
    assert metrics["judges_not_better_than_majority"] == ["fer"]  # no better than always saying "happy"
    assert metrics["generated_per_class"]["before"]["sad"] == 1
    assert metrics["generated_per_class"]["after"]["sad"] == 0
    assert metrics["generated_per_class"]["after"]["happy"] == (2 if action == "relabel" else 1)
    table = pd.read_csv(tmp_path / "out" / "calibrate.csv")
    assert sorted(table["key"]) == ["g_happy", "g_sad"] and set(table["judge:fer"]) == {"happy"}
    pixels = {k: v for k, v in Variant(tmp_path / "out").manifest.set_index("key")["sha256"].items()}
    assert all(pixels[k] == Variant(source).manifest.set_index("key").loc[k, "sha256"] for k in pixels)


def test_an_ensemble_outvotes_a_single_judge(fer_judge, smiling, tmp_path):
    source = _variant(tmp_path / "src", [("g", "train", "happy", True, smiling)])
    sad = [TrainedJudge(fixed_judge(tmp_path / f"sad{i}", "sad")) for i in range(2)]
    config = CalibrateConfig(judges=("fer", "a", "b"), vote="majority", action="relabel", real_split="")
    calibrate(source, tmp_path / "out", config, [fer_judge, *sad])
    assert Variant(tmp_path / "out").manifest["emotion"].tolist() == ["sad"]


PARAMS = {
    "train": {
        "fer2013": {"variants": ["data/original/fer2013"]},
        "fer2013_sdxl": {"variants": ["data/fer2013_sdxl"]},
        "calibrated": {"variants": ["data/calibrated/fer2013_sdxl"]},
    },
    "evaluate": {
        "models": {
            "fer2013": "models/fer2013",
            "fer2013_sdxl": "models/fer2013_sdxl",
            "calibrated": "models/calibrated",
        },
        "test_sets": {"fer2013": "data/original/fer2013", "other": "data/other"},
    },
    "compare": {
        "pairs": {
            "calibrated": {"baseline": "fer2013_sdxl", "test_sets": ["fer2013"]},
            "fer2013_sdxl": {"baseline": "fer2013", "test_sets": ["other"]},
        }
    },
}


def test_judges_that_are_compared_learned_from_synthetic_faces_or_saw_a_test_picture_are_refused(
    tmp_path, smiling, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    test_face, other_face = smiling.rotate(90), smiling.rotate(180)
    _variant(
        tmp_path / "data/original/fer2013",
        [("r", "train", "happy", False, smiling), ("t", "test", "sad", False, test_face)],
    )
    _variant(
        tmp_path / "data/other", [("o", "test", "sad", False, other_face)]
    )  # a pair the calibrated labels do not feed
    _variant(tmp_path / "data/real", [("r", "train", "happy", False, smiling), ("o", "val", "sad", False, other_face)])
    _variant(tmp_path / "data/mixed", [("g", "train", "happy", True, smiling)])
    # a merged-like variant: the same pixels as fer2013's TEST picture, under another name and split
    _variant(tmp_path / "data/merged", [("m", "val", "sad", False, test_face)])

    def info(source, trained_on):
        return JudgeInfo(source, "fersynth", source, tuple(trained_on))

    calibrated = "data/calibrated/fer2013_sdxl"
    # sharing the pair's real TRAIN pictures is allowed, so is having seen a test picture of an unrelated pair
    assert judge_conflicts(info("models/ok", ["data/real", "data/original/fer2013"]), calibrated, PARAMS) == []
    assert judge_conflicts(JudgeInfo("fer", "fer", "fer", ("FER2013",)), calibrated, PARAMS) == []
    assert judge_conflicts(info("models/fer2013_sdxl", ["data/real"]), calibrated, PARAMS) == [
        "it is fer2013_sdxl, a compared model"
    ]
    assert judge_conflicts(info(str(tmp_path / "models/fer2013_sdxl"), ["data/real"]), calibrated, PARAMS)  # absolute
    assert (
        "data/mixed has synthetic train rows"
        in judge_conflicts(info("models/x", ["data/mixed"]), calibrated, PARAMS)[0]
    )
    leak = "1 of its train/val pictures are test pictures of fer2013 (data/original/fer2013)"
    assert judge_conflicts(info("models/y", ["data/merged"]), calibrated, PARAMS) == [leak]
    # the same leak whatever way the calibrated variant is written
    assert judge_conflicts(info("models/y", ["data/merged"]), str(tmp_path / calibrated) + "/", PARAMS) == [leak]
    assert "not here to check" in judge_conflicts(info("models/z", ["data/gone"]), calibrated, PARAMS)[0]
    assert "names no training variants" in judge_conflicts(info("models/w", []), calibrated, PARAMS)[0]
    with pytest.raises(UsageError, match="models/fer2013_sdxl: it is fer2013_sdxl, a compared model"):
        check_judges([info("models/fer2013_sdxl", ["data/real"])], calibrated, PARAMS)


def test_cli_runs_the_stage_and_typos_are_one_line_errors(tmp_path, smiling, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _variant(tmp_path / "data" / "real", [("r", "train", "happy", False, smiling)])
    source = _variant(
        tmp_path / "data" / "gen", [("g", "train", "sad", True, smiling), ("h", "train", "happy", True, smiling)]
    )
    fixed_judge(tmp_path / "models" / "judge", "happy", variants=("data/real",))
    params = dict(PARAMS, calibrate={"judges": ["models/judge"], "action": "drop", "real_split": ""})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    runner = CliRunner()
    args = [
        "calibrate",
        str(source),
        "--out",
        "data/calibrated/fer2013_sdxl",
        "--metrics",
        "m.json",
        "--params",
        "params.yaml",
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert Variant(tmp_path / "data/calibrated/fer2013_sdxl").manifest["key"].tolist() == ["h"]
    (tmp_path / "models" / "empty").mkdir()
    for change, message in [
        ({"vote": "avg"}, "calibrate.vote must be one of mean, majority, not 'avg'"),
        ({"judges": ["models/nope"]}, "unknown judge 'models/nope'"),
        ({"judges": ["models/empty"]}, "judge models/empty is not a `fersynth train` model"),
        ({"judges": "models/judge"}, "CalibrateConfig.judges must be a list (each a string), not 'models/judge'"),
        ({"judges": ["models/judge", "models/judge/"]}, "names one judge twice: models/judge, models/judge/"),
        ({"judges": ["models/judge", "models/judge"]}, "names one judge twice: models/judge"),
        ({"splits": "train"}, "CalibrateConfig.splits must be a list"),
        ({"batch_size": 0}, "calibrate.batch_size must be a whole number >= 1"),
        ({"acton": "drop"}, "acton"),
    ]:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(dict(params, calibrate=params["calibrate"] | change)))
        result = runner.invoke(main, args)
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert load_judges(CalibrateConfig(judges=("models/judge",)))[0].info.trained_on == ("data/real",)
    # generated faces in another label space (CASME II) are refused in one line, never relabelled into basic7
    casme = tmp_path / "data" / "casme"
    _variant(casme, [("c", "train", "happy", True, smiling)])
    manifest = Variant(casme).manifest.assign(label_space="casme2")
    manifest.to_parquet(casme / "manifest.parquet", index=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = runner.invoke(main, ["calibrate", str(casme), "--out", "data/c2", "--params", "params.yaml"])
    assert result.exit_code == 2 and "1 generated rows are not labelled in basic7 (casme2)" in result.output


def test_bad_params_or_nothing_to_judge_stop_before_any_judging_in_one_line(tmp_path, smiling, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _variant(tmp_path / "data" / "real", [("r", "train", "happy", False, smiling)])
    rows = [("g", "train", "sad", True, smiling), ("v", "val", "sad", False, smiling)]
    source = _variant(tmp_path / "data" / "gen", rows)
    empty = _variant(tmp_path / "data" / "empty", [])
    real_only = _variant(tmp_path / "data" / "real_only", [("r", "train", "happy", False, smiling)])
    fixed_judge(tmp_path / "models" / "judge", "happy", variants=("data/real",))
    good = {"judges": ["models/judge"], "real_split": "val"}
    for variant, change, code, message in [
        (source, {"splits": ["nosuchsplit"]}, 2, "calibrate.splits 'nosuchsplit': not a split of"),
        (source, {"real_split": "vall"}, 2, "calibrate.real_split 'vall': not a split of"),
        (source, {"batch_size": True}, 2, "CalibrateConfig.batch_size must be a whole number, not True"),
        (source, {"min_confidence": "0.5"}, 2, "CalibrateConfig.min_confidence must be a finite number, not '0.5'"),
        (empty, {}, 1, "is empty: no generated faces to judge"),
        (real_only, {"real_split": ""}, 1, "has no generated faces in calibrate.splits train to judge"),
    ]:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(dict(PARAMS, calibrate=good | change)))
        result = CliRunner().invoke(main, ["calibrate", str(variant), "--out", "data/out", "--params", "params.yaml"])
        assert result.exit_code == code and "Traceback" not in result.output, result.output
        [line] = result.output.strip().splitlines()
        assert line.startswith("fersynth calibrate: error: ") and message in line, line
        assert not (tmp_path / "data" / "out").exists()
