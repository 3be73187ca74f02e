"""The coupled family: CoGAN (Liu and Tuzel 2016), two GANs whose generators share their first layers and
whose discriminators share their last, trained on two domains without pairs. Its artifact kind is ``pair``:
a seed's latent draws a corresponding pair of images, one per domain. The champion is the lowest mean FID of
the two domains."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from gans.config import ModelConfig
from gans.data import Dataset
from gans.family import EvalContext, Graph, Metric
from gans.families.coupled import evaluate as _evaluate
from gans.families.coupled.nets import DOMAINS, CoupledGenerator, CoupledSpec, OneDomain
from gans.families.coupled.recipe import FAMILY, PRESETS, Coupled, CoupledRecipe, resolve_coupled
from gans.sampling import LATENT_RECIPE, TRUNCATION_RECIPE, Truncation

__all__ = ["COUPLED", "CoupledFamily", "PairArtifact"]


class PairArtifact:
    """A trained CoGAN: ``generate_pair(seeds) -> (uint8 (N, C_a, R, R), uint8 (N, C_b, R, R))``, the two
    images of each seed's latent."""

    kind, family = "pair", FAMILY
    truncates = True  # generate_pair takes a truncation psi (gans.sampling.latents_for_seeds)
    num_classes = 0  # unconditional: rows take a seed only
    domains = DOMAINS
    directions = DOMAINS  # the graphs gans export picks from (--direction a or b)

    def __init__(self, payload: dict[str, Any], device: torch.device | str) -> None:
        self.payload, self.device = payload, torch.device(device)
        self.net_spec = CoupledSpec(**payload["spec"])
        generator = CoupledGenerator(self.net_spec)
        generator.load_state_dict(payload["generator"])
        self.generator = generator.to(self.device).eval()
        self.variant = payload["variant"]["name"]
        self.spec = payload["spec"]
        self.z_dim, self.resolution = self.net_spec.z_dim, self.net_spec.resolution
        self.classes = payload.get("classes", {})

    def generate_pair(self, seeds: Sequence[int], *, batch_size: int = 256,
                      truncation: Truncation = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        return _evaluate.draw_pairs(self.generator, seeds, z_dim=self.z_dim, device=self.device, batch_size=batch_size,
                                    truncation=truncation)

    def pair_grid(self, seeds: Sequence[int], *, per_row: int = 8, truncation: float = 1.0) -> torch.Tensor:
        """uint8 (C, H, W): rows of ``per_row`` domain-a images, each above the domain-b images of the same seeds."""
        return _evaluate.pair_grid(*self.generate_pair(seeds, truncation=truncation), per_row=per_row)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "family": self.family, "variant": self.variant, "z_dim": self.z_dim,
                "resolution": self.resolution, "channels": {d: self.net_spec.channels(d) for d in DOMAINS},
                "domains": list(DOMAINS), "latent": LATENT_RECIPE,
                "truncation": TRUNCATION_RECIPE,
                "output": "png_a and png_b: the images of domain a and domain b drawn from the seed's latent"}

    def graphs(self) -> list[Graph]:
        inputs = {"z": torch.zeros(2, self.z_dim, device=self.device)}
        meta = {"z": f"float32 (N, {self.z_dim}): the latent (the same for both domains' graphs); {LATENT_RECIPE}; "
                     "for truncation psi, pass psi * z"}
        return [Graph(f"generator-{d}", OneDomain(self.generator, d), inputs, meta) for d in DOMAINS]


class CoupledFamily:
    """The :class:`gans.family.Family` of coupled GANs."""

    name, artifact = FAMILY, "pair"
    layouts = ("paired", "unpaired")
    primary_metric, higher_is_better = "fid", False
    headline = (Metric("fid", "FID (mean of a, b)", ".2f"), Metric("fid_a", "FID a", ".2f"),
                Metric("fid_b", "FID b", ".2f"), Metric("pair_agreement", "pair agreement"),
                Metric("pair_label_agreement", "pair label agreement"))
    unused_model_keys = ()
    presets = PRESETS

    def resolve(self, model: ModelConfig) -> Coupled:
        return resolve_coupled(model)

    def layouts_of(self, composition: Coupled) -> tuple[str, ...]:
        return self.layouts

    def components(self, composition: Coupled) -> dict[str, str]:
        return composition.components()

    def recipe(self, composition: Coupled, *, model: ModelConfig, data: Dataset, preview: Dataset | None = None,
               features: Any = None) -> CoupledRecipe:
        return CoupledRecipe(composition, model=model, data=data)

    def load_artifact(self, payload: dict[str, Any], device: torch.device | str) -> PairArtifact:
        return PairArtifact(payload, device)

    def score(self, artifact: PairArtifact, ctx: EvalContext) -> dict[str, float]:
        return _evaluate.score(artifact, ctx)

    def evaluate(self, artifact: PairArtifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
        return _evaluate.evaluate(artifact, ctx)


COUPLED = CoupledFamily()
