"""One generation interface, two backends: ``demo`` (the procedural renderer: meaningful faces with no
weights, so ``make repro`` runs anywhere) and ``diffusers`` (Stable Diffusion / SDXL by hub id or local
path). A backend turns :class:`FaceRequest` objects into RGB images, one per request, the same image
for the same request whatever the batch it is in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from fersynth.config import at_least
from fersynth.demo.renderer import FaceSpec, render_face
from fersynth.generate.diffusers_backend import DiffusersBackend, DiffusersConfig
from fersynth.generate.prompts import FaceRequest

# How the demo renderer shows paper 000's nuisance words.
DEMO_LIGHT = {"bright": 1.0, "low": 0.45, "shadowy": 0.7}
DEMO_ANGLE = {"frontal": 0.0, "side": 18.0, "top-down": -10.0, "bottom-up": 10.0}
DEMO_BLUR = {"none": 0.0, "slight": 0.3, "moderate": 0.6}


class Backend(Protocol):
    name: str
    model: str
    steps: int | None
    guidance: float | None
    # requests per forward pass: a batch's make-up can change float results, so a torchrun team generates
    # the very batches one process would (fersynth.generate.quota.share)
    batch_size: int
    # what else decides its pictures, for the variant's report (the demo renderer: nothing)
    settings: dict

    def generate(self, requests: list[FaceRequest]) -> list[Image.Image]: ...


@dataclass(frozen=True)
class DemoBackendConfig:
    size: int = 128  # rendered side in pixels (RGB), converted to each dataset's format afterwards

    def __post_init__(self) -> None:
        at_least("backend.demo", 8, size=self.size)


class DemoBackend:
    """Faces from the demo renderer: the request's emotion, demographics and nuisances, its seed as the
    identity (face shape, background), so the same request gives the same picture."""

    name = "demo"
    model = "fersynth.demo.renderer"
    steps = None
    guidance = None
    batch_size = 1  # each face is rendered on its own
    settings: dict = {}  # noqa: RUF012 (read-only)

    def __init__(self, config: DemoBackendConfig):
        self.config = config

    def generate(self, requests: list[FaceRequest]) -> list[Image.Image]:
        return [self._render(r) for r in requests]

    def _render(self, request: FaceRequest) -> Image.Image:
        spec = FaceSpec(
            emotion=request.emotion,
            gender=request.gender,
            age_group=request.age_group,
            ethnicity=request.ethnicity,
            identity=request.seed,
            angle=DEMO_ANGLE[request.angle],
            light=DEMO_LIGHT[request.lighting],
            blur=DEMO_BLUR[request.blur],
            occlusion=request.obstruction != "none",
        )
        size = self.config.size
        return render_face(spec, (size, size), "RGB", seed=request.seed)


@dataclass(frozen=True)
class BackendConfig:
    """A generating stage's ``backend`` (e.g. ``configs/sd_artificial.yaml: backend``) and each backend's settings."""

    name: str = "demo"  # demo | diffusers
    demo: DemoBackendConfig = field(default_factory=DemoBackendConfig)
    diffusers: DiffusersConfig = field(default_factory=DiffusersConfig)

    def __post_init__(self) -> None:
        if self.name not in ("demo", "diffusers"):
            raise ValueError(f"generate backend must be demo or diffusers, not {self.name!r}")
        if self.name == "diffusers":
            self.diffusers.check_files()

    @property
    def device(self) -> str:
        """Where the backend computes: a torchrun team of demo renderers needs no GPU."""
        return self.diffusers.device if self.name == "diffusers" else "cpu"


def make_backend(config: BackendConfig) -> Backend:
    if config.name == "demo":
        return DemoBackend(config.demo)
    return DiffusersBackend(config.diffusers)
