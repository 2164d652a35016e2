"""Randomly initialised Stable Diffusion / SDXL pipelines built from configs, with no download.

Two uses: tests (a ``tiny`` pipeline, saved and reloaded by path, exercises the real diffusers backend:
prompts, seeds, batching, output format) and speed benchmarks (the ``full`` scale has the real shapes: SD 1.x's
860 M-parameter UNet, VAE and CLIP ViT-L text encoder; SDXL's 2.6 B UNet and its two text encoders, CLIP ViT-L
and OpenCLIP ViT-bigG; speed does not depend on weight values). The images are noise.

The tokenizer is a byte-level CLIP BPE vocabulary written here (256 byte symbols, their ``</w>`` forms,
the start and end tokens; no merges), which is all ``CLIPTokenizer`` needs to run offline.
"""

from __future__ import annotations

import json
from pathlib import Path

SCALES = ("tiny", "full")
KINDS = ("sd", "sdxl")


def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 / CLIP byte-to-unicode table (transformers 5 no longer exports it)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def write_tokenizer(directory: Path) -> None:
    from transformers import CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(directory)


def _text_config(scale: str, width: int = 32, open_clip_big_g: bool = False):
    from transformers import CLIPTextConfig

    if scale == "tiny":
        return CLIPTextConfig(
            vocab_size=514,
            hidden_size=width,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            projection_dim=width,
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
        )
    if open_clip_big_g:  # SDXL's second encoder
        return CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1280,
            intermediate_size=5120,
            num_attention_heads=20,
            num_hidden_layers=32,
            max_position_embeddings=77,
            projection_dim=1280,
            hidden_act="gelu",
        )
    return CLIPTextConfig(  # CLIP ViT-L/14's text tower, as in SD 1.x and SDXL's first encoder
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        max_position_embeddings=77,
        projection_dim=768,
        hidden_act="quick_gelu",
    )


def build_pipeline(scale: str = "tiny", kind: str = "sd", seed: int = 0, device: str = "cpu"):
    """A randomly initialised ``StableDiffusionPipeline`` (``kind="sd"``) or ``StableDiffusionXLPipeline``
    (``kind="sdxl"``) in float32, its weights made on ``device`` (``meta``: shapes only, nothing allocated)."""
    import torch

    if scale not in SCALES or kind not in KINDS:
        raise ValueError(f"unsupported random pipeline: scale {scale!r} (one of {SCALES}), kind {kind!r} ({KINDS})")
    with torch.device(device):
        return _build(scale, kind, seed)


def _build(scale: str, kind: str, seed: int):
    import tempfile

    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    if scale == "tiny":
        vae = AutoencoderKL(
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=64,
        )
    else:
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=1024 if kind == "sdxl" else 512,
            scaling_factor=0.13025 if kind == "sdxl" else 0.18215,
            force_upcast=True,  # SDXL's VAE overflows in float16: the pipeline decodes in float32
        )
    scheduler_args = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    with torch.device("cpu"):  # schedulers keep their tables on the CPU, whatever device the weights are made on
        if kind == "sdxl":
            scheduler = EulerDiscreteScheduler(**scheduler_args, steps_offset=1, timestep_spacing="leading")
        else:
            scheduler = PNDMScheduler(**scheduler_args, skip_prk_steps=True, steps_offset=1)
    if kind == "sdxl" and scale == "full":
        unet = UNet2DConditionModel(  # SDXL base: 2.6 B parameters
            sample_size=128,
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, 2, 10),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,  # 6 time ids x 256 + the pooled 1280
            cross_attention_dim=2048,  # 768 + 1280
        )
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(scale, open_clip_big_g=True))
    elif kind == "sdxl":
        text_encoder_2 = None
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=112,  # 6 time ids x 8 + the second encoder's pooled 64
            cross_attention_dim=96,  # both text encoders' hidden states side by side (32 + 64)
            norm_num_groups=8,
        )
    if kind == "sdxl":
        # the second encoder is wider than the first, as in SDXL (768 / 1280): single-file loading tells the two
        # apart by width
        if text_encoder_2 is None:
            text_encoder_2 = CLIPTextModelWithProjection(_text_config(scale, width=64))
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(_text_config(scale)),
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
        )
    if scale == "tiny":
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32),
            layers_per_block=1,
            sample_size=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=8,
        )
    else:
        unet = UNet2DConditionModel(  # SD 1.x: 860 M parameters
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=768,
            attention_head_dim=8,
        )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(_text_config(scale)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_random_pipeline(
    directory: Path, scale: str = "tiny", kind: str = "sd", seed: int = 0, device: str = "cpu"
) -> Path:
    """Build and ``save_pretrained`` a random pipeline; load it back with the diffusers backend by path. Full-size
    pipelines are saved in float16 (half the disk; speed runs load them in whatever dtype they measure)."""
    import torch

    pipe = build_pipeline(scale, kind, seed, device)
    if scale == "full":
        pipe = pipe.to(torch.float16)
    pipe.save_pretrained(directory)
    return Path(directory)
