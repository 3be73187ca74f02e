"""The PixelCNN family: the likelihood baseline. A gated PixelCNN draws an image pixel by pixel from a
seed (and a class, when conditional); its artifact kind is ``generate``, like a GAN generator's, so sampling,
serving and the evaluator treat both alike, and its evaluation adds the negative log-likelihood of the
holdout in bits per dimension, which GANs cannot report. It has no latent: no interpolation, directions or
inversion (the explore stage says so)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from gans.config import ModelConfig
from gans.data import Dataset
from gans.family import EvalContext, Graph, Metric
from gans.families.noise.evaluate import sample_metrics
from gans.families.pixelcnn.nets import PixelCNN, PixelSpec, nll_bits, sample, uniforms
from gans.families.pixelcnn.recipe import FAMILY, PRESETS, PixelComposition, PixelRecipe, resolve_pixelcnn

__all__ = ["PIXELCNN", "PixelArtifact", "PixelFamily"]

SAMPLING = ("pixel by pixel in raster order, one network step per pixel ({steps} steps for a {r}x{r}x{c} image); "
            "a seed fixes the uniforms each value is drawn with, so a seed's image never depends on the batch")


class PixelArtifact:
    """A trained PixelCNN: ``generate(seeds, labels)`` -> uint8 (N, C, R, R), and ``bits_per_dim(images)``."""

    kind, family = "generate", FAMILY
    z_dim = 0  # no latent: explore skips it, serving refuses edits and inversions
    no_export = ("it samples with a loop of one network step per pixel, not one graph; serve it (gans serve) or "
                 "load models/generator.pt in Python")

    def __init__(self, payload: dict[str, Any], device: torch.device | str) -> None:
        self.payload, self.device = payload, torch.device(device)
        self.pixel_spec = PixelSpec(**payload["spec"])
        net = PixelCNN(self.pixel_spec)
        net.load_state_dict(payload["state_dict"])
        self.net = net.to(self.device).eval()
        self.variant = payload["variant"]["name"]
        self.spec = payload["spec"]
        self.num_classes = self.pixel_spec.num_classes
        self.classes = tuple(payload.get("classes", ()))

    def generate(self, seeds: Sequence[int], labels: Sequence[int] | None, *, batch_size: int = 256) -> torch.Tensor:
        s = self.pixel_spec
        out = []
        for i in range(0, len(seeds), batch_size):
            u = uniforms(seeds[i:i + batch_size], (s.channels, s.resolution, s.resolution))
            y = None if labels is None else torch.as_tensor(list(labels[i:i + batch_size]), device=self.device)
            out.append(sample(self.net, u, y).cpu())
        return torch.cat(out) if out else torch.zeros(0, s.channels, s.resolution, s.resolution, dtype=torch.uint8)

    @torch.no_grad()
    def bits_per_dim(self, images: torch.Tensor, labels: torch.Tensor | None, *, batch_size: int = 250) -> torch.Tensor:
        """Negative log-likelihood of uint8 ``images`` in bits per dimension, one value per image."""
        out = []
        for i in range(0, len(images), batch_size):
            y = None if labels is None else labels[i:i + batch_size].to(self.device)
            out.append(nll_bits(self.net, images[i:i + batch_size].to(self.device), y).cpu())
        return torch.cat(out)

    def describe(self) -> dict[str, Any]:
        s = self.pixel_spec
        return {"kind": self.kind, "family": self.family, "variant": self.variant, "num_classes": self.num_classes,
                "classes": list(self.classes), "resolution": s.resolution, "channels": s.channels,
                "sampling": SAMPLING.format(steps=s.resolution * s.resolution, r=s.resolution, c=s.channels),
                "latent": "none: a PixelCNN has no latent (no edit, no inversion)"}

    def graphs(self) -> list[Graph]:
        return []  # sampling is a loop of R x R network steps, not one graph


def _holdout_labels(artifact: PixelArtifact, ctx: EvalContext) -> torch.Tensor | None:
    return ctx.holdout.images.labels if artifact.num_classes else None


def score(artifact: PixelArtifact, ctx: EvalContext) -> dict[str, float]:
    """Bits per dimension of the holdout (periodic evaluation: cheap, no sampling)."""
    bits = artifact.bits_per_dim(ctx.holdout.images.images, _holdout_labels(artifact, ctx), batch_size=ctx.batch_size)
    return {"bits_per_dim": float(bits.mean())}


def evaluate(artifact: PixelArtifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
    """Bits per dimension of the holdout, then the GANs' metrics of ``ctx.num_samples`` samples, and the time
    one sample takes."""
    samples, grid = sample_metrics(artifact, ctx, {"conditioning": "concat", "num_classes": artifact.num_classes},
                                   timed=True)
    return {**score(artifact, ctx), **samples}, grid


class PixelFamily:
    """The :class:`gans.family.Family` of PixelCNNs."""

    name, artifact = FAMILY, "generate"
    layouts = ("images",)
    primary_metric, higher_is_better = "bits_per_dim", False
    headline = (Metric("bits_per_dim", "bits/dim"), Metric("fid", "FID"), Metric("is", "IS"),
                Metric("kid", "KID", ".5f"), Metric("precision", "precision"), Metric("recall", "recall"),
                Metric("conditional_accuracy", "conditional accuracy"),
                Metric("sample_ms_per_image", "ms per sample", ".1f"))
    unused_model_keys = ("z_dim",)
    presets = PRESETS

    def resolve(self, model: ModelConfig) -> PixelComposition:
        return resolve_pixelcnn(model)

    def layouts_of(self, composition: PixelComposition) -> tuple[str, ...]:
        return self.layouts

    def components(self, composition: PixelComposition) -> dict[str, str]:
        return composition.components()

    def recipe(self, composition: PixelComposition, *, model: ModelConfig, data: Dataset,
               preview: Dataset | None = None, features: Any = None) -> PixelRecipe:
        return PixelRecipe(composition, model=model, data=data)

    def load_artifact(self, payload: dict[str, Any], device: torch.device | str) -> PixelArtifact:
        return PixelArtifact(payload, device)

    def score(self, artifact: PixelArtifact, ctx: EvalContext) -> dict[str, float]:
        return score(artifact, ctx)

    def evaluate(self, artifact: PixelArtifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
        return evaluate(artifact, ctx)


PIXELCNN = PixelFamily()
