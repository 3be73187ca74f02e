"""Variant presets: each name from the literature maps to one composition of
registered components (architecture x loss x conditioning x schedule).
``model.overrides`` may swap any axis of a preset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gans.config import ConfigError, ModelConfig, require
from gans.losses import LOSSES
from gans.nets import ARCHITECTURES

CONDITIONING = ("none", "projection")


@dataclass(frozen=True, kw_only=True)
class Variant:
    """A resolved composition. ``conditioning != 'none'`` makes G and D class-conditional."""

    name: str
    architecture: str
    loss: str
    conditioning: str = "none"
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 1
    paper: str = ""

    @property
    def conditional(self) -> bool:
        return self.conditioning != "none"

    def components(self) -> dict[str, str]:
        """The axes as strings, for listings and run tags."""
        return {"architecture": self.architecture, "loss": self.loss, "conditioning": self.conditioning,
                "optimizer": f"adam(lr_g={self.lr_g:g}, lr_d={self.lr_d:g}, betas=({self.beta1:g}, {self.beta2:g}))",
                "n_critic": str(self.n_critic)}


PRESETS: dict[str, Variant] = {
    "dcgan": Variant(name="dcgan", architecture="dcgan", loss="non-saturating",
                     paper="Radford et al. 2015, Unsupervised Representation Learning with DCGANs"),
    "cdcgan": Variant(name="cdcgan", architecture="dcgan", loss="non-saturating", conditioning="projection",
                      paper="DCGAN with a projection discriminator (Miyato and Koyama 2018)"),
}

_REGISTRIES = {"architecture": ARCHITECTURES, "loss": LOSSES}


def resolve_variant(cfg: ModelConfig) -> Variant:
    """The preset ``cfg.variant`` with ``cfg.overrides`` applied and checked."""
    require(cfg.variant in PRESETS, "model.variant", f"unknown variant {cfg.variant!r}; allowed values: {', '.join(PRESETS)}")
    variant = PRESETS[cfg.variant]
    fields = {f.name: f for f in dataclasses.fields(Variant) if f.name not in ("name", "paper")}
    changes = {}
    for key, value in cfg.overrides.items():
        where = f"model.overrides.{key}"
        require(key in fields, where, f"unknown axis; allowed keys: {', '.join(fields)}")
        if key in _REGISTRIES:
            allowed = _REGISTRIES[key]
            require(value in allowed, where, f"got {value!r}; allowed values: {', '.join(allowed)}")
        elif key == "conditioning":
            require(value in CONDITIONING, where, f"got {value!r}; allowed values: {', '.join(CONDITIONING)}")
        elif key == "n_critic":
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, where, f"got {value!r}; expected an integer >= 1")
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            require(ok, where, f"got {value!r}; expected a number > 0")
            value = float(value)
        changes[key] = value
    return dataclasses.replace(variant, **changes) if changes else variant


def check_variant_fits(variant: Variant, *, num_classes: int) -> None:
    """A conditional variant needs labelled data."""
    if variant.conditional and num_classes < 2:
        raise ConfigError(
            f"model.variant: {variant.name} is class-conditional and needs labelled data with at least "
            f"2 classes; data.source has {num_classes}"
        )
