"""The noise-to-image family: a generator from a latent (and a class label or InfoGAN codes) to an image,
one discriminator, and the classic variants (GAN, DCGAN, CGAN, LSGAN, ACGAN, InfoGAN, the WGAN family,
relativistic, f-GAN, SNGAN, SAGAN, ...). Its artifact kind is ``generate``: seed (and label) -> image."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gans.config import ModelConfig
from gans.data import Dataset
from gans.family import EvalContext, Graph, Metric
from gans.families.noise import evaluate as _evaluate
from gans.families.noise.nets import NetSpec, build_networks
from gans.families.noise.recipe import FAMILY, NoiseRecipe, build_objective, build_spec
from gans.families.noise.variants import PRESETS, Variant, resolve_variant
from gans.io import load_torch
from gans.latent import Encoder, invert, renderer, sefa_directions
from gans.sampling import LATENT_RECIPE, TRUNCATION_RECIPE, Truncation, generate, latents_for_seeds

EDIT_DIRECTIONS = 10
EDIT_RECIPE = ("optional 'direction' (0..{k}) and 'alpha' (-10..10): the seed's latent moved by alpha x SeFa "
               "direction d (unit length, strongest first, from the first layer's weights; see gans explore)")
INVERT_RECIPE = ("a row with 'image' (a base64 PNG of the model's size; and 'label' when conditional) instead of "
                 "'seed' answers its 'latent' (z_dim floats) and the 'png' it draws: the explore stage's encoder "
                 "guesses z, then {steps} steps of gradient descent on the pixel error refine it")

__all__ = ["NOISE", "GeneratorArtifact", "NoiseFamily", "build_objective", "build_spec", "load_generator"]


class GeneratorArtifact:
    """A trained generator: ``generate(seeds, labels)`` -> uint8 (N, C, R, R), one image per seed."""

    kind, family = "generate", FAMILY
    truncates = True  # generate and edit take a truncation psi (gans.sampling.latents_for_seeds)

    def __init__(self, payload: dict[str, Any], device: torch.device | str) -> None:
        spec = NetSpec(**payload["spec"])
        generator, _ = build_networks(payload["variant"]["architecture"], spec)
        generator.load_state_dict(payload["state_dict"])
        self.generator: nn.Module = generator.to(device).eval()
        self.payload, self.device = payload, torch.device(device)
        self.variant = payload["variant"]["name"]
        self.spec = payload["spec"]
        self.z_dim, self.num_classes = spec.z_dim, spec.num_classes
        self.classes = tuple(payload.get("classes", ()))

    def generate(self, seeds: Sequence[int], labels: Sequence[int] | None, *, batch_size: int = 256,
                 truncation: Truncation = 1.0) -> torch.Tensor:
        return generate(self.generator, seeds, labels, z_dim=self.z_dim, device=self.device, batch_size=batch_size,
                        truncation=truncation)

    @property
    def edit_directions(self) -> int:
        """How many latent directions ``edit`` moves along: the top SeFa directions, at most EDIT_DIRECTIONS."""
        return min(EDIT_DIRECTIONS, self.z_dim)

    @cached_property
    def directions(self) -> torch.Tensor:
        """(edit_directions, z_dim): SeFa's directions of this generator, strongest first (closed form, from the
        first layer's weights: the same every time, and the ones ``gans explore`` reports as ``sefa``)."""
        return sefa_directions(self.generator, self.z_dim, self.edit_directions)[0]

    def edit(self, seeds: Sequence[int], labels: Sequence[int] | None, directions: Sequence[int],
             alphas: Sequence[float], truncation: Truncation = 1.0) -> torch.Tensor:
        """Images of ``seeds`` with each (truncated) latent moved by alpha x its SeFa direction (alpha 0:
        ``generate``'s)."""
        z = latents_for_seeds(seeds, self.z_dim, truncation)
        z = z + torch.tensor(alphas, dtype=torch.float32)[:, None] * self.directions[list(directions)]
        render = renderer(self.generator, self.device)
        y = None if labels is None else torch.as_tensor(list(labels), dtype=torch.int64)
        return torch.cat([render(z[i:i + 256], None if y is None else y[i:i + 256]) for i in range(0, len(z), 256)])

    encoder: nn.Module | None = None
    invert_steps = 0

    def attach_encoder(self, saved: dict[str, Any]) -> None:
        """Take the explore stage's encoder (``models/directions.pt``: ``saved['encoder']``), which starts
        ``invert``, and its number of refinement steps."""
        entry = saved["encoder"]
        if entry["z_dim"] != self.z_dim or entry["channels"] != self.spec["channels"]:
            raise ValueError(f"the encoder maps {entry['channels']}-channel images to {entry['z_dim']} latents; "
                             f"{self.variant} draws {self.spec['channels']}-channel images from {self.z_dim}")
        encoder = Encoder(entry["channels"], entry["z_dim"])
        encoder.load_state_dict(entry["state"])
        self.encoder, self.invert_steps = encoder.to(self.device).eval(), int(entry.get("invert_steps", 100))

    def invert(self, images: torch.Tensor, labels: Sequence[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents of uint8 ``images`` (N, C, R, R): the encoder's guess refined by ``invert_steps`` of
        gradient descent on the pixel error; (latents (N, z_dim), their images uint8)."""
        if self.encoder is None:
            raise RuntimeError("no encoder attached (attach_encoder)")
        target = images.float().to(self.device) / 127.5 - 1
        y = None if labels is None else torch.as_tensor(list(labels), dtype=torch.int64, device=self.device)
        with torch.no_grad():
            start = self.encoder(target)
        z = invert(self.generator, target, start, y, steps=self.invert_steps)
        return z.cpu(), renderer(self.generator, self.device)(z, y)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "family": self.family, "variant": self.variant, "z_dim": self.z_dim,
                "num_classes": self.num_classes, "classes": list(self.classes),
                "resolution": self.spec["resolution"], "channels": self.spec["channels"], "latent": LATENT_RECIPE,
                "truncation": TRUNCATION_RECIPE, "edit": EDIT_RECIPE.format(k=self.edit_directions - 1),
                "invert": (INVERT_RECIPE.format(steps=self.invert_steps) if self.encoder is not None else
                           "not available: registered without the explore stage's encoder")}

    def graphs(self) -> list[Graph]:
        inputs = {"z": torch.zeros(2, self.z_dim, device=self.device)}
        meta = {"z": f"float32 (N, {self.z_dim}): the latent; {LATENT_RECIPE}; for truncation psi, pass psi * z"}
        if self.num_classes:
            inputs["label"] = torch.zeros(2, dtype=torch.int64, device=self.device)
            named = self.classes and list(self.classes) != [str(i) for i in range(self.num_classes)]
            meta["label"] = f"int64 (N,): the class, 0..{self.num_classes - 1}" + (
                f" ({', '.join(self.classes)})" if named else "")
        return [Graph("generator", _Generate(self.generator), inputs, meta, bounds={"label": self.num_classes})]


class _Generate(nn.Module):
    """G(z) or G(z, label): the label is an input only of a class-conditional generator."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, label)


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the EMA generator saved by the train stage; returns (G in eval mode, payload)."""
    payload = load_torch(path, map_location=device)
    if not isinstance(payload, dict) or "state_dict" not in payload or "spec" not in payload:
        raise ValueError(f"{path} is not a generator file written by the train stage")
    artifact = GeneratorArtifact(payload, device)
    return artifact.generator, payload


class NoiseFamily:
    """The :class:`gans.family.Family` of noise-to-image generators."""

    name, artifact = FAMILY, "generate"
    layouts = ("images",)
    primary_metric, higher_is_better = "fid", False
    headline = (Metric("fid", "FID"), Metric("is", "IS"), Metric("kid", "KID", ".5f"), Metric("precision", "precision"),
                Metric("recall", "recall"), Metric("conditional_accuracy", "conditional accuracy"),
                Metric("cluster_accuracy", "InfoGAN code accuracy"), Metric("cluster_purity", "InfoGAN code purity"))
    unused_model_keys: tuple[str, ...] = ()
    presets = PRESETS

    def resolve(self, model: ModelConfig) -> Variant:
        return resolve_variant(model)

    def layouts_of(self, composition: Variant) -> tuple[str, ...]:
        return self.layouts

    def components(self, composition: Variant) -> dict[str, str]:
        return composition.components()

    def recipe(self, composition: Variant, *, model: ModelConfig, data: Dataset,
               preview: Dataset | None = None, features: Any = None) -> NoiseRecipe:
        return NoiseRecipe(composition, model=model, data=data, validation=preview)

    def load_artifact(self, payload: dict[str, Any], device: torch.device | str) -> GeneratorArtifact:
        return GeneratorArtifact(payload, device)

    def score(self, artifact: GeneratorArtifact, ctx: EvalContext) -> dict[str, float]:
        return _evaluate.score(artifact, ctx)

    def evaluate(self, artifact: GeneratorArtifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
        return _evaluate.evaluate(artifact, ctx)


NOISE = NoiseFamily()
