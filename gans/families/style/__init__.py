"""The progressive and style-based family: ProGAN (Karras et al. 2018), StyleGAN2 (Karras et al. 2020) and
StackGAN-v2 (Zhang et al. 2018), the generators that draw at several resolutions.
Noise-to-image generators whose training the family seam carries beyond two plain phases: lazy R1 and
path-length regularisation at their own intervals (StyleGAN2), and state that changes over the run (the
resolution stage and fade-in alpha of ProGAN; the path-length mean and the tracked mean w of StyleGAN2).
Their artifact kind is ``generate``, as the noise-to-image family's; a StyleGAN2 adds two latent controls of
its own: truncation towards the tracked mean w (not the zero latent), and style mixing (the styles of a
second seed from a chosen layer on)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gans.config import ModelConfig
from gans.data import Dataset, to_uint8
from gans.family import EvalContext, Graph, Metric
from gans.families.noise import GeneratorArtifact
from gans.families.noise import evaluate as _evaluate
from gans.families.style.nets import StyleGenerator, StyleSpec
from gans.families.style.progressive import ProgressiveGenerator, ProgressiveSpec
from gans.families.style.stacked import Stacked, StackedRecipe, stacked_generator
from gans.families.style.recipe import (FAMILY, PRESETS, Progressive, ProgressiveRecipe, Style, StyleRecipe,
                                        resolve_style)
from gans.sampling import LATENT_RECIPE, Truncation, latents_for_seeds

__all__ = ["STYLE", "ProgressiveArtifact", "StackedArtifact", "StyleArtifact", "StyleFamily"]

TRUNCATION_RECIPE = ("optional 'truncation' psi in 0..1 (default 1): the seed's w is moved towards the mean w "
                     "tracked during training (of the row's class, for a class-conditional model), w_avg + psi (w - w_avg) "
                     "at every layer (psi 1: the seed's own "
                     "image, psi 0: the same mean image for every seed)")
TRUNCATION_RECIPE_PROGAN = ("optional 'truncation' psi in 0..1 (default 1): the seed's latent, once normalised by the "
                            "generator's pixel norm, is scaled by psi towards 0 (psi 1: the seed's own image, psi 0: "
                            "the same image for every seed)")
MIXING_RECIPE = ("optional 'mix_seed' (int >= 0) with 'mix_layer' (1..{last}): the layers from mix_layer on take "
                 "the styles (w) of mix_seed's latent instead of the seed's (style mixing: low layers carry the "
                 "coarse shape, high ones the stroke and texture); {n} layers in all")


def _psi_rows(truncation: Truncation, rows: slice) -> float | torch.Tensor:
    """The truncation of a batch of rows: one float, or a tensor of the rows' own."""
    if isinstance(truncation, (int, float)):
        return float(truncation)
    return torch.tensor([float(p) for p in truncation[rows]])


def _check_rows(truncation: Truncation, seeds: Sequence[int]) -> None:
    if not isinstance(truncation, (int, float)) and len(truncation) != len(seeds):
        raise ValueError(f"{len(truncation)} truncation values for {len(seeds)} seeds")


class StyleArtifact(GeneratorArtifact):
    """A trained StyleGAN2 generator: ``generate(seeds, labels, truncation=, mix_seeds=, mix_layers=)``."""

    family = FAMILY

    def __init__(self, payload: dict[str, Any], device: torch.device | str) -> None:
        self.net_spec = StyleSpec(**payload["spec"])
        generator = StyleGenerator(self.net_spec)
        generator.load_state_dict(payload["state_dict"])
        self.generator: nn.Module = generator.to(device).eval()
        self.payload, self.device = payload, torch.device(device)
        self.variant = payload["variant"]["name"]
        self.spec = payload["spec"]
        self.z_dim, self.num_classes = self.net_spec.z_dim, self.net_spec.num_classes
        self.classes = tuple(payload.get("classes", ()))
        self.mix_layers = self.net_spec.num_ws  # mix_layer takes 1..mix_layers - 1

    @torch.no_grad()
    def draw(self, z: torch.Tensor, labels: Sequence[int] | None, *, truncation: Truncation = 1.0,
             mix_z: torch.Tensor | None = None, mix_layers: Sequence[int] | None = None,
             batch_size: int = 256) -> torch.Tensor:
        """uint8 images of latents ``z`` (N, z_dim), their w truncated towards the mean w and (with ``mix_z``)
        mixed from ``mix_layers`` on (one per row)."""
        g = self.generator.eval()
        out = []
        for start in range(0, len(z), batch_size):
            rows = slice(start, start + batch_size)
            y = None if labels is None else torch.as_tensor(list(labels[rows]), dtype=torch.int64, device=self.device)
            psi = _psi_rows(truncation, rows)
            mix = {} if mix_z is None else {"mix_z": mix_z[rows].to(self.device),
                                            "mix_layer": torch.as_tensor(list(mix_layers[rows]), dtype=torch.int64)}
            out.append(to_uint8(g.synthesis(g.ws(z[rows].to(self.device), y, psi=psi, **mix))).cpu())
        return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)

    def generate(self, seeds: Sequence[int], labels: Sequence[int] | None, *, batch_size: int = 256,
                 truncation: Truncation = 1.0, mix_seeds: Sequence[int] | None = None,
                 mix_layers: Sequence[int] | None = None) -> torch.Tensor:
        _check_rows(truncation, seeds)
        if mix_seeds is not None:
            self.check_mixing(len(seeds), mix_seeds, mix_layers)
        mix_z = None if mix_seeds is None else latents_for_seeds(mix_seeds, self.z_dim)
        return self.draw(latents_for_seeds(seeds, self.z_dim), labels, truncation=truncation, mix_z=mix_z,
                         mix_layers=mix_layers, batch_size=batch_size)

    def check_mixing(self, n: int, mix_seeds: Sequence[int], mix_layers: Sequence[int] | None) -> None:
        if mix_layers is None or len(mix_seeds) != n or len(mix_layers) != n:
            raise ValueError(f"style mixing needs a mix seed and a mix layer for each of the {n} seeds")
        bad = [m for m in mix_layers if not 1 <= int(m) <= self.mix_layers]
        if bad:
            raise ValueError(f"mix layer {bad[0]}: expected 1..{self.mix_layers - 1} ({self.variant} has "
                             f"{self.mix_layers} style layers; {self.mix_layers}: no mixing)")

    def edit(self, seeds: Sequence[int], labels: Sequence[int] | None, directions: Sequence[int],
             alphas: Sequence[float], truncation: Truncation = 1.0) -> torch.Tensor:
        """Images of ``seeds`` with each latent z moved by alpha x its SeFa direction (of the mapping network's
        first layer), then truncated in w."""
        z = latents_for_seeds(seeds, self.z_dim)
        z = z + torch.tensor(alphas, dtype=torch.float32)[:, None] * self.directions[list(directions)]
        return self.draw(z, labels, truncation=truncation)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["truncation"] = TRUNCATION_RECIPE
        out["mixing"] = MIXING_RECIPE.format(last=self.mix_layers - 1, n=self.mix_layers)
        out["mix_layers"] = self.mix_layers
        return out

    def graphs(self) -> list[Graph]:
        graphs = super().graphs()
        graphs[0].metadata["z"] = (f"float32 (N, {self.z_dim}): the latent; {LATENT_RECIPE}; the graph draws "
                                   "untruncated, unmixed images (truncation towards the mean w and style mixing "
                                   "are in gans sample and the served model)")
        return graphs


class ProgressiveArtifact(GeneratorArtifact):
    """A trained ProGAN generator at the stage and alpha it reached (images at the data's resolution; a run
    exported before its last stage draws coarser images, upsampled). Truncation scales the latent after the
    generator's pixel norm, towards 0 (scaling z before it, as for the noise-to-image family, would change
    nothing)."""

    family = FAMILY

    def __init__(self, payload: dict[str, Any], device: torch.device | str) -> None:
        spec = ProgressiveSpec(**payload["spec"])
        generator = ProgressiveGenerator(spec)
        generator.load_state_dict(payload["state_dict"])
        generator.freeze()
        self.generator: nn.Module = generator.to(device).eval()
        self.payload, self.device = payload, torch.device(device)
        self.variant = payload["variant"]["name"]
        self.spec = {**payload["spec"], "num_classes": 0, "conditioning": "none"}
        self.z_dim, self.num_classes = spec.z_dim, 0
        self.classes = tuple(payload.get("classes", ()))
        self.stage, self.alpha = generator.frozen

    @torch.no_grad()
    def draw(self, z: torch.Tensor, truncation: Truncation = 1.0, batch_size: int = 256) -> torch.Tensor:
        g = self.generator.eval()
        out = [to_uint8(g(z[i:i + batch_size].to(self.device), None, _psi_rows(truncation, slice(i, i + batch_size))))
               .cpu() for i in range(0, len(z), batch_size)]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)

    def generate(self, seeds: Sequence[int], labels: Sequence[int] | None, *, batch_size: int = 256,
                 truncation: Truncation = 1.0) -> torch.Tensor:
        _check_rows(truncation, seeds)
        return self.draw(latents_for_seeds(seeds, self.z_dim), truncation, batch_size)

    def edit(self, seeds: Sequence[int], labels: Sequence[int] | None, directions: Sequence[int],
             alphas: Sequence[float], truncation: Truncation = 1.0) -> torch.Tensor:
        z = latents_for_seeds(seeds, self.z_dim)
        return self.draw(z + torch.tensor(alphas, dtype=torch.float32)[:, None] * self.directions[list(directions)],
                         truncation)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "stage_resolution": 4 * 2 ** self.stage, "alpha": self.alpha,
                "truncation": TRUNCATION_RECIPE_PROGAN}


class StackedArtifact(GeneratorArtifact):
    """A trained StackGAN-v2 generator tree: ``generate`` draws its last (highest-resolution) stage, the
    conditioning vector's noise taken from the latent; truncation scales z (and so c's noise) towards 0, as
    for the noise-to-image family."""

    family = FAMILY

    def __init__(self, payload: dict[str, Any], device: torch.device | str) -> None:
        self.generator: nn.Module = stacked_generator(payload).to(device).eval()
        self.payload, self.device = payload, torch.device(device)
        self.variant = payload["variant"]["name"]
        self.spec = payload["spec"]
        self.z_dim, self.num_classes = self.spec["z_dim"], self.spec["num_classes"]
        self.classes = tuple(payload.get("classes", ()))

    @torch.no_grad()
    def stages(self, seeds: Sequence[int], labels: Sequence[int] | None) -> list[torch.Tensor]:
        """uint8 images of every stage for ``seeds``, lowest resolution first."""
        y = None if labels is None else torch.as_tensor(list(labels), dtype=torch.int64, device=self.device)
        images, _, _ = self.generator.eval().stage_images(latents_for_seeds(seeds, self.z_dim).to(self.device), y)
        return [to_uint8(x).cpu() for x in images]

    def describe(self) -> dict[str, Any]:
        spec = self.generator.spec
        layout = (f"the first {spec.noise_dim} entries of z are noise, the last {spec.ca_dim} the conditioning "
                  f"noise eps (c = mean + sigma * eps)" if spec.noise_dim < spec.z_dim else "all of z is noise")
        return {**super().describe(), "stage_resolutions": spec.sides, "latent_layout": layout}


class StyleFamily:
    """The :class:`gans.family.Family` of progressive and style-based generators."""

    name, artifact = FAMILY, "generate"
    layouts = ("images",)
    primary_metric, higher_is_better = "fid", False
    headline = (Metric("fid", "FID"), Metric("is", "IS"), Metric("kid", "KID", ".5f"), Metric("precision", "precision"),
                Metric("recall", "recall"), Metric("conditional_accuracy", "conditional accuracy"))
    unused_model_keys: tuple[str, ...] = ()
    presets = PRESETS

    def resolve(self, model: ModelConfig) -> Style | Progressive:
        return resolve_style(model)

    def layouts_of(self, composition: Style) -> tuple[str, ...]:
        return self.layouts

    def components(self, composition: Style) -> dict[str, str]:
        return composition.components()

    def recipe(self, composition: Style | Progressive, *, model: ModelConfig, data: Dataset,
               preview: Dataset | None = None, features: Any = None) -> StyleRecipe | ProgressiveRecipe:
        if isinstance(composition, Progressive):
            return ProgressiveRecipe(composition, model=model, data=data)
        if isinstance(composition, Stacked):
            return StackedRecipe(composition, model=model, data=data)
        return StyleRecipe(composition, model=model, data=data)

    def load_artifact(self, payload: dict[str, Any], device: torch.device | str) -> GeneratorArtifact:
        if payload.get("architecture") == "progan":
            return ProgressiveArtifact(payload, device)
        if payload.get("architecture") == "stackgan":
            return StackedArtifact(payload, device)
        return StyleArtifact(payload, device)

    def score(self, artifact: StyleArtifact, ctx: EvalContext) -> dict[str, float]:
        return _evaluate.score(artifact, ctx)

    def evaluate(self, artifact: StyleArtifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
        return _evaluate.evaluate(artifact, ctx)


STYLE = StyleFamily()
