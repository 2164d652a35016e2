"""The ``diffusers`` backend: ``StableDiffusionPipeline`` (paper 001: ``CompVis/stable-diffusion-v1-4``,
fp16, pipeline defaults: PNDM, 50 steps, guidance 7.5, 512x512) or ``StableDiffusionXLPipeline``
(paper 000: an SDXL checkpoint such as Juggernaut XL), loaded by hub id or local path.

Every image has its own ``torch.Generator`` seeded from its request, so an image depends on its
request only, not on the batch it was made in. Speed settings (dtype, attention, scheduler, batch,
``torch.compile``, channels-last) are params: ``benchmarks/bench_generation.py`` measures them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from fersynth.config import at_least
from fersynth.generate.prompts import FaceRequest
from fersynth.generate.single_file import check_single_file, is_single_file, load_single_file, refuse_pickle
from fersynth.log import get_logger, progress
from fersynth.variants.files import check_model_dir

log = get_logger(__name__)

SCHEDULERS = {
    "default": None,  # whatever the checkpoint ships (PNDM for SD 1.x)
    "pndm": "PNDMScheduler",
    "ddim": "DDIMScheduler",
    "dpm_solver": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}
PIPELINES = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class DiffusersConfig:
    """A generating stage's ``backend.diffusers`` (e.g. ``configs/sd_artificial.yaml``)."""

    model: str = "CompVis/stable-diffusion-v1-4"  # hub id, local directory (save_pretrained layout) or .safetensors
    pipeline: str = "sd"  # sd | sdxl
    # a single-file model's component configs: a diffusers-layout directory or hub id (e.g. the SDXL base's)
    single_file_config: str = ""
    # another VAE (directory or hub id), e.g. madebyollin/sdxl-vae-fp16-fix: SDXL's own VAE overflows in
    # float16, so without one the pipeline decodes in float32 (its VAE config's force_upcast)
    vae: str = ""
    scheduler: str = "default"
    steps: int = 50
    guidance: float = 7.5
    size: int = 512
    dtype: str = "float16"  # on CPU half precision falls back to float32
    batch_size: int = 1
    device: str = "auto"  # auto (cuda when present) | cuda | cpu
    attention: str = "sdpa"  # sdpa (scaled_dot_product_attention) | eager (diffusers' plain AttnProcessor)
    compile: bool = False  # torch.compile the UNet (first batch pays for compilation)
    channels_last: bool = False
    # DeepCache (Ma et al. 2023): reuse the UNet's deep features for this many steps at a time (0: off; 3 is the
    # paper's usual setting); faster, slightly different pictures: check the gate's acceptance before adopting it
    deepcache_interval: int = 0
    local_files_only: bool = False  # True: never touch the hub (offline machines)

    def __post_init__(self) -> None:
        if self.pipeline not in PIPELINES:
            raise ValueError(f"diffusers.pipeline must be one of {sorted(PIPELINES)}, not {self.pipeline!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"diffusers.scheduler must be one of {sorted(SCHEDULERS)}, not {self.scheduler!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"diffusers.dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.attention not in ("sdpa", "eager"):
            raise ValueError(f"diffusers.attention must be sdpa or eager, not {self.attention!r}")
        if self.steps < 1 or self.batch_size < 1 or self.size < 8 or self.size % 8:
            raise ValueError("steps and batch_size must be >= 1 and size a multiple of 8")
        at_least("diffusers", 0, guidance=self.guidance)
        refuse_pickle("diffusers.model", self.model)
        if is_single_file(self.vae):
            refuse_pickle("diffusers.vae", self.vae)
            raise ValueError(f"diffusers.vae {self.vae!r}: a diffusers-layout directory or hub id, not one file")
        if not isinstance(self.deepcache_interval, int) or self.deepcache_interval < 0 or self.deepcache_interval == 1:
            raise ValueError("diffusers.deepcache_interval must be 0 (off) or an integer >= 2")
        if self.deepcache_interval and self.compile:
            raise ValueError("diffusers.deepcache_interval cannot be combined with compile")

    def check_files(self) -> None:
        """What can only be checked where the stage runs: a single-file model and its config directory (the
        params of a backend that is not used never need them), and that every file of a local model, VAE or
        config directory is a regular file of a sane size (diffusers opens them by path: a FIFO would hang it)."""
        if is_single_file(self.model):
            check_single_file(self.model, self.single_file_config, self.local_files_only, PIPELINES[self.pipeline])
        local = {"model": self.model, "vae": self.vae, "single_file_config": self.single_file_config}
        for name, directory in local.items():
            if directory and Path(directory).is_dir():
                check_model_dir(Path(directory), f"diffusers.{name} file")


def load_pipeline(config: DiffusersConfig):
    """The configured pipeline, on its device, with the configured scheduler, attention and dtype."""
    import diffusers
    import torch

    from fersynth.modeling.process_group import resolve_device

    device = resolve_device(config.device)
    dtype_name = config.dtype
    if device == "cpu" and dtype_name == "float16":
        log.warning("generate: float16 is not supported well on CPU; using float32")
        dtype_name = "float32"
    dtype = getattr(torch, dtype_name)
    pipeline_class = getattr(diffusers, PIPELINES[config.pipeline])
    components = {}
    if config.vae:
        components["vae"] = diffusers.AutoencoderKL.from_pretrained(
            config.vae, dtype=dtype, local_files_only=config.local_files_only
        )
    if is_single_file(config.model):
        pipe = load_single_file(
            pipeline_class, config.model, config.single_file_config, dtype, config.local_files_only, **components
        )
    else:
        pipe = pipeline_class.from_pretrained(
            config.model, dtype=dtype, local_files_only=config.local_files_only, **components
        )
    if SCHEDULERS[config.scheduler] is not None:
        scheduler_class = getattr(diffusers, SCHEDULERS[config.scheduler])
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    if config.attention == "eager":
        from diffusers.models.attention_processor import AttnProcessor

        pipe.unet.set_attn_processor(AttnProcessor())
        pipe.vae.set_attn_processor(AttnProcessor())
    pipe = pipe.to(device)
    if config.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if config.compile:
        pipe.unet = torch.compile(pipe.unet)
    if config.deepcache_interval:
        from DeepCache import DeepCacheSDHelper  # works for SD and SDXL UNets: it wraps their blocks' forward

        pipe._fersynth_deepcache = DeepCacheSDHelper(pipe=pipe)  # kept with the pipe: it holds the cache
        pipe._fersynth_deepcache.set_params(cache_interval=config.deepcache_interval, cache_branch_id=0)
        pipe._fersynth_deepcache.enable()
    pipe.set_progress_bar_config(disable=True)
    log.info(
        "generate: %s from %s on %s (%s, scheduler %s, %d steps, guidance %.1f, %d px, batch %d, DeepCache %s)",
        PIPELINES[config.pipeline],
        config.model,
        device,
        dtype_name,
        type(pipe.scheduler).__name__,
        config.steps,
        config.guidance,
        config.size,
        config.batch_size,
        config.deepcache_interval or "off",
    )
    return pipe, device


class DiffusersBackend:
    name = "diffusers"

    def __init__(self, config: DiffusersConfig):
        self.config = config
        self.model = config.model
        self.steps = config.steps
        self.guidance = config.guidance
        self.batch_size = config.batch_size
        self._pipe = None

    @property
    def settings(self) -> dict:
        """What besides model, steps and guidance decides its pictures (recorded in the variant's report)."""
        keep = ("pipeline", "single_file_config", "vae", "scheduler", "size", "dtype", "batch_size")
        return {k: getattr(self.config, k) for k in keep} | {"deepcache_interval": self.config.deepcache_interval}

    @property
    def pipe(self):
        if self._pipe is None:  # loaded on first use: building a backend costs nothing
            self._pipe, self.device = load_pipeline(self.config)
        return self._pipe

    def generate(self, requests: list[FaceRequest]) -> list[Image.Image]:
        import torch

        pipe = self.pipe
        images: list[Image.Image] = []
        size = self.config.size
        batches = range(0, len(requests), self.config.batch_size)
        for start in progress(batches, desc="diffusers", unit="batch"):
            batch = requests[start : start + self.config.batch_size]
            negative = [r.negative_prompt for r in batch]
            output = pipe(
                prompt=[r.prompt for r in batch],
                negative_prompt=negative if any(negative) else None,
                num_inference_steps=self.config.steps,
                guidance_scale=self.config.guidance,
                height=size,
                width=size,
                generator=[torch.Generator(self.device).manual_seed(r.seed) for r in batch],
                output_type="pil",
            )
            images += [image.convert("RGB") for image in output.images]
        return images
