import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fersynth.generate.artificial import ArtificialConfig, all_cells, generate_artificial
from fersynth.generate.augmented import AugmentedConfig, class_quotas, generate_augmented
from fersynth.generate.backends import BackendConfig, DemoBackend, DemoBackendConfig
from fersynth.generate.common import ImageFormat
from fersynth.generate.convert import to_dataset_format
from fersynth.generate.diffusers_backend import DiffusersBackend, DiffusersConfig
from fersynth.generate.gate import Gate, GateConfig, GateResult
from fersynth.generate.prompts import (
    ACTION_UNITS,
    TABLE11_ACTION_UNITS,
    PromptBuilder,
    PromptConfig,
    with_action_units,
)
from fersynth.generate.quota import fill_quotas, shortfall
from fersynth.ingest import ingest
from fersynth.testing.random_pipeline import save_random_pipeline
from fersynth.variants.labels import BASIC7
from fersynth.variants.variant import Variant
from tests.conftest import opinionated_classifier

NO_FACE_CHECK = GateConfig(detector="none")


# prompts ------------------------------------------------------------------------------------------
def test_table11_prompt_matches_the_papers_example():
    request = PromptBuilder(PromptConfig()).request("angry", "female", "old", "asian", seed=1)
    assert request.prompt == (
        "A detailed photographic portrait of a perfect face of an asian old female, feeling an extreme rage, "
        "expressing a very angry face, features well-defined, facing the camera, realistic, 4K, hd"
    )


def test_group_words_are_params_and_others_is_not_a_word_in_a_prompt():
    default = PromptBuilder(PromptConfig()).request("happy", "male", "child", "others", seed=1).prompt
    assert "latin american child male" in default and "others" not in default
    custom = PromptConfig(ethnicity_words={"white": "w", "black": "b", "asian": "a", "indian": "i", "others": "mixed"})
    assert "a mixed child male" in PromptBuilder(custom).request("happy", "male", "child", "others", seed=1).prompt


def test_variation_prompts_name_every_nuisance_and_vary_across_seeds():
    builder = PromptBuilder(PromptConfig(style="variations"))
    requests = [builder.request("angry", "male", "child", "white", seed=s) for s in range(40)]
    first = requests[0]
    assert first.prompt.startswith("An image of a child, white male with a scowling expression and tight lips")
    assert f"captured in {first.lighting} light, from a {first.angle} angle" in first.prompt
    assert len({(r.lighting, r.angle, r.obstruction, r.blur) for r in requests}) > 10


def test_prompts_file_replaces_templates(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text("\n".join(f"{e}: 'a {{person}} who is {e}'" for e in BASIC7))
    request = PromptBuilder(PromptConfig(file=str(path))).request("sad", "female", "young", "indian", seed=3)
    assert request.prompt == "an indian young female who is sad"
    path.write_text("angry: x")
    with pytest.raises(ValueError, match="no prompt template"):
        PromptBuilder(PromptConfig(file=str(path)))


def test_action_units_are_named_in_every_prompt_or_in_none():
    paper, every, none = (PromptBuilder(PromptConfig(action_units=mode)) for mode in ("paper", "all", "none"))
    for emotion in BASIC7:
        asked = [b.request(emotion, "female", "adult", "black", seed=4).prompt for b in (paper, every, none)]
        if emotion in TABLE11_ACTION_UNITS:  # paper 001 named them for disgust and surprise
            assert TABLE11_ACTION_UNITS[emotion] in asked[0] and asked[1] == asked[0]
            assert TABLE11_ACTION_UNITS[emotion] not in asked[2] and asked[2].endswith("realistic, 4K, hd")
        else:
            assert asked[2] == asked[0]
            assert all(unit in asked[1] for unit in ACTION_UNITS[emotion])
            assert (asked[1] == asked[0]) == (emotion == "neutral")
    # named right after the expression: CLIP reads the first 77 tokens only
    happy = every.request("happy", "male", "old", "asian", seed=1).prompt
    assert happy.index("lip corner puller") < happy.index("facing the camera")
    variations = PromptBuilder(PromptConfig(style="variations", action_units="all"))
    assert (
        "cheek raiser, lip corner puller, captured in" in variations.request("happy", "male", "old", "asian", 1).prompt
    )
    # a user's own template: `none` takes out whatever action units it names, `all` adds only the missing ones
    own = "a {person}, inner brow raiser,  brow lowerer, crying, lip corner depressor"
    assert with_action_units("sad", own, "none") == "a {person}, crying"
    assert with_action_units("sad", own, "all") == own
    assert with_action_units("sad", "a {person}, brow lowerer, crying", "all").count("brow lowerer") == 1
    with pytest.raises(ValueError, match="action_units must be one of paper, all, none, not 'some'"):
        PromptConfig(action_units="some")


def test_action_units_reach_the_diffusion_model(tiny_pipeline, tmp_path):
    kind, path = tiny_pipeline
    templates = tmp_path / "prompts.yaml"  # short: the tiny pipeline's byte-level tokenizer reads 77 characters
    templates.write_text("\n".join(f"{e}: 'a {e} face, facing the camera'" for e in BASIC7))
    backend = DiffusersBackend(DiffusersConfig(model=str(path), pipeline=kind, steps=2, size=64, local_files_only=True))
    plain, named = (
        PromptBuilder(PromptConfig(file=str(templates), action_units=mode)).request("sad", "female", "old", "black", 9)
        for mode in ("paper", "all")
    )
    assert plain.seed == named.seed and plain.prompt != named.prompt
    a, b = (np.asarray(backend.generate([r])[0]).astype(int) for r in (plain, named))
    assert np.abs(a - b).max() > 0  # same seed, other text: the conditioning changed the picture


def test_file_names_never_collide_where_the_papers_did():
    builder = PromptBuilder(PromptConfig())
    names = {
        builder.request(*cell, seed=s, attempt=a).file_name for cell in all_cells()[:5] for s in (1, 2) for a in (0, 1)
    }
    assert len(names) == 20


# backends -----------------------------------------------------------------------------------------
def test_demo_backend_is_deterministic_and_shows_the_requested_emotion():
    builder = PromptBuilder(PromptConfig())
    backend = DemoBackend(DemoBackendConfig(size=64))
    happy, sad, happy_again = backend.generate(
        [
            builder.request("happy", "male", "adult", "white", seed=5),
            builder.request("sad", "male", "adult", "white", seed=5),
        ]
        + [builder.request("happy", "male", "adult", "white", seed=5)]
    )
    assert happy.size == (64, 64) and happy.mode == "RGB"
    assert happy.tobytes() == happy_again.tobytes() and happy.tobytes() != sad.tobytes()


@pytest.fixture(scope="module", params=["sd", "sdxl"])
def tiny_pipeline(request, tmp_path_factory):
    path = save_random_pipeline(tmp_path_factory.mktemp(request.param) / "pipe", kind=request.param)
    return request.param, path


def test_tiny_diffusers_pipeline_reloads_by_path_and_seeds_decide_images(tiny_pipeline):
    kind, path = tiny_pipeline
    config = DiffusersConfig(model=str(path), pipeline=kind, steps=2, size=64, batch_size=2, local_files_only=True)
    backend = DiffusersBackend(config)
    builder = PromptBuilder(PromptConfig())
    requests = [builder.request("happy", "male", "adult", "white", seed=s) for s in (1, 2, 1)]
    images = backend.generate(requests)
    assert [(i.size, i.mode) for i in images] == [((64, 64), "RGB")] * 3
    first, other, again = (np.asarray(i).astype(int) for i in images)
    # the same seed gives the same picture whether it was first of a batch of two or alone in a batch
    assert np.abs(first - again).max() <= 2
    assert np.abs(first - other).mean() > 10
    assert backend.pipe.scheduler.__class__.__name__ == ("PNDMScheduler" if kind == "sd" else "EulerDiscreteScheduler")


def test_scheduler_and_negative_prompt_are_applied(tiny_pipeline):
    kind, path = tiny_pipeline
    base = {"model": str(path), "pipeline": kind, "steps": 2, "size": 64, "local_files_only": True}
    backend = DiffusersBackend(DiffusersConfig(**base, scheduler="dpm_solver"))
    assert backend.pipe.scheduler.__class__.__name__ == "DPMSolverMultistepScheduler"
    plain = PromptBuilder(PromptConfig()).request("fear", "female", "old", "black", seed=9)
    negative = PromptBuilder(PromptConfig(negative_prompt="cartoon")).request("fear", "female", "old", "black", seed=9)
    a, b = (np.asarray(backend.generate([r])[0]).astype(int) for r in (plain, negative))
    assert np.abs(a - b).max() > 0  # guidance now pushes away from "cartoon" instead of from ""


def test_diffusers_backend_writes_traceable_rows(tiny_pipeline, tmp_path):
    kind, path = tiny_pipeline
    diffusers = DiffusersConfig(model=str(path), pipeline=kind, steps=2, size=64, batch_size=4, local_files_only=True)
    config = ArtificialConfig(
        per_cell={"test": 1}, backend=BackendConfig(name="diffusers", diffusers=diffusers), format=ImageFormat(48, "L")
    )
    report = generate_artificial(tmp_path / "art", config, NO_FACE_CHECK, cells=all_cells()[:3])
    manifest = Variant(tmp_path / "art").manifest
    assert report["accepted"] == len(manifest) == 3
    row = manifest.iloc[0]
    assert (row["generator"], row["model"], row["steps"], row["guidance"]) == ("diffusers", str(path), 2, 7.5)
    assert (row["width"], row["height"], row["mode"]) == (48, 48, "L")
    assert row["prompt"].startswith("A detailed photographic portrait") and row["synthetic"]
    # what else decides the pictures is in the variant's report: a row plus these regenerates the image
    settings = json.loads((tmp_path / "art" / "generate.json").read_text())["backend_settings"]
    assert (settings["pipeline"], settings["batch_size"], settings["deepcache_interval"]) == (kind, 4, 0)


# conversion ---------------------------------------------------------------------------------------
def test_conversion_to_each_datasets_format():
    picture = Image.new("RGB", (512, 512), (200, 30, 30))
    assert (to_dataset_format(picture, "nhfi").size, to_dataset_format(picture, "nhfi").mode) == ((224, 224), "L")
    assert (to_dataset_format(picture, "fer2013").size, to_dataset_format(picture, "fer2013").mode) == ((48, 48), "L")
    assert to_dataset_format(picture, "affectnet").mode == "RGB"
    with pytest.raises(ValueError, match="no target format"):
        to_dataset_format(picture, "jaffe")


# quotas -------------------------------------------------------------------------------------------
class RejectEveryOther:
    """A gate that rejects every other picture it sees: quotas need more than one round."""

    def __init__(self):
        self.seen = 0

    def check(self, image, emotion=None):
        self.seen += 1
        return GateResult(self.seen % 2 == 0, "ok" if self.seen % 2 == 0 else "dark", -1, 1.0)


def test_quotas_are_met_within_the_attempt_budget_and_shortfalls_reported():
    builder = PromptBuilder(PromptConfig())
    backend = DemoBackend(DemoBackendConfig(size=32))
    quotas = {all_cells()[0]: 2, all_cells()[1]: 1}
    kept = []
    attempts = fill_quotas(quotas, builder, backend, RejectEveryOther(), 3, 4, lambda r, i, g: kept.append(r))
    assert len(kept) == 3 and not shortfall(quotas, attempts)
    assert len({a.request.seed for a in attempts}) == len(attempts)  # every attempt its own seed
    never = Gate(GateConfig(detector="none", blank_std_below=1000))  # everything is "blank"
    attempts = fill_quotas(quotas, builder, backend, never, 3, 4, lambda r, i, g: kept.append(r))
    assert len(attempts) == 3 * 4 and shortfall(quotas, attempts) == {
        "/".join(all_cells()[0]): 2,
        "/".join(all_cells()[1]): 1,
    }


def test_class_quotas_spread_each_class_over_its_cells():
    quotas = class_quotas(45, seed=1)
    for emotion in BASIC7:
        counts = [n for cell, n in quotas.items() if cell[0] == emotion]
        assert sum(counts) == 45 and set(counts) == {1, 2} and len(counts) == 40


# variants -----------------------------------------------------------------------------------------
def test_artificial_variant_is_reproducible_and_complete(tmp_path):
    config = ArtificialConfig(per_cell={"train": 1, "test": 1}, format=ImageFormat(48, "L"))
    report = generate_artificial(tmp_path / "a", config, NO_FACE_CHECK, tmp_path / "m.json")
    generate_artificial(tmp_path / "b", config, NO_FACE_CHECK)
    assert (tmp_path / "a" / "manifest.parquet").read_bytes() == (tmp_path / "b" / "manifest.parquet").read_bytes()
    manifest = Variant(tmp_path / "a").manifest
    cells = manifest.groupby(["split", "emotion", "gender", "age_group", "ethnicity"]).size()
    assert len(cells) == 2 * 280 and set(cells) == {1}
    assert report["short_cells"] == {} and json.loads((tmp_path / "m.json").read_text())["accepted"] == 560
    gate_log = pd.read_csv(tmp_path / "a" / "gate.csv")
    assert list(gate_log.columns[:5]) == ["file", "split", "accepted", "reason", "faces"]
    assert len(gate_log) == report["attempts"]


def test_the_emotion_classifier_gates_train_rows_only_and_the_metrics_say_so(tmp_path):
    classifier = opinionated_classifier(tmp_path / "gate")  # sees "neutral" in every face
    gate_config = GateConfig(detector="none", classifier=str(classifier), emotion_top_k=1)
    config = ArtificialConfig(per_cell={"train": 1, "test": 1}, max_attempts_per_image=2, format=ImageFormat(48, "L"))
    cells = all_cells()[::20]  # 14 cells, two of them neutral
    report = generate_artificial(tmp_path / "a", config, gate_config, tmp_path / "m.json", cells=cells)
    gate_log = pd.read_csv(tmp_path / "a" / "gate.csv")
    rejected = gate_log[~gate_log["accepted"]]
    assert set(rejected["split"]) == {"train"} and rejected["reason"].str.startswith("emotion:").all()
    manifest = Variant(tmp_path / "a").manifest
    assert len(manifest[manifest["split"] == "test"]) == len(cells)  # no test cell left short by the classifier
    assert set(manifest.loc[manifest["split"] == "train", "emotion"]) == {"neutral"}
    assert set(report["short_cells"]) == {"train"}
    assert json.loads((tmp_path / "m.json").read_text())["gate"] == {
        "test": ["quality"],
        "train": ["quality", f"emotion:{classifier}"],
    }


def test_augmented_variant_adds_generated_rows_to_train_only(tiny_demo, tmp_path):
    ingest("fer2013", tiny_demo / "fer2013", tmp_path / "fer2013")
    config = AugmentedConfig(per_class=3, max_attempts_per_image=20, prompts=PromptConfig(style="variations"))
    generate_augmented(tmp_path / "fer2013", tmp_path / "aug", config, NO_FACE_CHECK)
    source, augmented = Variant(tmp_path / "fer2013"), Variant(tmp_path / "aug")
    real = augmented.manifest[~augmented.manifest["synthetic"]]
    generated = augmented.manifest[augmented.manifest["synthetic"]]
    assert set(generated["split"]) == {"train"} and generated["emotion"].value_counts().to_dict() == dict.fromkeys(
        BASIC7, 3
    )
    assert set(zip(generated["width"], generated["height"], generated["mode"], strict=True)) == {(48, 48, "L")}
    before = {r["key"]: d for r, d in source.iter_bytes()}
    after = {r["key"]: d for r, d in augmented.iter_bytes(real)}
    assert after == before  # every source row, val and test included, byte for byte


def test_deepcache_skips_deep_blocks_and_stays_seeded(tiny_pipeline):
    kind, path = tiny_pipeline
    base = {"model": str(path), "pipeline": kind, "steps": 6, "size": 64, "local_files_only": True}
    request = PromptBuilder(PromptConfig()).request("surprise", "male", "young", "indian", seed=4)
    calls = {}
    pictures = {}
    for name, interval in (("plain", 0), ("cached", 3)):
        backend = DiffusersBackend(DiffusersConfig(**base, deepcache_interval=interval))
        calls[name] = []
        # a resnet inside a deep block: it runs only on the steps DeepCache computes in full
        backend.pipe.unet.down_blocks[1].resnets[0].register_forward_pre_hook(lambda *_, c=calls[name]: c.append(1))
        pictures[name] = [np.asarray(backend.generate([request])[0]).astype(int) for _ in range(2)]
    assert len(calls["plain"]) >= 2 * 6
    assert len(calls["cached"]) <= len(calls["plain"]) / 2  # a full pass every 3rd step
    assert np.array_equal(*pictures["cached"])  # the cache is reset per picture: the same seed, the same picture
    assert np.abs(pictures["cached"][0] - pictures["plain"][0]).max() > 0  # and it did change the computation


def test_deepcache_and_compile_are_refused_together():
    with pytest.raises(ValueError, match="deepcache_interval"):
        DiffusersConfig(deepcache_interval=3, compile=True)
