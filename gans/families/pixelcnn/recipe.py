"""PixelCNN presets and their training recipe: the likelihood baseline beside the GANs.

One network, trained by maximum likelihood (the cross-entropy of each pixel's 256-way softmax, which is the
negative log-likelihood of the discrete image), one Adam, an EMA copy (Polyak averaging) that is exported
and evaluated. No discriminator: augmentation (ADA, DiffAugment) has nothing to act on and is left off (with a note)."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from gans.config import ConfigError, ModelConfig, override_fields, require, to_dict
from gans.data import Dataset
from gans.family import Augment, Batch, Composition, OptimizerSpec, Phase, StatelessRecipe, weights
from gans.families.pixelcnn.nets import PixelCNN, PixelSpec, nll_bits, sample, uniforms
from gans.sampling import grid_seeds_labels, image_grid

FAMILY = "pixelcnn"


@dataclass(frozen=True, kw_only=True)
class PixelComposition(Composition):
    """A resolved PixelCNN composition (``model.width`` sets the stacks' feature maps)."""

    layers: int = 8
    kernel: int = 3
    conditional: bool = False  # a per-class bias in every gate (needs labelled data)

    def components(self) -> dict[str, str]:
        kh = self.kernel // 2 + 1
        return {"network": f"gated pixelcnn ({self.layers} layers, vertical {kh}x{self.kernel}, horizontal 1x{kh})",
                "conditioning": "class bias in every gate" if self.conditional else "none",
                "loss": "negative log-likelihood (256-way softmax per channel)",
                "optimizer": f"adam(lr={self.lr_g:g}, betas=({self.beta1:g}, {self.beta2:g}))"}


PRESETS: dict[str, PixelComposition] = {p.name: p for p in [
    PixelComposition(name="pixelcnn", lr_g=1e-3, beta1=0.9, beta2=0.999,
                     paper="van den Oord et al. 2016, Conditional Image Generation with PixelCNN Decoders (gated "
                           "PixelCNN: vertical and horizontal stacks without a blind spot, tanh x sigmoid gates, "
                           "256-way softmax per channel, trained by likelihood)"),
    PixelComposition(name="cpixelcnn", conditional=True, lr_g=1e-3, beta1=0.9, beta2=0.999,
                     paper="van den Oord et al. 2016, the class-conditional gated PixelCNN (a learned class "
                           "bias in every gate)"),
]}


def resolve_pixelcnn(cfg: ModelConfig) -> PixelComposition:
    """The preset ``cfg.variant`` with ``cfg.overrides`` applied and checked."""
    require(cfg.variant in PRESETS, "model.variant", f"unknown variant {cfg.variant!r}; allowed values: {', '.join(PRESETS)}")
    where = "model.overrides"
    p = override_fields(PRESETS[cfg.variant], cfg.overrides, where)
    require(p.layers >= 1, f"{where}.layers", f"got {p.layers}; expected >= 1")
    require(p.kernel >= 3 and p.kernel % 2 == 1, f"{where}.kernel", f"got {p.kernel}; expected an odd size >= 3")
    require(p.lr_g > 0, f"{where}.lr_g", f"got {p.lr_g}; expected > 0")
    return p


class PixelRecipe(StatelessRecipe):
    """A :class:`gans.family.Recipe` for one PixelCNN composition on one image set (stream ``real``)."""

    primary_metric, higher_is_better = "bits_per_dim", False

    def __init__(self, comp: PixelComposition, *, model: ModelConfig, data: Dataset) -> None:
        if data.layout != "images":
            raise ConfigError(f"model.variant: {comp.name} ({FAMILY}) trains on one image set; the prepared data "
                              f"has the {data.layout} layout")
        images = data.images
        classes = len(images.classes) if images.labels is not None else 0
        if comp.conditional and classes < 2:
            raise ConfigError(f"model.variant: {comp.name} is class-conditional and needs labelled data with at "
                              f"least 2 classes; data.source has {classes}")
        self.comp, self.model_cfg, self.variant, self.classes = comp, model, comp.name, images.classes
        self.spec = PixelSpec(channels=int(images.images.shape[1]), resolution=int(images.images.shape[-1]),
                              width=model.width, layers=comp.layers, kernel=comp.kernel,
                              num_classes=classes if comp.conditional else 0)
        self.streams = {"real": {"images": images.images} | ({"labels": images.labels} if comp.conditional else {})}
        self.phases = (Phase("nll", "G"),)
        self.optimizers = {"G": OptimizerSpec(("G",), comp.lr_g, comp.optimizer, (comp.beta1, comp.beta2), "lr_g")}
        self.ema = {"G_ema": "G"}

    def describe(self) -> dict[str, Any]:
        return {"variant": {k: v for k, v in asdict(self.comp).items() if k != "paper"}, "spec": asdict(self.spec)}

    def build(self) -> dict[str, nn.Module]:
        return {"G": PixelCNN(self.spec)}

    def bind(self, networks: dict[str, nn.Module], *, augment: Augment | None, device: torch.device) -> None:
        if augment is not None:  # params.yaml turns ADA on for the GANs: a note, not an error
            print(f"note: augment: {self.variant} has no discriminator for ADA or DiffAugment to augment for (it is "
                  "trained by likelihood on the images as they are); they are off for this run", file=sys.stderr)
        self.nets, self.device = networks, device

    def loss(self, phase: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean negative log-likelihood of the batch, in bits per dimension (as it is reported)."""
        real = batch["real"]
        bits = nll_bits(self.nets["G"], _pixels(real["images"]), real.get("labels")).mean()
        return bits, {"loss_g": bits.detach(), "bits_per_dim": bits.detach()}

    def export(self, ema: dict[str, nn.Module], step: int) -> dict[str, Any]:
        """What ``models/generator.pt`` holds for a PixelCNN: the EMA weights and all that rebuilds them."""
        return {"family": FAMILY, "artifact": "generate", "state_dict": weights(ema["G_ema"]),
                "spec": asdict(self.spec), "variant": asdict(self.comp),
                "model": to_dict(self.model_cfg), "classes": list(self.classes), "step": step}

    def sample_grid(self, ema: dict[str, nn.Module], device: torch.device) -> torch.Tensor:
        seeds, labels = grid_seeds_labels(self.spec.num_classes)
        y = None if labels is None else torch.tensor(labels, device=device)
        shape = (self.spec.channels, self.spec.resolution, self.spec.resolution)
        return image_grid(sample(ema["G_ema"], uniforms(seeds, shape), y).cpu())


def _pixels(images: torch.Tensor) -> torch.Tensor:
    """The trainer hands batches as floats in [-1, 1]; the likelihood is of the uint8 values they came from."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

