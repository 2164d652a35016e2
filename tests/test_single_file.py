"""SDXL as one .safetensors file (Juggernaut XL's format): written in the original layout, loaded offline with
``from_single_file`` and a config directory that holds no weights, the same pictures as the diffusers layout."""

import shutil
import socket

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fersynth.errors import ParamsError
from fersynth.generate import single_file
from fersynth.generate.backends import BackendConfig
from fersynth.generate.diffusers_backend import DiffusersBackend, DiffusersConfig
from fersynth.generate.prompts import PromptBuilder, PromptConfig
from fersynth.generate.single_file import write_sdxl_single_file
from fersynth.testing.random_pipeline import build_pipeline


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    """A tiny SDXL pipeline three ways: diffusers layout, one original-layout file, configs without weights."""
    root = tmp_path_factory.mktemp("sdxl")
    pipe = build_pipeline("tiny", "sdxl", seed=3)
    pipe.save_pretrained(root / "diffusers")
    shutil.copytree(root / "diffusers", root / "configs")
    weights = [p for p in (root / "configs").rglob("*") if p.suffix in (".safetensors", ".bin")]
    for path in weights:
        path.unlink()
    assert len(weights) == 4  # unet, vae, both text encoders: the configs folder cannot supply any weight
    write_sdxl_single_file(pipe, root / "tiny-sdxl.safetensors")
    return pipe, root


def _pictures(config: DiffusersConfig) -> list[bytes]:
    builder = PromptBuilder(PromptConfig())
    requests = [builder.request(e, "female", "adult", "asian", seed=s) for s, e in enumerate(("happy", "angry"))]
    return [image.tobytes() for image in DiffusersBackend(config).generate(requests)]


def test_single_file_loads_offline_and_draws_what_the_diffusers_layout_draws(sdxl, monkeypatch):
    pipe, root = sdxl

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access while loading a local single file: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    common = {"pipeline": "sdxl", "steps": 2, "size": 64, "batch_size": 2, "local_files_only": True}
    from_file = DiffusersConfig(
        model=str(root / "tiny-sdxl.safetensors"), single_file_config=str(root / "configs"), **common
    )
    backend = DiffusersBackend(from_file)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        loaded, original = getattr(backend.pipe, name).state_dict(), getattr(pipe, name).state_dict()
        assert loaded.keys() == original.keys(), name
        assert all(torch.equal(loaded[k], original[k]) for k in original), name
    pictures = _pictures(from_file)
    assert pictures == _pictures(DiffusersConfig(model=str(root / "diffusers"), **common))
    assert pictures[0] != pictures[1]


def test_the_file_has_the_original_sdxl_layout(sdxl):
    _, root = sdxl
    with safe_open(root / "tiny-sdxl.safetensors", "pt") as f:
        keys = set(f.keys())
        in_proj = f.get_tensor("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight")
        attention = f.get_tensor("first_stage_model.encoder.mid.attn_1.q.weight")
    # the keys diffusers (and A1111 / ComfyUI) use to recognise SDXL's parts
    for key in (
        "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight",
        "conditioner.embedders.1.model.positional_embedding",
        "conditioner.embedders.1.model.text_projection",
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.label_emb.0.0.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "first_stage_model.decoder.up.0.block.0.conv1.weight",
    ):
        assert key in keys, key
    assert not any(k.startswith(("unet.", "vae.", "text_encoder")) for k in keys)
    assert in_proj.shape == (3 * 64, 64)  # q, k and v of the 64-wide second encoder in one matrix
    assert attention.shape[-2:] == (1, 1)  # the VAE's attention projections are 1x1 convolutions there


def test_a_layout_diffusers_would_misread_is_refused_before_writing(sdxl, tmp_path, monkeypatch):
    pipe, _ = sdxl
    original = single_file._unet_to_original

    def shifted(state, config):  # a wrong block number for one resnet
        out = original(state, config)
        key = next(k for k in out if ".input_blocks.1.0." in k)
        out[key.replace(".input_blocks.1.0.", ".input_blocks.4.0.")] = out.pop(key)
        return out

    monkeypatch.setattr(single_file, "_unet_to_original", shifted)
    with pytest.raises(ValueError, match="single-file unet"):
        write_sdxl_single_file(pipe, tmp_path / "bad.safetensors")
    assert not list(tmp_path.iterdir())


def test_a_text_encoder_written_wrongly_is_refused_too(sdxl, tmp_path, monkeypatch):
    pipe, _ = sdxl
    original = single_file._open_clip_to_original

    def untransposed(state):  # forgetting that the original text_projection is stored transposed
        out = original(state)
        key = single_file.OPEN_CLIP_PREFIX + "text_projection"
        out[key] = out[key].T.contiguous()
        return out

    monkeypatch.setattr(single_file, "_open_clip_to_original", untransposed)
    with pytest.raises(ValueError, match="single-file text_encoder_2: text_projection.weight"):
        write_sdxl_single_file(pipe, tmp_path / "bad.safetensors")


def test_another_vae_replaces_the_checkpoints(sdxl, tmp_path):
    _, root = sdxl
    other = build_pipeline("tiny", "sdxl", seed=9).vae
    other.save_pretrained(tmp_path / "vae")
    config = DiffusersConfig(
        model=str(root / "tiny-sdxl.safetensors"),
        single_file_config=str(root / "configs"),
        pipeline="sdxl",
        vae=str(tmp_path / "vae"),
        local_files_only=True,
    )
    loaded = DiffusersBackend(config).pipe.vae.state_dict()
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in loaded.items())


@pytest.mark.parametrize(
    ("model", "config", "pipeline", "message"),
    [
        ("missing.safetensors", "configs", "sdxl", "no such file"),
        ("tiny-sdxl.safetensors", "", "sdxl", "single_file_config must name a local"),
        ("tiny-sdxl.safetensors", "nowhere", "sdxl", "no model_index.json there"),
        ("tiny-sdxl.safetensors", "diffusers/unet", "sdxl", "no model_index.json there"),
        (
            "tiny-sdxl.safetensors",
            "configs",
            "sd",
            "describes a StableDiffusionXLPipeline, not a StableDiffusionPipeline",
        ),
    ],
)
def test_unloadable_single_files_are_refused_with_one_line_before_any_work(sdxl, model, config, pipeline, message):
    _, root = sdxl
    diffusers = DiffusersConfig(
        model=str(root / model),
        single_file_config=config and str(root / config),
        pipeline=pipeline,
        local_files_only=True,
    )
    with pytest.raises(ParamsError, match=message) as error:
        BackendConfig(name="diffusers", diffusers=diffusers)  # what a generation stage builds from its params
    assert "\n" not in str(error.value)
    BackendConfig(name="demo", diffusers=diffusers)  # params of a backend not in use need no files


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", "juggernaut.ckpt", "pickled checkpoints"),
        ("vae", "sdxl-vae.pt", "pickled checkpoints"),
        ("vae", "sdxl-vae.safetensors", "not one file"),
        ("deepcache_interval", 1, "integer >= 2"),
        ("deepcache_interval", "3", "integer >= 2"),
    ],
)
def test_unsafe_or_meaningless_settings_are_refused_by_the_config(field, value, message):
    with pytest.raises(ValueError, match=message) as error:
        DiffusersConfig(**{field: value})
    assert "\n" not in str(error.value)


def test_images_from_a_single_file_are_not_all_one_colour(sdxl):
    _, root = sdxl
    config = DiffusersConfig(
        model=str(root / "tiny-sdxl.safetensors"),
        single_file_config=str(root / "configs"),
        pipeline="sdxl",
        steps=2,
        size=64,
        local_files_only=True,
    )
    picture = np.frombuffer(_pictures(config)[0], dtype=np.uint8)
    assert picture.std() > 5  # weights missing from the file would leave empty or NaN (black) pictures


def test_full_size_sdxl_has_sdxls_parameter_counts_and_the_writer_knows_its_layout():
    """On the meta device (shapes only): the benchmark's random SDXL has SDXL base's shapes, and the writer's keys
    for that 2.6 B UNet are the ones diffusers reads and recognises as SDXL base."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )

    pipe = build_pipeline("full", "sdxl", device="meta")
    millions = {
        name: round(sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e6, 1)
        for name in ("unet", "vae", "text_encoder", "text_encoder_2")
    }
    assert millions == {"unet": 2567.5, "vae": 83.7, "text_encoder": 123.1, "text_encoder_2": 694.7}
    state = single_file.sdxl_original_state(pipe)
    assert infer_diffusers_model_type(state) == "xl_base"
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in state  # up block 0 has attention: slot 2
    assert "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight" in state
    assert convert_ldm_unet_checkpoint(state, pipe.unet.config).keys() == pipe.unet.state_dict().keys()
    assert convert_ldm_vae_checkpoint(state, pipe.vae.config).keys() == pipe.vae.state_dict().keys()
