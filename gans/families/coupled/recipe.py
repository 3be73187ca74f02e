"""The coupled family's preset and training recipe: CoGAN (Liu and Tuzel 2016).

Two streams, ``a`` and ``b``, one per domain, drawn independently: CoGAN never sees a pair. On paired data
(``mnist5k-edges``, ``mnist5k-negatives``, ``paired:PATH``) the training rows are split in two halves first,
domain a from one half and domain b from the other (the paper's protocol), so no image has its partner in the
other stream. One discriminator update judges real against generated images in both domains; one generator
update draws a pair from each latent and asks the discriminator to take both for real.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from gans.config import ConfigError, ModelConfig, override_fields, require, to_dict
from gans.data import Dataset
from gans.family import Augment, Batch, Composition, Phase, StatelessRecipe, weights
from gans.families.coupled.nets import DOMAINS, CoupledDiscriminator, CoupledGenerator, CoupledSpec
from gans.losses import LOSSES, check_loss

FAMILY = "coupled"
SPLIT_SEED = 0  # the split of paired rows into the two halves (the same for every run on the same data)


@dataclass(frozen=True, kw_only=True)
class Coupled(Composition):
    """A resolved CoGAN composition. ``shared_g``: leading generator blocks shared by both domains (-1: every
    block but the output); ``shared_d``: trailing discriminator blocks shared (-1: every block but the input).
    0 and 0 train two independent GANs."""

    shared_g: int = -1
    shared_d: int = -1
    loss: str = "non-saturating"

    def components(self) -> dict[str, str]:
        g = "all but the output block" if self.shared_g < 0 else f"{self.shared_g} leading blocks"
        d = "all but the input block" if self.shared_d < 0 else f"{self.shared_d} trailing blocks"
        return {"generator": f"dcgan pair, shared: {g}", "discriminator": f"dcgan pair, shared: {d}",
                "loss": self.loss, "optimizer": self.optimizer_label(), "n_critic": str(self.n_critic)}


PRESETS: dict[str, Coupled] = {p.name: p for p in [
    Coupled(name="cogan", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999,
            paper="Liu and Tuzel 2016, Coupled Generative Adversarial Networks (two GANs sharing the generators' "
                  "first layers and the discriminators' last layers learn a joint distribution without pairs)"),
]}


def resolve_coupled(cfg: ModelConfig) -> Coupled:
    """The preset ``cfg.variant`` with ``cfg.overrides`` applied and checked (the block counts against the
    resolution are checked by the recipe, which knows it)."""
    require(cfg.variant in PRESETS, "model.variant", f"unknown variant {cfg.variant!r}; allowed values: {', '.join(PRESETS)}")
    where = "model.overrides"
    p = override_fields(PRESETS[cfg.variant], cfg.overrides, where)
    for key in ("shared_g", "shared_d"):
        require(getattr(p, key) >= -1, f"{where}.{key}", f"got {getattr(p, key)}; expected -1 (the default sharing) or "
                                                          "a number of blocks >= 0")
    check_loss(p.loss, {}, f"{where}.loss")
    p.check_optimizer(where)
    return p


def coupled_spec(comp: Coupled, model: ModelConfig, channels: dict[str, int], resolution: int) -> CoupledSpec:
    """The network spec, with the sharing resolved against the resolution's block count (a ConfigError
    naming the key when it asks for more blocks than a network has to share)."""
    spec = CoupledSpec(channels_a=channels["a"], channels_b=channels["b"], resolution=resolution, z_dim=model.z_dim,
                       width=model.width, shared_g=0, shared_d=0)
    blocks = spec.blocks
    shared = {}
    for key, ends in (("shared_g", "output"), ("shared_d", "input")):
        value = getattr(comp, key)
        if value > blocks - 1:
            raise ConfigError(f"model.overrides.{key}: got {value}; at {resolution}x{resolution} pixels each network "
                              f"has {blocks} blocks and its {ends} block stays per domain, so at most {blocks - 1}")
        shared[key] = blocks - 1 if value < 0 else value
    return CoupledSpec(**{**asdict(spec), **shared})


def halves(data: Dataset) -> dict[str, torch.Tensor]:
    """The training images of each domain: unpaired parts as they are; paired parts split in two halves by
    row (a from one, b from the other), so no pair reaches training."""
    if data.layout == "unpaired":
        return {d: data.parts[d].images for d in DOMAINS}
    order = torch.randperm(len(data.parts["a"]), generator=torch.Generator().manual_seed(SPLIT_SEED))
    half = len(order) // 2
    return {"a": data.parts["a"].images[order[:half].sort().values],
            "b": data.parts["b"].images[order[half:].sort().values]}


class CoupledRecipe(StatelessRecipe):
    """A :class:`gans.family.Recipe` for CoGAN on two domains."""

    primary_metric, higher_is_better = "fid", False

    def __init__(self, comp: Coupled, *, model: ModelConfig, data: Dataset) -> None:
        if data.layout not in ("paired", "unpaired"):
            raise ConfigError(f"model.variant: {comp.name} ({FAMILY}) trains on two domains (paired or unpaired "
                              f"data); the prepared data has the {data.layout} layout")
        images = halves(data)
        for d in DOMAINS:
            if len(images[d]) < 2:
                raise ConfigError(f"data.source: domain {d} has {len(images[d])} training images for {comp.name}; "
                                  "it needs at least 2 (paired data is split in two halves, one per domain)")
        self.comp, self.model_cfg, self.variant = comp, model, comp.name
        self.spec = coupled_spec(comp, model, {d: int(images[d].shape[1]) for d in DOMAINS}, int(images["a"].shape[-1]))
        self.classes = {d: list(data.parts[d].classes) for d in DOMAINS}
        self.streams = {d: {"images": images[d]} for d in DOMAINS}
        self.phases = (Phase("D", "D", repeats=comp.n_critic), Phase("G", "G", frozen=("D",)))
        self.optimizers = comp.optimizers(("G",), ("D",))
        self.ema = {"G_ema": "G"}
        self.split = "halves" if data.layout == "paired" else "none"

    def describe(self) -> dict[str, Any]:
        return {"variant": {k: v for k, v in asdict(self.comp).items() if k != "paper"}, "spec": asdict(self.spec),
                "split": self.split}

    def build(self) -> dict[str, nn.Module]:
        return {"G": CoupledGenerator(self.spec), "D": CoupledDiscriminator(self.spec)}

    def bind(self, networks: dict[str, nn.Module], *, augment: Augment | None, device: torch.device) -> None:
        self.nets, self.device = networks, device
        self.augment = augment or (lambda x: x)
        self.loss_fn = LOSSES[self.comp.loss]()

    def _pair(self, n: int) -> dict[str, torch.Tensor]:
        fakes = self.nets["G"](torch.randn(n, self.spec.z_dim, device=self.device))
        return dict(zip(DOMAINS, fakes))

    def loss(self, phase: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        D, real = self.nets["D"], {d: batch[d]["images"] for d in DOMAINS}
        n = min(len(x) for x in real.values())
        if phase == "G":
            fake, total, stats = self._pair(n), 0.0, {}
            for d in DOMAINS:
                real_logits = None
                if self.loss_fn.needs_real_in_g:
                    with torch.no_grad():
                        real_logits = D(self.augment(real[d]), d).float()
                term = self.loss_fn.g_loss(D(self.augment(fake[d]), d).float(), real_logits)
                stats[f"loss_g_{d}"] = term.detach()
                total = total + term
            return total, {**stats, "loss_g": total.detach()}
        with torch.no_grad():
            fake = self._pair(n)
        total, stats, signs = 0.0, {}, []
        for d in DOMAINS:
            real_logits = D(self.augment(real[d]), d).float()
            fake_logits = D(self.augment(fake[d]), d).float()
            term = self.loss_fn.d_loss(real_logits, fake_logits)
            stats.update({f"loss_d_{d}": term.detach(), f"d_real_{d}": real_logits.detach().mean(),
                          f"d_fake_{d}": fake_logits.detach().mean()})
            signs.append(real_logits.detach().sign().mean())
            total = total + term
        return total, {**stats, "loss_d": total.detach(), "d_real_sign": torch.stack(signs).mean()}

    def export(self, ema: dict[str, nn.Module], step: int) -> dict[str, Any]:
        """What ``models/generator.pt`` holds for CoGAN: the EMA coupled generator and all that rebuilds it."""
        return {"family": FAMILY, "artifact": "pair", "generator": weights(ema["G_ema"]), "spec": asdict(self.spec),
                "variant": asdict(self.comp), "model": to_dict(self.model_cfg), "classes": self.classes,
                "split": self.split, "step": step}

    def sample_grid(self, ema: dict[str, nn.Module], device: torch.device) -> torch.Tensor:
        from gans.families.coupled.evaluate import pair_grid, draw_pairs

        return pair_grid(*draw_pairs(ema["G_ema"], list(range(32)), z_dim=self.spec.z_dim, device=device))
