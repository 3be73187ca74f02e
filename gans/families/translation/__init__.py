"""The image-to-image translation family: Pix2Pix (paired), CycleGAN, DualGAN and DiscoGAN (unpaired; they
also train on paired data without using the pairing). Its artifact kind is ``translate``: image (and
direction) -> image."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gans.config import ModelConfig
from gans.data import Dataset
from gans.family import EvalContext, Graph, Metric
from gans.families.translation import evaluate as _evaluate
from gans.families.translation.nets import TranslationSpec, build_generator
from gans.families.translation.presets import PRESETS, Translation, resolve_translation
from gans.families.translation.recipe import FAMILY, TranslationRecipe

__all__ = ["TRANSLATION", "TranslationFamily", "TranslatorArtifact"]


class TranslatorArtifact:
    """A trained translator: ``translate(images, direction)`` -> uint8 images, one per input."""

    kind, family = "translate", FAMILY

    def __init__(self, payload: dict[str, Any], device: torch.device | str) -> None:
        self.spec = TranslationSpec(**payload["spec"])
        self.payload, self.device = payload, torch.device(device)
        self.variant = payload["variant"]["name"]
        self.directions = tuple(payload["directions"])
        self.resolution = self.spec.resolution
        self.generators: dict[str, nn.Module] = {}
        for d in self.directions:
            g = build_generator(self.spec, d)
            g.load_state_dict(payload["state_dicts"][d])
            self.generators[d] = g.to(self.device).eval()

    def in_channels(self, direction: str) -> int:
        return self.spec.channels(direction)[0]

    def translate(self, images: torch.Tensor, direction: str, *, batch_size: int = 256) -> torch.Tensor:
        """uint8 (N, C_in, R, R) -> uint8 (N, C_out, R, R)."""
        return _evaluate.translate(self.generators[direction], images, device=self.device, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "family": self.family, "variant": self.variant, "directions": list(self.directions),
                "resolution": self.resolution,
                "channels": {d: dict(zip(("in", "out"), self.spec.channels(d))) for d in self.directions}}

    def graphs(self) -> list[Graph]:
        out = []
        for d in self.directions:
            cin, cout = self.spec.channels(d)
            source = torch.zeros(2, cin, self.resolution, self.resolution, dtype=torch.uint8, device=self.device)
            out.append(Graph(f"generator-{d}", self.generators[d], {"source": source},
                             {"source": f"uint8 (N, {cin}, {self.resolution}, {self.resolution}): the image to "
                                        f"translate {d}, 0..255 per channel"}, pixels_in=True))
        return out

    def sample_grid(self, data: Dataset, *, direction: str, count: int = 8) -> torch.Tensor:
        """input | output (| target) rows over the first ``count`` images of ``data``."""
        return _evaluate.translation_grid({direction: self.generators[direction]}, data, device=self.device,
                                          count=count)


class TranslationFamily:
    """The :class:`gans.family.Family` of image-to-image translators."""

    name, artifact = FAMILY, "translate"
    layouts = ("paired", "unpaired")
    primary_metric, higher_is_better = "fid", False
    headline = (Metric("fid", "FID"), Metric("label_preservation", "label preservation"),
                Metric("cycle_error", "cycle error", ".4f"), Metric("psnr", "PSNR", ".2f"), Metric("ssim", "SSIM"),
                Metric("l1", "L1", ".4f"), Metric("fid_a2b", "FID a2b"), Metric("fid_b2a", "FID b2a"),
                Metric("label_preservation_a2b", "label preservation a2b"),
                Metric("label_preservation_b2a", "label preservation b2a"))
    unused_model_keys = ("z_dim",)
    presets = PRESETS

    def resolve(self, model: ModelConfig) -> Translation:
        return resolve_translation(model)

    def layouts_of(self, composition: Translation) -> tuple[str, ...]:
        return ("paired",) if composition.needs_pairs else self.layouts

    def components(self, composition: Translation) -> dict[str, str]:
        return composition.components()

    def recipe(self, composition: Translation, *, model: ModelConfig, data: Dataset,
               preview: Dataset | None = None, features: Any = None) -> TranslationRecipe:
        return TranslationRecipe(composition, model=model, data=data, preview=preview)

    def load_artifact(self, payload: dict[str, Any], device: torch.device | str) -> TranslatorArtifact:
        return TranslatorArtifact(payload, device)

    def score(self, artifact: TranslatorArtifact, ctx: EvalContext) -> dict[str, float]:
        return _evaluate.score(artifact, ctx)

    def evaluate(self, artifact: TranslatorArtifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
        return _evaluate.evaluate(artifact, ctx)


TRANSLATION = TranslationFamily()
