"""The super-resolution family: SRResNet (the PSNR-oriented model), SRGAN and ESRGAN, trained on pairs of
images and their bicubic downscales (``data.scale``) or on a folder of LR/HR pairs. Its artifact kind is
``translate`` with one direction, ``x2``/``x4``/``x8``: a low-resolution image in, the upscaled image out."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gans.config import ModelConfig
from gans.data import Dataset
from gans.family import EvalContext, Graph, Metric
from gans.families.superres import evaluate as _evaluate
from gans.families.superres.nets import SuperresSpec, build_generator
from gans.families.superres.recipe import FAMILY, PRESETS, Superres, SuperresRecipe, resolve_superres

__all__ = ["SUPERRES", "SuperresFamily", "UpscalerArtifact"]


class UpscalerArtifact:
    """A trained upscaler: ``translate(images, "x4")`` -> uint8 images ``scale`` times larger."""

    kind, family = "translate", FAMILY

    def __init__(self, payload: dict[str, Any], device: torch.device | str) -> None:
        self.spec = SuperresSpec(**payload["spec"])
        self.payload, self.device = payload, torch.device(device)
        self.variant = payload["variant"]["name"]
        self.directions = tuple(payload["directions"])
        self.scale, self.output_resolution = self.spec.scale, self.spec.resolution
        self.resolution = self.spec.lr_resolution  # what a request's image must measure
        g = build_generator(self.spec)
        g.load_state_dict(payload["state_dict"])
        self.generator: nn.Module = g.to(self.device).eval()
        self.generators = {self.directions[0]: self.generator}

    def in_channels(self, direction: str) -> int:
        return self.spec.channels

    def upscale(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """uint8 (N, C, r, r) -> uint8 (N, C, r * scale, r * scale)."""
        return _evaluate.upscale(self.generator, images, device=self.device, batch_size=batch_size)

    def translate(self, images: torch.Tensor, direction: str, *, batch_size: int = 256) -> torch.Tensor:
        return self.upscale(images, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        c = self.spec.channels
        return {"kind": self.kind, "family": self.family, "variant": self.variant, "directions": list(self.directions),
                "resolution": self.resolution, "output_resolution": self.output_resolution, "scale": self.scale,
                "channels": {d: {"in": c, "out": c} for d in self.directions}}

    def graphs(self) -> list[Graph]:
        r, c, d = self.resolution, self.spec.channels, self.directions[0]
        source = torch.zeros(2, c, r, r, dtype=torch.uint8, device=self.device)
        return [Graph(f"generator-{d}", self.generator, {"source": source},
                      {"source": f"uint8 (N, {c}, {r}, {r}): the low-resolution image, 0..255 per channel; the "
                                 f"output is {self.output_resolution}x{self.output_resolution}"}, pixels_in=True)]

    def sample_grid(self, data: Dataset, *, direction: str, count: int = 8) -> torch.Tensor:
        """input | bicubic | model | original over the first ``count`` held-out pairs."""
        return _evaluate.superres_grid(self.generator, data, scale=self.scale, device=self.device, count=count)


class SuperresFamily:
    """The :class:`gans.family.Family` of super-resolution models."""

    name, artifact = FAMILY, "translate"
    layouts = ("superres",)
    primary_metric, higher_is_better = "fid", False
    headline = (Metric("fid", "FID"), Metric("psnr", "PSNR (Y)", ".2f"), Metric("ssim", "SSIM (Y)"),
                Metric("psnr_bicubic", "bicubic PSNR (Y)", ".2f"), Metric("ssim_bicubic", "bicubic SSIM (Y)"),
                Metric("fid_bicubic", "bicubic FID"), Metric("label_preservation", "label preservation"),
                Metric("label_preservation_bicubic", "bicubic label preservation"))
    unused_model_keys = ("z_dim",)
    presets = PRESETS

    def resolve(self, model: ModelConfig) -> Superres:
        return resolve_superres(model)

    def layouts_of(self, composition: Superres) -> tuple[str, ...]:
        return self.layouts

    def components(self, composition: Superres) -> dict[str, str]:
        return composition.components()

    def recipe(self, composition: Superres, *, model: ModelConfig, data: Dataset, preview: Dataset | None = None,
               features: Any = None) -> SuperresRecipe:
        return SuperresRecipe(composition, model=model, data=data, preview=preview, features=features)

    def load_artifact(self, payload: dict[str, Any], device: torch.device | str) -> UpscalerArtifact:
        return UpscalerArtifact(payload, device)

    def score(self, artifact: UpscalerArtifact, ctx: EvalContext) -> dict[str, float]:
        return _evaluate.score(artifact, ctx)

    def evaluate(self, artifact: UpscalerArtifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
        return _evaluate.evaluate(artifact, ctx)


SUPERRES = SuperresFamily()
