"""Translation presets: each name from the literature is one composition of the family's axes (generator,
discriminator, adversarial loss, regularizers, paired / cycle / identity terms, image pool, schedule).
``model.overrides`` may swap any axis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gans.config import ConfigError, ModelConfig, override_fields, require
from gans.family import Composition
from gans.families.translation.nets import DISCRIMINATORS, GENERATORS
from gans.layers import NORMS
from gans.losses import PER_SAMPLE_PENALTIES, check_loss, check_regularizers

# Regularizers that only need D's output (the consistency term reads features a PatchGAN does not expose).
TRANSLATION_REGULARIZERS = ("gp", "wgan-div", "r1", "dragan", "clip")


@dataclass(frozen=True, kw_only=True)
class Translation(Composition):
    """A resolved translation composition. Weights of 0 switch a term off."""

    generator: Literal["unet", "resnet", "encoder-decoder"] = "unet"
    g_norm: Literal["batch", "instance", "layer", "none"] = "batch"
    g_blocks: int = 0  # resnet: residual blocks; 0: 9 from 256 pixels, 6 from 128 (CycleGAN), 3 below
    g_dropout: float = 0.5  # unet: dropout next to the bottleneck, pix2pix's noise source
    discriminator: Literal["patch", "image"] = "patch"  # patch logits, or one logit per image
    d_layers: int = 0  # patch: strided layers; 0: the patch covers 70/256 of the side, as pix2pix's 70x70
    d_norm: Literal["batch", "instance", "layer", "none"] = "batch"
    conditional_d: bool = False  # D judges (input, output) pairs (pix2pix): needs paired data
    two_way: bool = True  # a2b and b2a, each with its own generator and discriminator
    loss: str = "least-squares"
    loss_args: dict[str, Any] = field(default_factory=dict)
    adv_weight: float = 1.0  # weight of the adversarial term in the generators' loss
    regularizers: tuple[str, ...] = ()
    reg_args: dict[str, Any] = field(default_factory=dict)
    paired_weight: float = 0.0  # L1 between G(a) and its ground truth b (pix2pix 100): needs paired data
    cycle_weight: float = 0.0  # reconstruction G_ba(G_ab(a)) ~ a and G_ab(G_ba(b)) ~ b
    identity_weight: float = 0.0  # times cycle_weight: G_ab(b) ~ b and G_ba(a) ~ a (CycleGAN 0.5)
    reconstruction: Literal["l1", "l2"] = "l1"  # distance of the cycle and identity terms
    pool_size: int = 0  # generated images each discriminator also sees from history (CycleGAN 50)
    decay_start: float = 1.0  # the LR decays linearly to 0 from this fraction of train.steps (1: constant)

    @property
    def needs_pairs(self) -> bool:
        return self.paired_weight > 0 or self.conditional_d

    def components(self) -> dict[str, str]:
        """The axes as strings, for listings and run tags."""
        loss = self.loss + (f"({_kw(self.loss_args)})" if self.loss_args else "")
        terms = [f"{name} {w:g}" for name, w in (("L1 to target", self.paired_weight), ("cycle", self.cycle_weight),
                                                 ("identity", self.identity_weight * self.cycle_weight)) if w]
        regs = [r + (f"({_kw(self.reg_args[r])})" if r in self.reg_args else "") for r in self.regularizers]
        return {"generator": f"{self.generator} ({self.g_norm} norm)",
                "discriminator": f"{self.discriminator} ({self.d_norm} norm{', conditional' if self.conditional_d else ''})",
                "loss": loss, "terms": ", ".join(terms) or "none", "regularizers": ", ".join(regs) or "none",
                "directions": "a2b, b2a" if self.two_way else "a2b", "pool": str(self.pool_size),
                "optimizer": self.optimizer_label(), "n_critic": str(self.n_critic),
                "lr_decay": "none" if self.decay_start >= 1 else f"linear from {self.decay_start:g} of the steps"}


def _kw(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


PRESETS: dict[str, Translation] = {t.name: t for t in [
    Translation(name="pix2pix", generator="unet", conditional_d=True, two_way=False, loss="non-saturating",
                paired_weight=100.0, decay_start=0.5,
                paper="Isola et al. 2017, Image-to-Image Translation with Conditional Adversarial Networks (U-Net, "
                      "PatchGAN on (input, output), cGAN + 100 L1, dropout noise, Adam 2e-4 (0.5, 0.999), LR decay "
                      "over the second half)"),
    Translation(name="cyclegan", generator="resnet", g_norm="instance", d_norm="instance", loss="least-squares",
                adv_weight=2.0, cycle_weight=10.0, identity_weight=0.5, pool_size=50, decay_start=0.5,
                paper="Zhu et al. 2017, Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial "
                      "Networks (ResNet G, PatchGAN D, least squares, cycle 10, identity 0.5, pool of 50, LR decay "
                      "over the second half; adversarial weight 2 offsets LSGAN's 1/2 in G's loss)"),
    Translation(name="dualgan", generator="unet", d_norm="layer", loss="wasserstein", regularizers=("gp",),
                reg_args={"gp": {"weight": 10.0}}, cycle_weight=100.0, n_critic=2, lr_g=1e-4, lr_d=1e-4,
                beta1=0.5, beta2=0.9,
                paper="Yi et al. 2017, DualGAN (U-Net G, PatchGAN critic, Wasserstein loss, here with gradient "
                      "penalty 10 and no batch norm in the critic, L1 reconstruction 100, 2 critic steps)"),
    Translation(name="discogan", generator="encoder-decoder", discriminator="image", loss="non-saturating",
                cycle_weight=1.0, reconstruction="l2",
                paper="Kim et al. 2017, DiscoGAN (encoder-decoder G without skips, image discriminator, standard "
                      "GAN loss, L2 reconstruction in both directions, Adam 2e-4 (0.5, 0.999))"),
]}


def resolve_translation(cfg: ModelConfig) -> Translation:
    """The preset ``cfg.variant`` with ``cfg.overrides`` applied and checked."""
    require(cfg.variant in PRESETS, "model.variant", f"unknown variant {cfg.variant!r}; allowed values: {', '.join(PRESETS)}")
    where = "model.overrides"
    t = override_fields(PRESETS[cfg.variant], cfg.overrides, where)
    require(t.generator in GENERATORS, f"{where}.generator", f"got {t.generator!r}; allowed values: {', '.join(GENERATORS)}")
    require(t.discriminator in DISCRIMINATORS, f"{where}.discriminator",
            f"got {t.discriminator!r}; allowed values: {', '.join(DISCRIMINATORS)}")
    for key in ("g_norm", "d_norm"):
        require(getattr(t, key) in NORMS, f"{where}.{key}", f"got {getattr(t, key)!r}; allowed values: {', '.join(NORMS)}")
    check_loss(t.loss, t.loss_args, where)
    for i, reg in enumerate(t.regularizers):
        require(reg in TRANSLATION_REGULARIZERS, f"{where}.regularizers[{i}]",
                f"got {reg!r}; the translation family takes {', '.join(TRANSLATION_REGULARIZERS)}")
    check_regularizers(t.regularizers, t.reg_args, where)
    for key in ("adv_weight", "paired_weight", "cycle_weight", "identity_weight", "g_blocks", "d_layers", "pool_size"):
        require(getattr(t, key) >= 0, f"{where}.{key}", f"got {getattr(t, key)}; expected >= 0")
    t.check_optimizer(where)
    require(0 <= t.g_dropout < 1, f"{where}.g_dropout", f"got {t.g_dropout}; expected [0, 1)")
    require(0 < t.decay_start <= 1, f"{where}.decay_start", f"got {t.decay_start}; expected (0, 1] (1: no decay)")
    if not t.two_way and (t.cycle_weight or t.identity_weight):
        raise ConfigError(f"{where}.two_way: the cycle and identity terms need both directions; set two_way: true "
                          "or cycle_weight: 0 and identity_weight: 0")
    if t.d_norm == "batch" and set(PER_SAMPLE_PENALTIES) & set(t.regularizers):
        raise ConfigError(f"{where}.d_norm: gradient penalties are per-sample and need d_norm instance, layer or "
                          "none, not batch")
    if not (t.adv_weight or t.paired_weight or t.cycle_weight):
        raise ConfigError(f"{where}: every term of the generators' loss is off (adv_weight, paired_weight, "
                          "cycle_weight are 0)")
    return t
