"""A training recipe: ``params.yaml: train.<experiment>`` as the typed config ``fersynth train`` runs, shared by
:mod:`fersynth.train.train` and :mod:`fersynth.train.rows` (which rows a recipe fits, validates and tests on)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fersynth.config import SEED_MAX, above, at_least, within
from fersynth.modeling.architectures import ARCHITECTURES
from fersynth.modeling.data import PRESETS, InputConfig
from fersynth.modeling.process_group import check_device

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("plateau", "one_cycle", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """``params.yaml: train.<experiment>``."""

    variants: tuple[str, ...] = ("data/original/fer2013",)  # their train rows are concatenated
    synthetic_per_class: int = -1  # cap on synthetic train rows per class (-1: all of them)
    synthetic_ratio: float = -1.0  # cap per class at this many synthetic rows per real train row (-1: none)
    real_fraction: float = 1.0  # train on this share of the real train rows per class (a scarce-data control)
    architecture: str = "paper001_cnn"
    width: float = 1.0  # paper001_cnn's filters x width (1.0: the paper's; the CPU demo: 0.25)
    weights: str = ""  # local ImageNet weights for torchvision backbones
    freeze: float = 0.0  # fraction of the backbone's learnable layers frozen (paper 002: 0.3)
    input: InputConfig = field(default_factory=InputConfig)
    augment: str = "paper001"  # a preset of fersynth.modeling.data.PRESETS
    optimizer: str = "adam"  # adam | adamw | sgd
    learning_rate: float = 0.01  # paper 001: 0.01 FER2013, 3e-4 AffectNet / merged; one_cycle: the peak
    weight_decay: float = 0.0  # L2 penalty (adam, sgd) or decoupled decay (adamw)
    schedule: str = "plateau"  # plateau (paper 001: ReduceLROnPlateau on val loss) | one_cycle | cosine
    warmup: float = 0.3  # one_cycle: share of the steps spent rising to learning_rate
    lr_factor: float = 0.1  # plateau only
    lr_patience: int = 2  # plateau only
    min_lr: float = 1e-5  # plateau only
    label_smoothing: float = 0.0  # cross-entropy against (1 - e) one-hot + e uniform
    early_stopping: int = 0  # epochs without a better val accuracy before stopping (0: never)
    label_noise: float = 0.0  # a planted harm (a control): this share of train labels flipped to another class
    log_models: str = "all"  # all: every trial is an MLflow model | best: only the registered one (many trials)
    epochs: int = 50
    min_steps: int = 0  # at least this many optimiser steps: small train sets get more epochs (0: epochs as given)
    batch_size: int = 64
    validation_fraction: float = 0.2  # of the real train rows (paper 001: 20% of train), by subject where known
    seed: int = 0  # the first trial's seed (and the validation split's, unless split_seed is set)
    trials: int = 1  # models trained with seeds seed, seed+1, ... on the same split (paper 002: 5)
    split_seed: int = -1  # the validation split's (and real_fraction's) seed; -1: seed. Other trial seeds, same rows
    accumulate: int = 1  # micro-batches per optimiser step and process (fersynth.train.data_parallel)
    device: str = "auto"
    mixed_precision: bool = True  # bfloat16 autocast on CUDA; ignored on CPU

    def __post_init__(self) -> None:
        if self.augment not in PRESETS:
            raise ValueError(f"train.augment must be one of {sorted(PRESETS)}, not {self.augment!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if self.log_models not in ("all", "best"):
            raise ValueError(f"train.log_models must be all or best, not {self.log_models!r}")
        if not 0 < self.real_fraction <= 1:
            raise ValueError(f"train.real_fraction must be within (0, 1], not {self.real_fraction}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.label_noise < 1 or not 0 < self.warmup < 1:
            raise ValueError(
                f"train.label_smoothing and label_noise must be within [0, 1), warmup within (0, 1): "
                f"{self.label_smoothing}, {self.label_noise}, {self.warmup}"
            )
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"train.validation_fraction must be within (0, 1), not {self.validation_fraction}")
        if self.trials < 1 or self.accumulate < 1:
            raise ValueError(f"train.trials and train.accumulate must be at least 1: {self.trials}, {self.accumulate}")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """The rest of the recipe's numbers; -1 means "no cap" or "as seed" where the field says so."""
        if not self.variants:
            raise ValueError("train.variants is empty: name the variants whose train rows it fits")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"train.architecture must be one of {ARCHITECTURES}, not {self.architecture!r}")
        check_device("train.device", self.device)
        at_least("train", 1, epochs=self.epochs, batch_size=self.batch_size)
        counts = {"min_steps": self.min_steps, "lr_patience": self.lr_patience, "early_stopping": self.early_stopping}
        at_least("train", 0, weight_decay=self.weight_decay, min_lr=self.min_lr, **counts)
        above("train", 0, width=self.width, learning_rate=self.learning_rate)
        within("train", 0, 1, freeze=self.freeze)
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"train.lr_factor must be within (0, 1), not {self.lr_factor}")
        at_least("train", -1, synthetic_per_class=self.synthetic_per_class)
        if self.synthetic_ratio != -1:
            at_least("train", 0, synthetic_ratio=self.synthetic_ratio)
        within("train", 0, SEED_MAX - self.trials + 1, seed=self.seed)  # seeds seed .. seed + trials - 1
        within("train", -1, SEED_MAX, split_seed=self.split_seed)

    def epochs_for(self, steps_per_epoch: int) -> int:
        """``epochs``, or more where ``min_steps`` asks for more: every trial gets the same number of updates
        whatever its train size (a scarce set is not undertrained beside a larger one)."""
        return max(self.epochs, -(-self.min_steps // max(steps_per_epoch, 1)))

    @property
    def data_seed(self) -> int:
        """The seed that draws validation (and a scarce subset): ``split_seed``, or ``seed`` when unset."""
        return self.split_seed if self.split_seed >= 0 else self.seed

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.trials))
