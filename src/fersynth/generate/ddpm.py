"""Paper 002: a class-conditional DDPM trained on CASME II micro-expression frames at 48x48 grey, then
sampled per class into the ``ddpm_casme`` variant.

- ``fersynth ddpm-train``: diffusers ``UNet2DModel`` (``num_class_embeds`` = CASME II's 7 classes) +
  ``DDPMScheduler``, epsilon-prediction MSE, trained on the **train split only** of the CASME II variant
  (split by subject at ingest, so no test subject's face reaches the generator). Weights are a DVC out
  (safetensors); the loss curve goes to MLflow.
- ``fersynth ddpm-sample``: per-class counts in paper 002's Table 2 proportions, with the 1000-step DDPM
  sampler or a fast one (DDIM or DPM-Solver, steps from params). Every image has its own seed; samples go
  through the quality gate (no face detector by default: 48 px is below MTCNN's useful size).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fersynth.atomic import atomic_path, write_json
from fersynth.config import above, at_least, check_seeds
from fersynth.generate.gate import Gate, GateConfig
from fersynth.log import get_logger, progress
from fersynth.modeling.process_group import (
    all_gather,
    check_device,
    gather_to_main,
    resolve_device,
    setup,
    teardown,
    variant_writer,
)
from fersynth.variants.files import check_model_dir, read_json_bounded
from fersynth.variants.labels import CASME2
from fersynth.variants.variant import Variant

log = get_logger(__name__)

# Paper 002 Table 2: images per class of its generated dataset (15,464 in all).
TABLE2 = {
    "happiness": 2780,
    "sadness": 1632,
    "surprise": 1845,
    "disgust": 3120,
    "fear": 1760,
    "repression": 2187,
    "others": 2140,
}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")  # diffusers' that every sampler here takes
SAMPLERS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpm_solver": "DPMSolverMultistepScheduler"}


@dataclass(frozen=True)
class DdpmTrainConfig:
    """``configs/ddpm_train.yaml``."""

    size: int = 48
    channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    steps: int = 400  # optimisation steps
    batch_size: int = 32
    learning_rate: float = 3e-4
    timesteps: int = 1000
    beta_schedule: str = "linear"  # linear (the DDPM paper's) | squaredcos_cap_v2
    hflip: bool = True
    seed: int = 0
    log_every: int = 20
    # cpu: the same weights on every machine; cuda, cuda:N or auto (cuda when present) for speed
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_device("ddpm_train.device", self.device)
        if not self.channels:
            raise ValueError("ddpm_train.channels is empty: give each UNet block's channel count")
        at_least("ddpm_train", 8, size=self.size)
        steps = {"steps": self.steps, "timesteps": self.timesteps, "log_every": self.log_every}
        at_least("ddpm_train", 1, channels=self.channels, layers_per_block=self.layers_per_block, **steps)
        at_least("ddpm_train", 1, batch_size=self.batch_size)
        above("ddpm_train", 0, learning_rate=self.learning_rate)
        check_seeds("ddpm_train", seed=self.seed)
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"ddpm_train.beta_schedule must be one of {BETA_SCHEDULES}, not {self.beta_schedule!r}")


@dataclass(frozen=True)
class DdpmSampleConfig:
    """``configs/ddpm_sample.yaml``."""

    total: int = 15464  # images; split over classes in paper 002's Table 2 proportions
    proportions: dict[str, float] = field(default_factory=lambda: dict(TABLE2))
    sampler: str = "dpm_solver"  # ddpm (all training timesteps) | ddim | dpm_solver
    steps: int = 25  # ddim / dpm_solver steps (ddpm always uses every training timestep)
    batch_size: int = 64
    test_fraction: float = 0.2  # the generated set's own test split (paper 002: 80/20)
    max_attempts_per_image: int = 3
    seed: int = 1
    gate: GateConfig = field(default_factory=lambda: GateConfig(detector="none"))
    # auto: a GPU when one is visible (every rank its own under torchrun); cpu: the same pictures on every machine
    device: str = "auto"

    def __post_init__(self) -> None:
        check_device("ddpm_sample.device", self.device)
        at_least("ddpm_sample", 0, total=self.total)
        at_least("ddpm_sample.proportions", 0, **self.proportions)
        at_least("ddpm_sample", 1, steps=self.steps, batch_size=self.batch_size)
        at_least("ddpm_sample", 1, max_attempts_per_image=self.max_attempts_per_image)
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"ddpm_sample.test_fraction must be within [0, 1), not {self.test_fraction}")
        check_seeds("ddpm_sample", seed=self.seed)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"ddpm_sample.sampler must be one of {sorted(SAMPLERS)}, not {self.sampler!r}")
        unknown = set(self.proportions) - set(CASME2)
        if unknown:
            raise ValueError(f"ddpm_sample.proportions: unknown classes {sorted(unknown)}")


def build_unet(config: DdpmTrainConfig, n_classes: int):
    from diffusers import UNet2DModel

    depth = len(config.channels)
    return UNet2DModel(
        sample_size=config.size,
        in_channels=1,
        out_channels=1,
        layers_per_block=config.layers_per_block,
        block_out_channels=tuple(config.channels),
        down_block_types=("DownBlock2D",) * depth,
        up_block_types=("UpBlock2D",) * depth,
        num_class_embeds=n_classes,
        norm_num_groups=min(32, min(config.channels)),
    )


def train_step(unet, scheduler, optimiser, clean: torch.Tensor, labels: torch.Tensor) -> float:
    """One denoising step on a batch already on the UNet's device: noise at random timesteps, predict the noise,
    one optimiser step; the batch's loss. Timesteps are drawn on the CPU (the same draws on any device)."""
    noise = torch.randn_like(clean)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(clean),)).to(clean.device)
    predicted = unet(scheduler.add_noise(clean, noise, t), t, class_labels=labels).sample
    loss = torch.nn.functional.mse_loss(predicted, noise)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return loss.item()


def _training_frames(variant: Variant, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    manifest = variant.manifest
    if set(manifest["label_space"].dropna()) != {"casme2"}:
        raise ValueError("ddpm-train expects a CASME II variant (label space casme2)")
    train = manifest[manifest["split"] == "train"].sort_values("key")
    images = variant.load_array(train, size, "L")  # N x 1 x size x size, uint8
    return images, train["label"].to_numpy(dtype=np.int64), sorted(train["subject"].dropna().unique().tolist())


def ddpm_train(variant_dir: Path, model_dir: Path, config: DdpmTrainConfig, metrics_path: Path | None = None) -> dict:
    import mlflow
    from diffusers import DDPMScheduler

    from fersynth.tracking import start_run

    device = resolve_device(config.device)  # before any work: a missing GPU is a one-line error
    variant = Variant(variant_dir)
    images, labels, subjects = _training_frames(variant, config.size)
    test_subjects = sorted(variant.manifest.loc[variant.manifest["split"] == "test", "subject"].dropna().unique())
    if set(subjects) & set(test_subjects):
        raise ValueError(f"subjects in both train and test: {sorted(set(subjects) & set(test_subjects))}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    unet = build_unet(config, len(CASME2)).to(device)
    scheduler = DDPMScheduler(num_train_timesteps=config.timesteps, beta_schedule=config.beta_schedule)
    optimiser = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate)
    data = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
    targets = torch.from_numpy(labels)
    losses: list[float] = []
    log.info(
        "ddpm-train: %d frames of %d train subjects, %d steps of batch %d, UNet %.2f M parameters, on %s",
        len(data),
        len(subjects),
        config.steps,
        config.batch_size,
        sum(p.numel() for p in unet.parameters()) / 1e6,
        device,
    )
    with start_run("ddpm-train", {"casme2": variant_dir}, params=asdict(config)):
        unet.train()
        running = 0.0
        for step in progress(range(1, config.steps + 1), desc="ddpm-train", unit="step"):
            index = torch.from_numpy(rng.integers(0, len(data), config.batch_size))
            clean = data[index]
            if config.hflip:
                flip = torch.from_numpy(rng.random(len(index)) < 0.5)
                clean[flip] = clean[flip].flip(-1)
            running += train_step(unet, scheduler, optimiser, clean.to(device), targets[index].to(device))
            if step % config.log_every == 0 or step == config.steps:
                mean = running / (config.log_every if step % config.log_every == 0 else step % config.log_every)
                losses.append(round(mean, 5))
                mlflow.log_metric("train_loss", mean, step=step)
                running = 0.0
    with atomic_path(Path(model_dir), kind="model") as tmp:
        unet.save_pretrained(tmp / "unet")
        scheduler.save_pretrained(tmp / "scheduler")
        (tmp / "ddpm.json").write_text(
            json.dumps({"classes": list(CASME2), "train_subjects": subjects, "config": asdict(config)}, indent=2) + "\n"
        )
    metrics = {"frames": len(data), "train_subjects": len(subjects), "loss_first": losses[0], "loss_last": losses[-1]}
    if metrics_path is not None:
        write_json(metrics_path, metrics | {"loss_curve": losses})
    log.info("ddpm-train: loss %.4f -> %.4f", losses[0], losses[-1])
    return metrics


def load_ddpm(model_dir: Path):
    from diffusers import DDPMScheduler, UNet2DModel

    check_model_dir(Path(model_dir), "ddpm model file")  # diffusers opens them by path: checked first
    unet = UNet2DModel.from_pretrained(Path(model_dir) / "unet").eval()
    scheduler = DDPMScheduler.from_pretrained(Path(model_dir) / "scheduler")
    info = read_json_bounded(Path(model_dir) / "ddpm.json", what="ddpm model record")
    return unet, scheduler, info


def make_sampler(name: str, trained):
    import diffusers

    return getattr(diffusers, SAMPLERS[name]).from_config(trained.config)


@torch.no_grad()
def sample(unet, scheduler, labels: list[int], seeds: list[int], steps: int, device: str = "cpu") -> np.ndarray:
    """Images (N x size x size uint8) for ``labels``, image i from ``seeds[i]`` alone."""
    generators = [torch.Generator(device).manual_seed(s) for s in seeds]
    size = unet.config.sample_size
    x = torch.stack([torch.randn((1, size, size), generator=g, device=device) for g in generators])
    scheduler.set_timesteps(steps)
    classes = torch.tensor(labels, device=device)
    for t in scheduler.timesteps:
        eps = unet(x, t, class_labels=classes).sample
        x = scheduler.step(eps, t, x, generator=generators).prev_sample
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()[:, 0]


def class_counts(total: int, proportions: dict[str, float]) -> dict[str, int]:
    """``total`` split over classes by ``proportions`` (largest remainders), in CASME II order."""
    weights = np.array([float(proportions.get(c, 0)) for c in CASME2])
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[index] += 1
    return {c: int(n) for c, n in zip(CASME2, counts, strict=True) if n}


def ddpm_sample(model_dir: Path, out_dir: Path, config: DdpmSampleConfig, metrics_path: Path | None = None) -> dict:
    """Sample ``total`` gated images per class proportions. Under ``torchrun`` the processes share every
    attempt's batches (dealt round robin, so each batch is one a single process makes) and rank 0 writes what one
    process writes (the other processes return ``{}``)."""
    team = setup(config.device)
    unet, trained, info = load_ddpm(model_dir)
    device = team.device
    unet = unet.to(device)
    scheduler = make_sampler(config.sampler, trained)
    steps = trained.config.num_train_timesteps if config.sampler == "ddpm" else config.steps
    gate = Gate(config.gate)
    counts = class_counts(config.total, config.proportions)
    rng = np.random.default_rng(config.seed)
    attempts, rejected = 0, {}
    with variant_writer(team, out_dir, report_name="generate.json", inputs=(model_dir,)) as writer:
        for emotion, count in counts.items():
            n_test = int(round(count * config.test_fraction))
            splits = ["test"] * n_test + ["train"] * (count - n_test)
            rng.shuffle(splits)
            pending = list(range(count))  # slot numbers still without an accepted image
            for attempt in range(config.max_attempts_per_image):
                if not pending:
                    break
                batches = [pending[i : i + config.batch_size] for i in range(0, len(pending), config.batch_size)]
                seeds = {slot: _seed(config.seed, emotion, slot, attempt) for slot in pending}
                verdicts, pictures = _sample_and_gate(
                    unet, scheduler, gate, batches, seeds, CASME2.index(emotion), steps, device, team, emotion
                )
                for slot in [slot for batch in batches for slot in batch]:  # one process's order
                    attempts += 1
                    result = verdicts[slot]
                    if not result.accepted:
                        rejected[result.reason] = rejected.get(result.reason, 0) + 1
                        continue
                    pending.remove(slot)
                    name = f"{emotion}-s{seeds[slot]}-a{attempt}.png"
                    if not team.main:
                        continue
                    writer.add(
                        {
                            "key": f"{splits[slot]}/{name}",
                            "source": name,
                            "dataset": "ddpm_casme",
                            "split": splits[slot],
                            "label": CASME2.index(emotion),
                            "emotion": emotion,
                            "label_space": "casme2",
                            "synthetic": True,
                            "generator": f"ddpm:{config.sampler}",
                            "model": str(model_dir),
                            "seed": seeds[slot],
                            "steps": steps,
                            "attempt": attempt,
                        },
                        Image.fromarray(pictures[slot], mode="L"),
                    )
        if not team.main:
            teardown(team)
            return {}
        report = writer.commit(
            report_extra={
                "sampler": config.sampler,
                "steps": steps,
                "requested": counts,
                "attempts": attempts,
                "acceptance": round(len(writer.rows) / max(attempts, 1), 4),
                "rejected_because": rejected,
                "generator_train_subjects": info["train_subjects"],
            }
        )
    teardown(team)
    if metrics_path is not None:
        write_json(metrics_path, {k: report[k] for k in ("sampler", "steps", "attempts", "acceptance", "per_class")})
    log.info(
        "ddpm-sample: %d images (%s, %d steps), acceptance %.3f",
        report["kept"],
        config.sampler,
        steps,
        report["acceptance"],
    )
    return report


def _sample_and_gate(unet, scheduler, gate, batches, seeds, label, steps, device, team, emotion):
    """This process's batches (every ``world_size``-th) sampled and gated; the team's verdicts by slot on every
    process, the accepted pictures by slot on rank 0."""
    verdicts, pictures = {}, {}
    mine = batches[team.rank :: team.world_size]
    for slots in progress(mine, desc=f"ddpm {emotion}", unit="batch"):
        batch = sample(unet, scheduler, [label] * len(slots), [seeds[slot] for slot in slots], steps, device)
        for slot, pixels in zip(slots, batch, strict=True):
            verdicts[slot] = gate.check(Image.fromarray(pixels, mode="L"))
            if verdicts[slot].accepted:
                pictures[slot] = pixels
    verdicts = {slot: v for part in all_gather(verdicts, team) for slot, v in part.items()}
    pictures = {slot: p for part in gather_to_main(pictures, team) for slot, p in part.items()}
    return verdicts, pictures


def _seed(base: int, emotion: str, slot: int, attempt: int) -> int:
    state = np.random.SeedSequence([base, CASME2.index(emotion), slot, attempt]).generate_state(1)[0]
    return int(state & 0x7FFFFFFF)
