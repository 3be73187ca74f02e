"""Frozen, validated configuration dataclasses for the pure GAN library.

Every section of ``params.yaml`` that the library consumes maps to one frozen
dataclass here. ``build_config`` turns a plain mapping into that dataclass,
checking keys, types and ranges, and raises :class:`ConfigError` with a
message that names the offending key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A user-facing configuration error; the message names the key."""


T = TypeVar("T")

# Seeds are 32-bit: the trainer adds rank and step offsets to train.seed and the evaluation multiplies
# evaluate.seed by 10^7, and every result must stay within torch's 64-bit seed range.
MAX_SEED = 2**32 - 1


def require(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError(``key: message``) unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def require_seed(value: int, key: str) -> None:
    """Raise ConfigError unless ``value`` is a seed in 0..MAX_SEED."""
    require(0 <= value <= MAX_SEED, key, f"got {value}; expected a seed in 0..{MAX_SEED} (2^32 - 1)")


def _check_finite(value: Any, key: str) -> None:
    """Raise ConfigError naming the key of any infinite or NaN number in ``value`` (nested mappings and
    lists included): ``.inf`` or ``.nan`` is never a usable setting."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: got {value}; expected a finite number")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]")


def _accepts_float(tp: Any) -> bool:
    return tp is float or (get_origin(tp) in (Union, types.UnionType) and float in get_args(tp))


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(tp))
        return f"{origin.__name__}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it, lightly coerced."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build_config(tp, value, key)
    if _accepts_float(tp):
        _check_finite(value, key)
    if origin is Literal:
        allowed = get_args(tp)
        require(value in allowed, key, f"got {value!r}; allowed values: {', '.join(map(str, allowed))}")
        return value
    if origin in (Union, types.UnionType):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        for option in get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                if number and (option is float or (option is int and isinstance(value, int))):
                    raise  # a number refused by the number option (too large): its reason, not "expected T"
                continue
        raise ConfigError(f"{key}: got {value!r}; expected {_type_name(tp)}")
    if tp is type(None):
        require(value is None, key, f"got {value!r}; expected null")
        return None
    if origin is list or origin is tuple:
        require(isinstance(value, (list, tuple)), key, f"got {value!r}; expected a list")
        (item_tp, *_) = get_args(tp) or (Any,)
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        require(isinstance(value, Mapping), key, f"got {value!r}; expected a mapping")
        _check_finite(value, key)
        return dict(value)
    if tp is Any:
        _check_finite(value, key)
        return value
    if tp is bool:
        require(isinstance(value, bool), key, f"got {value!r}; expected true or false")
        return value
    if tp is int:
        require(isinstance(value, int) and not isinstance(value, bool), key, f"got {value!r}; expected an integer")
        return value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        require(ok, key, f"got {value!r}; expected a number")
        try:
            return float(value)
        except OverflowError:
            digits = len(str(abs(value)))
            raise ConfigError(f"{key}: got an integer of {digits} digits; expected a finite number") from None
    if tp is str:
        require(isinstance(value, str), key, f"got {value!r}; expected a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def build_config(cls: type[T], raw: Any, where: str) -> T:
    """Build the frozen dataclass ``cls`` from the mapping ``raw``.

    Missing keys take their defaults; unknown keys, wrong types and values out
    of range raise ConfigError naming ``where.key``.
    """
    if raw is None:
        raw = {}
    require(isinstance(raw, Mapping), where, f"expected a mapping of keys, got {raw!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    def name_of(key: str) -> str:
        return f"{where}.{key}" if where else str(key)

    for key in raw:
        scope = f"in '{where}'" if where else "at the top level"
        require(key in names, name_of(key), f"unknown key; allowed keys {scope}: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], name_of(k)) for k, v in raw.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(where)
    return obj


def override_fields(base: T, overrides: Mapping[str, Any], where: str,
                    fixed: tuple[str, ...] = ("name", "paper")) -> T:
    """The frozen dataclass ``base`` with each key of ``overrides`` type-checked and replaced (a preset
    with ``model.overrides`` applied). Unknown keys and the ``fixed`` fields name the allowed keys."""
    hints = get_type_hints(type(base))
    names = [f.name for f in dataclasses.fields(base) if f.name not in fixed]
    changes = {}
    for key, value in overrides.items():
        require(key in names, f"{where}.{key}", f"unknown axis; allowed keys: {', '.join(names)}")
        changes[key] = _coerce(value, hints[key], f"{where}.{key}")
    return dataclasses.replace(base, **changes)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain (YAML/JSON friendly) dict of a config dataclass, tuples as lists."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


# --------------------------------------------------------------------------
# Section dataclasses


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """``data``: where images come from and how they are prepared."""

    source: str = "mnist5k"
    resolution: int = 32
    holdout_fraction: float = 0.1
    seed: int = 0
    max_images: int = 0  # 0 keeps every image
    root: str = "data/raw"  # where torchvision datasets live
    scale: int = 0  # super-resolution: pair each image with its bicubic downscale by this factor (0: off)
    labels_per_class: int = 0  # semi-supervised: keep this many training labels per class (0: every label)

    def validate(self, where: str) -> None:
        require(8 <= self.resolution <= 256, f"{where}.resolution", f"got {self.resolution}; expected 8..256")
        require(self.scale in (0, 2, 4, 8), f"{where}.scale", f"got {self.scale}; expected 0 (off), 2, 4 or 8")
        if self.scale:
            require(self.resolution % self.scale == 0 and self.resolution // self.scale >= 4, f"{where}.scale",
                    f"data.resolution {self.resolution} must be a multiple of the scale {self.scale} and leave "
                    f"low-resolution images of at least 4x4 pixels")
        ok = 0.0 < self.holdout_fraction < 0.5
        require(ok, f"{where}.holdout_fraction", f"got {self.holdout_fraction}; expected a number in (0, 0.5)")
        require(self.max_images >= 0, f"{where}.max_images", f"got {self.max_images}; expected >= 0 (0 = all)")
        require(self.labels_per_class >= 0, f"{where}.labels_per_class",
                f"got {self.labels_per_class}; expected >= 0 (0 keeps every label)")
        require_seed(self.seed, f"{where}.seed")


@dataclass(frozen=True, kw_only=True)
class ADAConfig:
    """``augment.ada``: adaptive discriminator augmentation (Karras et al. 2020)."""

    enabled: bool = True
    target: float = 0.6
    interval: int = 4  # minibatches between p adjustments
    speed_kimg: float = 100.0  # thousands of images for p to move from 0 to 1
    pipeline: Literal["b", "bg", "bgc", "c"] = "bgc"
    mode: Literal["adaptive", "fixed"] = "adaptive"  # fixed: p stays at initial_p (the paper's ablation)
    initial_p: float = 0.0
    # what the controller steers to `target`: r_t = E[sign D(real)] on the training batches (the paper's
    # choice), or r_v, the overfitting probe's validation heuristic (noise-to-image variants; p moves at every
    # train.log_every steps instead of every `interval` minibatches)
    heuristic: Literal["r_t", "r_v"] = "r_t"

    def validate(self, where: str) -> None:
        require(0.0 < self.target < 1.0, f"{where}.target", f"got {self.target}; expected a number in (0, 1)")
        require(self.interval >= 1, f"{where}.interval", f"got {self.interval}; expected >= 1")
        require(self.speed_kimg > 0, f"{where}.speed_kimg", f"got {self.speed_kimg}; expected > 0")
        require(0.0 <= self.initial_p < 1.0, f"{where}.initial_p", f"got {self.initial_p}; expected [0, 1)")
        require(not (self.enabled and self.mode == "fixed" and self.initial_p == 0.0), f"{where}.initial_p",
                "is 0 with mode: fixed, which never augments; set initial_p in (0, 1) (e.g. 0.2) or use "
                "mode: adaptive")


STATIC_AUGMENTATIONS = ("xflip",)
DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """``augment``: static dataset augmentation and the trainer's online augmentation."""

    static: tuple[str, ...] = ()
    diffaugment: str = ""
    ada: ADAConfig = field(default_factory=ADAConfig)

    def validate(self, where: str) -> None:
        for i, name in enumerate(self.static):
            allowed = ", ".join(STATIC_AUGMENTATIONS)
            require(name in STATIC_AUGMENTATIONS, f"{where}.static[{i}]", f"got {name!r}; allowed values: {allowed}")
        for name in self.diffaugment_policies:
            allowed = ", ".join(DIFFAUGMENT_POLICIES)
            require(name in DIFFAUGMENT_POLICIES, f"{where}.diffaugment", f"unknown policy {name!r}; allowed: {allowed}")

    @property
    def diffaugment_policies(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.diffaugment.split(",") if p.strip())


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """``model``: the variant preset and any axis it overrides."""

    variant: str = "dcgan"
    z_dim: int = 64
    width: int = 64  # channels of the widest-resolution layer
    overrides: dict[str, Any] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        require(self.z_dim >= 1, f"{where}.z_dim", f"got {self.z_dim}; expected >= 1")
        require(self.width >= 4, f"{where}.width", f"got {self.width}; expected >= 4")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """``train``: the optimisation schedule. ``steps`` counts generator updates."""

    device: str = "auto"
    batch_size: int = 64
    steps: int = 1500
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    lr_g: float | None = None  # None: the variant's default
    lr_d: float | None = None
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 25
    sample_every: int = 250
    ema_kimg: float = 10.0  # half-life of the generator EMA, in thousands of images
    ema_rampup: float = 0.05
    on_nan: Literal["stop", "skip"] = "stop"  # a non-finite loss stops the run, or its update is skipped
    eval_every: int = 500  # steps between FID checks on the EMA generator (0 = off); the best is kept
    eval_samples: int = 1000
    channels_last: bool | str = "auto"  # NHWC networks and batches; auto: on CUDA, off on the CPU
    compile: bool = False  # torch.compile G and D's trunk for the training step
    distributed: bool | str = "auto"  # data-parallel over torchrun's processes; auto: when it started several

    def validate(self, where: str) -> None:
        for key in ("channels_last", "distributed"):
            value = getattr(self, key)
            require(isinstance(value, bool) or value == "auto", f"{where}.{key}",
                    f"got {value!r}; allowed values: auto, true, false")
        ok_device = self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")
        require(ok_device, f"{where}.device", f"got {self.device!r}; allowed values: auto, cpu, cuda, cuda:N, mps")
        for key in ("batch_size", "steps", "checkpoint_every", "keep_checkpoints", "log_every", "sample_every"):
            value = getattr(self, key)
            require(value >= 1, f"{where}.{key}", f"got {value}; expected an integer >= 1")
        require_seed(self.seed, f"{where}.seed")
        for key in ("lr_g", "lr_d"):
            value = getattr(self, key)
            require(value is None or value > 0, f"{where}.{key}", f"got {value}; expected a number > 0 or null")
        require(self.ema_kimg >= 0, f"{where}.ema_kimg", f"got {self.ema_kimg}; expected >= 0 (0 disables EMA)")
        require(self.ema_rampup >= 0, f"{where}.ema_rampup", f"got {self.ema_rampup}; expected >= 0")
        require(self.eval_every >= 0, f"{where}.eval_every", f"got {self.eval_every}; expected >= 0 (0 = off)")
        require(self.eval_samples >= 10, f"{where}.eval_samples", f"got {self.eval_samples}; expected >= 10")


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """``evaluate``: how generators are scored and how the domain evaluator is trained."""

    features: Literal["domain", "inception"] = "domain"
    inception_weights: str = ""  # path of the FID Inception weights; empty: the torch cache
    num_samples: int = 5000
    batch_size: int = 250
    seed: int = 0
    evaluator_epochs: int = 8
    kid_subset_size: int = 1000
    # truncation psi values a generator's FID, precision and recall are also measured at (plots/truncation.csv)
    truncation: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)

    def validate(self, where: str) -> None:
        require(self.num_samples >= 10, f"{where}.num_samples", f"got {self.num_samples}; expected >= 10")
        for i, psi in enumerate(self.truncation):
            require(0 <= psi <= 1, f"{where}.truncation[{i}]", f"got {psi!r}; expected a psi in 0..1 "
                    "(1: no truncation, 0: the mean latent)")
        require(len(set(self.truncation)) == len(self.truncation), f"{where}.truncation",
                f"got {list(self.truncation)}; each psi once")
        require_seed(self.seed, f"{where}.seed")
        for key in ("batch_size", "evaluator_epochs", "kid_subset_size"):
            value = getattr(self, key)
            require(value >= 1, f"{where}.{key}", f"got {value}; expected an integer >= 1")
