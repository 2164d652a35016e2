"""SDXL checkpoints as one ``.safetensors`` file (how Juggernaut XL and most community models ship).

Loading: ``diffusers``' ``from_single_file`` reads the original (Stability "sgm") key layout and takes every
component's config from a diffusers-layout directory or hub id (``diffusers.single_file_config``); offline, a
local directory holding ``model_index.json``, the component ``config.json`` files, the tokenizers and the
scheduler config (no weights needed) is enough. Pickled ``.ckpt``/``.pt``/``.bin`` files are refused: loading
them runs code from the file.

Writing (``write_sdxl_single_file``): the inverse, a diffusers SDXL pipeline packed into that layout. A team can
keep a fine-tuned pipeline as one DVC object instead of a dozen files, and the tests write a tiny one to check
the loading path end to end. Every weight (UNet, VAE, both text encoders) is read back through diffusers' own
converters before the file is written, so a layout diffusers would read differently is an error here, not a
silently broken model.
"""

from __future__ import annotations

import json
from pathlib import Path

from fersynth.errors import ParamsError
from fersynth.variants.files import MAX_JSON_BYTES, MAX_WEIGHTS_BYTES, check_input, read_bounded

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

_RESNET = (  # diffusers name -> original name inside a UNet resnet
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_VAE_ATTENTION = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)
_OPEN_CLIP_LAYER = (
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
    ("self_attn.out_proj.", "attn.out_proj."),
)


def is_single_file(model: str) -> bool:
    """``model`` names one checkpoint file rather than a diffusers directory or hub id."""
    return Path(model).suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES


def refuse_pickle(name: str, path: str) -> None:
    """A pickled checkpoint runs code when it is loaded: refused by its suffix, before anything is read."""
    suffix = Path(path).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ParamsError(
            f"{name} {path!r}: pickled checkpoints ({suffix}) run code when loaded; "
            "use the model's .safetensors release"
        )


def check_single_file(model: str, config: str, local_files_only: bool, pipeline_class: str) -> None:
    """One-line errors for a single-file model that cannot be loaded safely, offline, or as ``pipeline_class``."""
    refuse_pickle("diffusers.model", model)
    if not Path(model).exists():
        raise ParamsError(f"diffusers.model {model!r}: no such file")
    check_input(Path(model), MAX_WEIGHTS_BYTES, "diffusers.model")  # diffusers maps it by path: a FIFO would hang
    if not config:
        if local_files_only:
            raise ParamsError(
                "diffusers.single_file_config must name a local diffusers-layout directory (model_index.json and "
                "component configs) when local_files_only is set; e.g. the configs of "
                "stabilityai/stable-diffusion-xl-base-1.0"
            )
        return
    index = Path(config) / "model_index.json"
    if index.exists():
        try:
            found = json.loads(read_bounded(index, MAX_JSON_BYTES)).get("_class_name")  # FileRejected: ValueError
        except (OSError, ValueError, AttributeError) as error:
            raise ParamsError(f"diffusers.single_file_config: unreadable {index}: {error}") from None
        if found != pipeline_class:
            raise ParamsError(f"diffusers.single_file_config {config!r} describes a {found}, not a {pipeline_class}")
    elif Path(config).exists() or local_files_only:
        raise ParamsError(f"diffusers.single_file_config {config!r}: no model_index.json there")


def load_single_file(pipeline_class, model: str, config: str, dtype, local_files_only: bool, **components):
    """``pipeline_class.from_single_file`` with the components' configs from ``config`` (a directory or hub id;
    empty: diffusers infers the model family from the checkpoint's keys, which needs the hub). ``components``
    replace parts of the checkpoint (e.g. ``vae=``)."""
    check_single_file(model, config, local_files_only, pipeline_class.__name__)
    kwargs = {"config": config} if config else {}
    return pipeline_class.from_single_file(
        model, dtype=dtype, local_files_only=local_files_only, **kwargs, **components
    )


# --- writing -----------------------------------------------------------------------------------------------


def _unet_to_original(state: dict, config) -> dict:
    layers = config["layers_per_block"]
    layers = layers if isinstance(layers, int) else layers[0]
    has_attention = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    renames: list[tuple[str, str]] = []
    for i in range(len(config["down_block_types"])):
        for j in range(layers):
            renames.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{1 + i * (layers + 1) + j}.0."))
            renames.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{1 + i * (layers + 1) + j}.1."))
        renames.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (layers + 1)}.0.op."))
    for i in range(len(config["up_block_types"])):
        for j in range(layers + 1):
            renames.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * (layers + 1) + j}.0."))
            renames.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * (layers + 1) + j}.1."))
        slot = 2 if has_attention[i] else 1
        renames.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * (layers + 1) + layers}.{slot}."))
    renames += [("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1.")]
    renames += [("mid_block.resnets.1.", "middle_block.2.")]
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",
        "add_embedding.linear_2.": "label_emb.0.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    out = {}
    for key, value in state.items():
        new = next((new + key[len(old) :] for old, new in fixed.items() if key.startswith(old)), None)
        if new is None:
            old, replacement = next(((o, r) for o, r in renames if key.startswith(o)), (None, None))
            if old is None:
                raise ValueError(f"single-file unet: no original name for {key!r} (an unsupported UNet layout)")
            rest = key[len(old) :]
            if ".resnets." in old:
                rest = _rename_first(rest, _RESNET)
            new = replacement + rest
        out[UNET_PREFIX + new] = value
    return out


def _rename_first(rest: str, table) -> str:
    for old, new in table:
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest


def _vae_to_original(state: dict, config) -> dict:
    blocks = len(config["up_block_types"])
    out = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut.", "nin_shortcut.")
        for i in range(blocks):
            new = new.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            new = new.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            new = new.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{blocks - 1 - i}.block.")
            new = new.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{blocks - 1 - i}.upsample.")
        for k in range(2):
            new = new.replace(f"mid_block.resnets.{k}.", f"mid.block_{k + 1}.")
        if "mid_block.attentions.0." in new:
            head, tail = new.split("mid_block.attentions.0.")
            new = head + "mid.attn_1." + _rename_first(tail, _VAE_ATTENTION)
            if value.ndim == 2:  # the original attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        out[VAE_PREFIX + new] = value
    return out


def _clip_l_to_original(state: dict) -> dict:
    # transformers >= 5.6 flattens CLIPTextModel (no ``text_model.`` level); the original layout has it
    return {CLIP_L_PREFIX + "text_model." + k.removeprefix("text_model."): v for k, v in state.items()}


def _open_clip_to_original(state: dict) -> dict:
    import torch

    out, qkv = {}, {}
    fixed = {
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    for key, value in state.items():
        if key in fixed:
            out[fixed[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif key.startswith("text_model.encoder.layers."):
            index, rest = key.removeprefix("text_model.encoder.layers.").split(".", 1)
            block = f"transformer.resblocks.{index}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                _, projection, kind = rest.split(".")
                qkv.setdefault((block, kind), {})[projection] = value
            else:
                out[block + _rename_first(rest, _OPEN_CLIP_LAYER)] = value
        elif not key.endswith("position_ids"):
            raise ValueError(f"unexpected OpenCLIP text-encoder key {key!r}")
    for (block, kind), parts in qkv.items():
        out[f"{block}attn.in_proj_{kind}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return {OPEN_CLIP_PREFIX + k: v for k, v in out.items()}


def sdxl_original_state(pipe) -> dict:
    """Every weight of a ``StableDiffusionXLPipeline`` under its original single-file key."""
    state = _unet_to_original(pipe.unet.state_dict(), pipe.unet.config)
    state |= _vae_to_original(pipe.vae.state_dict(), pipe.vae.config)
    state |= _clip_l_to_original(pipe.text_encoder.state_dict())
    state |= _open_clip_to_original(pipe.text_encoder_2.state_dict())
    return state


def _check_round_trip(pipe, state: dict) -> None:
    """diffusers' own converters must give back exactly the pipeline's weights, all four parts."""
    import torch
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    def flat(model, converted: dict) -> dict:  # transformers >= 5.6: CLIPTextModel has no text_model level
        if hasattr(model, "text_model"):
            return converted
        return {k.removeprefix("text_model."): v for k, v in converted.items()}

    for name, converted in (
        ("unet", convert_ldm_unet_checkpoint(state, pipe.unet.config)),
        ("vae", convert_ldm_vae_checkpoint(state, pipe.vae.config)),
        ("text_encoder", flat(pipe.text_encoder, convert_ldm_clip_checkpoint(state))),
        ("text_encoder_2", convert_open_clip_checkpoint(pipe.text_encoder_2, state, prefix=OPEN_CLIP_PREFIX)),
    ):
        expected = {k: v for k, v in getattr(pipe, name).state_dict().items() if not k.endswith("position_ids")}
        converted = {k: v for k, v in converted.items() if not k.endswith("position_ids")}
        if converted.keys() != expected.keys():
            missing = sorted(expected.keys() - converted.keys())[:3]
            extra = sorted(converted.keys() - expected.keys())[:3]
            raise ValueError(f"single-file {name}: diffusers would read other keys (missing {missing}, extra {extra})")
        for key, value in expected.items():
            if not torch.equal(converted[key].reshape(value.shape), value):
                raise ValueError(f"single-file {name}: {key} would load different values")


def write_sdxl_single_file(pipe, path: Path) -> Path:
    """Pack a diffusers ``StableDiffusionXLPipeline`` into one original-layout ``.safetensors`` file."""
    from safetensors.torch import save_file

    from fersynth.atomic import atomic_path

    state = {k: v.detach().contiguous() for k, v in sdxl_original_state(pipe).items()}
    _check_round_trip(pipe, state)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "writer": "fersynth"})
    return path
