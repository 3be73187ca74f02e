"""Variant presets: each name from the literature maps to one composition of
registered components (architecture x loss x regularizers x conditioning x
schedule). ``model.overrides`` may swap any axis of a preset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gans.config import ConfigError, ModelConfig, override_fields, require
from gans.family import Composition
from gans.losses import ARCHITECTURAL_REGULARIZERS, PER_SAMPLE_PENALTIES, check_loss, check_regularizers
from gans.families.noise.nets import ARCHITECTURES

CONDITIONING = ("none", "concat", "projection", "acgan", "infogan")
LABELLED_CONDITIONING = ("concat", "projection", "acgan")


@dataclass(frozen=True, kw_only=True)
class Variant(Composition):
    """A resolved composition. Dict fields hold keyword arguments of the named components."""

    architecture: str = "dcgan"
    loss: str = "non-saturating"
    loss_args: dict[str, Any] = field(default_factory=dict)
    regularizers: tuple[str, ...] = ()
    reg_args: dict[str, Any] = field(default_factory=dict)  # {regularizer: {arg: value}}
    conditioning: Literal["none", "concat", "projection", "acgan", "infogan"] = "none"
    info_categories: int = 10
    info_continuous: int = 2
    info_weight: float = 1.0  # InfoGAN: lambda of the categorical code's mutual-information term
    info_continuous_weight: float = 0.1  # and of the continuous codes' (Gaussian, unit variance)
    d_norm: Literal["batch", "layer", "none"] = "batch"
    d_dropout: float = 0.0
    minibatch_features: int = 0
    feature_matching: bool = False
    attention_res: int = 0  # SAGAN, BigGAN: 0 = half the image side
    ortho_weight: float = 0.0  # BigGAN: beta of the orthogonal penalty on G's weights (0 = off)

    @property
    def conditional(self) -> bool:
        """True when G and D take labels from the data (CGAN, projection, ACGAN)."""
        return self.conditioning in LABELLED_CONDITIONING

    def components(self) -> dict[str, str]:
        """The axes as strings, for listings and run tags."""
        loss = self.loss + (f"({_kw(self.loss_args)})" if self.loss_args else "")
        regs = [r + (f"({_kw(self.reg_args[r])})" if r in self.reg_args else "") for r in self.regularizers]
        if self.minibatch_features:
            regs.append("minibatch-discrimination")
        if self.feature_matching:
            regs.append("feature-matching")
        if self.ortho_weight:
            regs.append(f"orthogonal(beta={self.ortho_weight:g})")
        return {"architecture": self.architecture, "loss": loss, "regularizers": ", ".join(regs) or "none",
                "conditioning": self.conditioning, "optimizer": self.optimizer_label(), "n_critic": str(self.n_critic)}


def _kw(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


_WGAN_GP = dict(architecture="dcgan", loss="wasserstein", regularizers=("gp",), d_norm="none",
                lr_g=1e-4, lr_d=1e-4, beta1=0.0, beta2=0.9, n_critic=5)

PRESETS: dict[str, Variant] = {v.name: v for v in [
    Variant(name="gan", architecture="mlp", loss="minimax",
            paper="Goodfellow et al. 2014, Generative Adversarial Nets (MLP, saturating minimax loss)"),
    # G at twice the paper's 2e-4: at this project's CPU budgets the faster generator halves the domain FID
    # (bench/RESULTS.md, "Default run ablation"); `-S train.lr_g=0.0002` is the paper's setting
    Variant(name="dcgan", lr_g=4e-4,
            paper="Radford et al. 2015, Unsupervised Representation Learning with Deep Convolutional GANs "
                  "(Adam 2e-4 for both; here G at 4e-4)"),
    Variant(name="cgan", conditioning="concat",
            paper="Mirza and Osindero 2014, Conditional GANs (one-hot labels concatenated to G and D inputs)"),
    Variant(name="lsgan", loss="least-squares", loss_args={"a": 0.0, "b": 1.0, "c": 1.0},
            paper="Mao et al. 2017, Least Squares GANs (0-1 coding)"),
    Variant(name="cls-gan", loss="least-squares", loss_args={"a": 0.0, "b": 1.0, "c": 1.0}, conditioning="concat",
            paper="Mao et al. 2017, conditional LSGAN"),
    Variant(name="acgan", conditioning="acgan",
            paper="Odena et al. 2017, Conditional Image Synthesis with Auxiliary Classifier GANs"),
    Variant(name="infogan", conditioning="infogan", info_categories=10, info_continuous=2, lr_g=1e-3,
            paper="Chen et al. 2016, InfoGAN (10-way categorical + 2 continuous codes, lambda 1 and 0.1, "
                  "Adam 1e-3 for G, 2e-4 for D)"),
    Variant(name="improved-gan", loss_args={"smoothing": 0.1}, minibatch_features=32, feature_matching=True,
            paper="Salimans et al. 2016, Improved Techniques for Training GANs (feature matching, minibatch "
                  "discrimination, one-sided label smoothing)"),
    Variant(name="wgan", loss="wasserstein", regularizers=("clip",), reg_args={"clip": {"clip": 0.01}},
            optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, n_critic=5,
            paper="Arjovsky et al. 2017, Wasserstein GAN (weight clipping 0.01, RMSProp 5e-5, 5 critic steps)"),
    Variant(name="wgan-gp", **_WGAN_GP, reg_args={"gp": {"weight": 10.0}},
            paper="Gulrajani et al. 2017, Improved Training of Wasserstein GANs (lambda 10, Adam 1e-4 (0, 0.9))"),
    Variant(name="wgan-div", **{**_WGAN_GP, "regularizers": ("wgan-div",), "lr_g": 2e-4, "lr_d": 2e-4,
                                "beta1": 0.5, "beta2": 0.999},
            reg_args={"wgan-div": {"k": 2.0, "p": 6.0}},
            paper="Wu et al. 2018, Wasserstein Divergence for GANs (k 2, p 6)"),
    Variant(name="ct-gan", **{**_WGAN_GP, "regularizers": ("gp", "ct")}, d_dropout=0.5,
            reg_args={"gp": {"weight": 10.0}, "ct": {"weight": 2.0, "margin": 0.0}},
            paper="Wei et al. 2018, Improving the Improved Training of WGANs (consistency term, lambda 2)"),
    Variant(name="rsgan", loss="rsgan", paper="Jolicoeur-Martineau 2018, relativistic standard GAN"),
    Variant(name="ragan", loss="ragan", paper="Jolicoeur-Martineau 2018, relativistic average GAN"),
    Variant(name="ralsgan", loss="ralsgan", paper="Jolicoeur-Martineau 2018, relativistic average LSGAN"),
    Variant(name="fgan", loss="f-divergence", loss_args={"divergence": "js"},
            paper="Nowozin et al. 2016, f-GAN (divergence: kl, reverse-kl, js, pearson, hellinger)"),
    Variant(name="hinge", loss="hinge", paper="Lim and Ye 2017, Geometric GAN (hinge loss, DCGAN networks)"),
    # Adam 2e-4 (0, 0.9) with 2 D steps per G step, as the SNGAN reimplementations run it (they use 5): at this
    # project's budget the paper's 1e-4 (0.5, 0.999) with one D step left sngan at four times dcgan's domain FID
    # (bench/RESULTS.md, "SNGAN: the optimiser settings")
    Variant(name="sngan", loss="hinge", regularizers=("spectral-norm",), d_norm="none", lr_g=2e-4, lr_d=2e-4,
            beta1=0.0, beta2=0.9, n_critic=2,
            paper="Miyato et al. 2018, Spectral Normalization for GANs (hinge; the paper's standard-CNN runs: Adam "
                  "1e-4 (0.5, 0.999), one D step; here 2e-4 (0, 0.9), 2 D steps)"),
    Variant(name="sagan", architecture="sagan", loss="hinge", regularizers=("spectral-norm",), d_norm="none",
            lr_g=1e-4, lr_d=4e-4, beta1=0.0, beta2=0.9,
            paper="Zhang et al. 2019, Self-Attention GANs (SN in G and D, hinge, TTUR 1e-4/4e-4)"),
    Variant(name="biggan", architecture="biggan", loss="hinge", regularizers=("spectral-norm",), d_norm="none",
            conditioning="projection", ortho_weight=1e-4, lr_g=1e-4, lr_d=4e-4, beta1=0.0, beta2=0.999, n_critic=2,
            paper="Brock et al. 2019, Large Scale GAN Training (class-conditional BN with a shared embedding, "
                  "hierarchical z, projection D, self-attention, orthogonal penalty 1e-4, hinge, SN in G and D, "
                  "Adam 1e-4/4e-4 (0, 0.999), 2 D steps; sized down: 4 x width channels in every block)"),
    Variant(name="cdcgan", conditioning="projection",
            paper="DCGAN with a projection discriminator (Miyato and Koyama 2018)"),
]}


def resolve_variant(cfg: ModelConfig) -> Variant:
    """The preset ``cfg.variant`` with ``cfg.overrides`` applied and checked."""
    require(cfg.variant in PRESETS, "model.variant", f"unknown variant {cfg.variant!r}; allowed values: {', '.join(PRESETS)}")
    where = "model.overrides"
    v = override_fields(PRESETS[cfg.variant], cfg.overrides, where)
    require(v.architecture in ARCHITECTURES, f"{where}.architecture",
            f"got {v.architecture!r}; allowed values: {', '.join(ARCHITECTURES)}")
    check_loss(v.loss, v.loss_args, where)
    check_regularizers(v.regularizers, v.reg_args, where, known=ARCHITECTURAL_REGULARIZERS)
    v.check_optimizer(where)
    require(v.info_categories >= 1, f"{where}.info_categories", f"got {v.info_categories}; expected >= 1")
    for key in ("info_weight", "info_continuous_weight"):
        require(getattr(v, key) >= 0, f"{where}.{key}", f"got {getattr(v, key)}; expected >= 0")
    require(v.ortho_weight >= 0, f"{where}.ortho_weight", f"got {v.ortho_weight}; expected >= 0")
    require(0 <= v.d_dropout < 1, f"{where}.d_dropout", f"got {v.d_dropout}; expected [0, 1)")
    if "ct" in v.regularizers:
        require(v.d_dropout > 0, f"{where}.d_dropout", "the ct regularizer needs discriminator dropout > 0")
    if v.d_norm == "batch" and set(PER_SAMPLE_PENALTIES) & set(v.regularizers):
        raise ConfigError(f"{where}.d_norm: gradient penalties are per-sample and need d_norm none or layer, "
                          "not batch")
    return v


def check_variant_fits(variant: Variant, *, num_classes: int) -> None:
    """A class-conditional variant needs labelled data."""
    if variant.conditional and num_classes < 2:
        raise ConfigError(
            f"model.variant: {variant.name} is class-conditional and needs labelled data with at least "
            f"2 classes; data.source has {num_classes}"
        )
