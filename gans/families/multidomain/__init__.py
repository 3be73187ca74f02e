"""The multi-domain translation family: StarGAN, one generator over several domains (one-of-K) or attributes
(multi-hot), trained on images that carry their domain or attributes (layout ``attributes``). Its artifact
kind is ``translate`` with a ``domain`` column: an image and its target domain in, the translation out."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gans.config import ModelConfig
from gans.data import Dataset
from gans.family import EvalContext, Graph, Metric
from gans.families.multidomain import evaluate as _evaluate
from gans.families.multidomain.nets import MultiDomainSpec, StarGenerator
from gans.families.multidomain.recipe import FAMILY, PRESETS, StarComposition, StarRecipe, resolve_multidomain

__all__ = ["MULTIDOMAIN", "MultiDomainFamily", "DomainTranslatorArtifact"]


class _WithTarget(nn.Module):
    """G(x, c) for export: the target vector as a second input."""

    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        self.g = g

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.g(x, target)


class DomainTranslatorArtifact:
    """A trained multi-domain translator: ``translate(images, domain)`` -> uint8 images."""

    kind, family, target_column = "translate", FAMILY, "domain"

    def __init__(self, payload: dict[str, Any], device: torch.device | str) -> None:
        spec = dict(payload["spec"])
        spec["domains"] = tuple(spec["domains"])
        self.spec = MultiDomainSpec(**spec)
        self.payload, self.device = payload, torch.device(device)
        self.variant = payload["variant"]["name"]
        self.domains, self.exclusive = self.spec.domains, self.spec.exclusive
        self.directions = self.domains  # what the serving row's `domain` and `gans sample --direction` name
        self.resolution = self.spec.resolution
        g = StarGenerator(self.spec)
        g.load_state_dict(payload["state_dict"])
        self.generator: nn.Module = g.to(self.device).eval()

    def in_channels(self, direction: str) -> int:
        return self.spec.channels

    def target_of(self, value: str) -> torch.Tensor:
        """The (K,) target vector a request's ``domain`` names: a domain's name (one-of-K), attribute names
        joined by ``+`` (multi-hot: the attributes to have on; ``none`` for none), or K digits 0/1."""
        names, k = self.domains, len(self.domains)
        known = ", ".join(names)
        text = str(value).strip()
        if len(text) == k and set(text) <= {"0", "1"}:
            vector = torch.tensor([int(ch) for ch in text], dtype=torch.uint8)
        else:
            parts = [] if text == "none" and not self.exclusive else [p.strip() for p in text.split("+")]
            unknown = [p for p in parts if p not in names]
            if unknown:
                raise ValueError(f"names no domain this model knows ({unknown[0]!r}); known: {known}, or a 0/1 "
                                 f"vector of {k} digits")
            vector = torch.zeros(k, dtype=torch.uint8)
            for p in parts:
                vector[names.index(p)] = 1
        if self.exclusive and int(vector.sum()) != 1:
            raise ValueError(f"must name exactly one domain (this model's domains are exclusive: {known}), got {text!r}")
        return vector

    def translate_to(self, images: torch.Tensor, targets: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """uint8 (N, C, R, R) with target vectors (N, K) -> uint8 (N, C, R, R)."""
        return _evaluate.translate(self.generator, images, targets, device=self.device, batch_size=batch_size)

    def translate(self, images: torch.Tensor, direction: str, *, batch_size: int = 256) -> torch.Tensor:
        target = self.target_of(direction)
        return self.translate_to(images, target.expand(len(images), -1), batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        c = self.spec.channels
        return {"kind": self.kind, "family": self.family, "variant": self.variant, "directions": list(self.domains),
                "domains": list(self.domains), "exclusive": self.exclusive, "target_column": self.target_column,
                "resolution": self.resolution, "channels": {"in": c, "out": c}}

    def graphs(self) -> list[Graph]:
        r, c, k = self.resolution, self.spec.channels, len(self.domains)
        source = torch.zeros(2, c, r, r, dtype=torch.uint8, device=self.device)
        target = torch.zeros(2, k, device=self.device)
        target[:, 0] = 1
        return [Graph("generator", _WithTarget(self.generator), {"source": source, "target": target},
                      {"source": f"uint8 (N, {c}, {r}, {r}): the image to translate, 0..255 per channel",
                       "target": f"float (N, {k}): the target domain vector over {', '.join(self.domains)} "
                                 + ("(one-hot)" if self.exclusive else "(0/1 per attribute)")}, pixels_in=True)]

    def sample_grid(self, data: Dataset, *, direction: str, count: int = 8) -> torch.Tensor:
        """input | one column per domain over the first ``count`` held-out images."""
        return _evaluate.domain_grid(self.generator, data, self.spec, device=self.device, count=count)


class MultiDomainFamily:
    """The :class:`gans.family.Family` of multi-domain translators."""

    name, artifact = FAMILY, "translate"
    layouts = ("attributes",)
    primary_metric, higher_is_better = "fid", False
    headline = (Metric("fid", "FID (mean over domains)"), Metric("target_accuracy", "target-domain accuracy"),
                Metric("label_preservation", "label preservation"),
                Metric("reconstruction_error", "reconstruction error", ".4f"))
    unused_model_keys = ("z_dim",)
    presets = PRESETS

    def resolve(self, model: ModelConfig) -> StarComposition:
        return resolve_multidomain(model)

    def layouts_of(self, composition: StarComposition) -> tuple[str, ...]:
        return self.layouts

    def components(self, composition: StarComposition) -> dict[str, str]:
        return composition.components()

    def recipe(self, composition: StarComposition, *, model: ModelConfig, data: Dataset,
               preview: Dataset | None = None, features: Any = None) -> StarRecipe:
        return StarRecipe(composition, model=model, data=data, preview=preview)

    def load_artifact(self, payload: dict[str, Any], device: torch.device | str) -> DomainTranslatorArtifact:
        return DomainTranslatorArtifact(payload, device)

    def score(self, artifact: DomainTranslatorArtifact, ctx: EvalContext) -> dict[str, float]:
        return _evaluate.score(artifact, ctx)

    def evaluate(self, artifact: DomainTranslatorArtifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
        return _evaluate.evaluate(artifact, ctx)


MULTIDOMAIN = MultiDomainFamily()
