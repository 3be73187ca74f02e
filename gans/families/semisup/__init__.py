"""The semi-supervised family: GANs trained for a classifier when few labels are known. Its artifact kind is
``classify`` (an image in, a label and the class probabilities out); the generator that helped train it
travels in the same file, for sample grids and ``gans sample``. The champion is the lowest holdout error
among versions trained on the same data and the same labelled subset (both are in the data hash)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gans.config import ModelConfig
from gans.data import Dataset, to_float
from gans.family import EvalContext, Graph, Metric
from gans.families.noise.evaluate import sample_metrics
from gans.families.noise.nets import NetSpec, build_networks
from gans.families.semisup.nets import Classifier, ClassifierSpec
from gans.families.semisup.recipe import FAMILY, PRESETS, SemiComposition, SemiRecipe, resolve_semisup
from gans.sampling import generate

__all__ = ["SEMISUP", "ClassifierArtifact", "SemiFamily"]


class ClassifierArtifact:
    """A trained semi-supervised model: ``classify(images uint8) -> probabilities (N, K)``, the baseline
    trained on the labelled images alone (``classify(..., baseline=True)``), and its generator
    (``generate(seeds, labels)``; ``num_classes`` is the generator's conditioning, 0 when unconditional)."""

    kind, family = "classify", FAMILY

    def __init__(self, payload: dict[str, Any], device: torch.device | str) -> None:
        self.payload, self.device = payload, torch.device(device)
        self.c_spec = ClassifierSpec(**payload["spec"]["classifier"])
        self.g_spec = NetSpec(**payload["spec"]["generator"])
        self.classifier = self._net(Classifier(self.c_spec), payload["classifier"])
        self.baseline = self._net(Classifier(self.c_spec), payload["baseline"])
        self.generator = self._net(build_networks(payload["spec"]["generator_arch"], self.g_spec)[0],
                                   payload["generator"])
        self.variant = payload["variant"]["name"]
        self.spec = payload["spec"]
        self.classes = tuple(payload["classes"])
        self.num_classes = self.g_spec.num_classes
        self.resolution, self.channels = self.c_spec.resolution, self.c_spec.channels

    def _net(self, net: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
        net.load_state_dict(state)
        return net.to(self.device).eval()

    @torch.no_grad()
    def classify(self, images: torch.Tensor, *, baseline: bool = False, batch_size: int = 250) -> torch.Tensor:
        """Class probabilities (N, K), float32 on the CPU, of uint8 images (N, C, R, R)."""
        net = self.baseline if baseline else self.classifier
        out = [net(to_float(images[i:i + batch_size].to(self.device))).float().softmax(1).cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    def generate(self, seeds: Sequence[int], labels: Sequence[int] | None, *, batch_size: int = 256) -> torch.Tensor:
        return generate(self.generator, seeds, labels, z_dim=self.g_spec.z_dim, device=self.device,
                        batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "family": self.family, "variant": self.variant, "classes": list(self.classes),
                "num_classes": len(self.classes), "resolution": self.resolution, "channels": self.channels,
                "known_labels": self.payload.get("known_labels"),
                "output": "label (the most probable class), class (its name) and probabilities (one per class, "
                          "summing to 1)"}

    def graphs(self) -> list[Graph]:
        """The classifier (not the baseline, nor the generator that helped train it): uint8 pixels in,
        logits and probabilities out."""
        c, r = self.channels, self.resolution
        image = torch.zeros(2, c, r, r, dtype=torch.uint8, device=self.device)
        meta = {"image": f"uint8 (N, {c}, {r}, {r}): the images' pixels, 0..255 ({'grey' if c == 1 else 'RGB'})"}
        return [Graph("classifier", self.classifier, {"image": image}, meta, pixels_in=True, output="classes")]


def _errors(artifact: ClassifierArtifact, ctx: EvalContext, baseline: bool = False) -> tuple[torch.Tensor, float]:
    holdout = ctx.holdout.images
    predicted = artifact.classify(holdout.images, baseline=baseline, batch_size=ctx.batch_size).argmax(1)
    return predicted, float((predicted != holdout.labels).double().mean())


def score(artifact: ClassifierArtifact, ctx: EvalContext) -> dict[str, float]:
    """The classifier's holdout error (periodic evaluation: no sampling)."""
    return {"error": _errors(artifact, ctx)[1]}


def confusion(actual: torch.Tensor, predicted: torch.Tensor, k: int) -> list[list[int]]:
    """Counts: row = actual class, column = predicted class."""
    return torch.bincount(actual * k + predicted, minlength=k * k).view(k, k).tolist()


def evaluate(artifact: ClassifierArtifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
    """The classifier's and the baseline's holdout error, the confusion matrix, then the generator's samples
    scored like a GAN's (FID, IS, KID, precision/recall; conditional accuracy for Triple-GAN)."""
    holdout, k = ctx.holdout.images, len(artifact.classes)
    predicted, error = _errors(artifact, ctx)
    _, baseline = _errors(artifact, ctx, baseline=True)
    metrics: dict[str, Any] = {"error": error, "accuracy": 1 - error, "baseline_error": baseline,
                               "error_reduction": baseline - error, "known_labels": artifact.payload.get("known_labels"),
                               "classes": list(artifact.classes),
                               "confusion": confusion(holdout.labels, predicted, k)}
    samples, grid = sample_metrics(artifact, ctx, {"conditioning": "concat", "num_classes": artifact.num_classes})
    return {**metrics, **samples}, grid


class SemiFamily:
    """The :class:`gans.family.Family` of semi-supervised GANs."""

    name, artifact = FAMILY, "classify"
    layouts = ("images",)
    primary_metric, higher_is_better = "error", False
    partial_labels = True  # trains on data.labels_per_class subsets
    headline = (Metric("error", "error"), Metric("baseline_error", "baseline error"), Metric("fid", "FID"),
                Metric("accuracy", "accuracy"), Metric("is", "IS"), Metric("conditional_accuracy", "conditional accuracy"))
    unused_model_keys = ()
    presets = PRESETS

    def resolve(self, model: ModelConfig) -> SemiComposition:
        return resolve_semisup(model)

    def layouts_of(self, composition: SemiComposition) -> tuple[str, ...]:
        return self.layouts

    def components(self, composition: SemiComposition) -> dict[str, str]:
        return composition.components()

    def recipe(self, composition: SemiComposition, *, model: ModelConfig, data: Dataset,
               preview: Dataset | None = None, features: Any = None) -> SemiRecipe:
        return SemiRecipe(composition, model=model, data=data)

    def load_artifact(self, payload: dict[str, Any], device: torch.device | str) -> ClassifierArtifact:
        return ClassifierArtifact(payload, device)

    def score(self, artifact: ClassifierArtifact, ctx: EvalContext) -> dict[str, float]:
        return score(artifact, ctx)

    def evaluate(self, artifact: ClassifierArtifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
        return evaluate(artifact, ctx)


SEMISUP = SemiFamily()
