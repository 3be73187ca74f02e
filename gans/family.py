"""The family seam: what a kind of GAN training supplies, and what the trainer and the stages ask of it.

A *family* (noise-to-image, image-to-image translation, ...) owns what differs between kinds of GAN: the
data layout it trains on, its presets and their compositions, its networks and optimisers, its training
phases and losses, its extra state, the artifact it exports, how that artifact is evaluated and sampled
into a grid. The trainer runs any family's :class:`Recipe` (one composition bound to one dataset) and owns
what every family shares: device and precision, ADA, EMA, the NaN policy, checkpoints with exact resume,
periodic evaluation, reporting, data parallelism. The trainer never names a family; the pipeline reaches
families only through the registry in ``gans.families``.

This module holds the protocol and its small value types, and nothing that depends on a family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from gans.config import ModelConfig
from gans.data import Dataset
from gans.evaluation import Features

ARTIFACT_KINDS = ("generate", "translate", "classify", "pair")  # super-resolution models translate (one direction, "x4")

# stream name -> aligned tensors of one batch: images float in [-1, 1] (N, C, R, R), labels int64 (N,)
Batch = dict[str, dict[str, torch.Tensor]]
Augment = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Phase:
    """One kind of optimiser update within a training step.

    A step runs the phases in order; a phase runs when ``step % every == 0`` (lazy regularisation), as
    ``repeats`` consecutive updates (the n_critic loop). ``new_batch`` draws a fresh batch of every stream
    for each update (otherwise the phase reuses the batch the previous update drew). ``frozen`` networks
    get no weight gradients in this phase (the discriminators during the generators' update).

    ``start`` and ``stop`` bound the steps it runs at (``start <= step < stop``; ``stop`` None: to the end):
    SRGAN pre-trains its generator on a pixel loss, then switches to the adversarial phases. ``start_key``
    names the param that sets ``start``, for the error when it leaves the phase no step of ``train.steps``."""

    name: str
    optimizer: str
    repeats: int = 1
    every: int = 1
    new_batch: bool = True
    frozen: tuple[str, ...] = ()
    start: int = 0
    stop: int | None = None
    start_key: str = ""

    def due(self, step: int) -> bool:
        """Whether the phase runs at ``step`` (counted from 0)."""
        return self.start <= step and (self.stop is None or step < self.stop) and step % self.every == 0


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimiser over the parameters of ``networks``. ``lr_param`` names the ``train.*`` key that
    overrides ``lr`` (lr_g or lr_d); ``lr_scale`` multiplies either (StyleGAN2 rescales the Adam rate of a
    lazily regularised optimiser). With ``decay_start`` < 1 the learning rate decays linearly to zero from that
    fraction of ``train.steps`` to its end (pix2pix and CycleGAN decay over the second half)."""

    networks: tuple[str, ...]
    lr: float
    kind: Literal["adam", "rmsprop"] = "adam"
    betas: tuple[float, float] = (0.5, 0.999)
    lr_param: Literal["lr_g", "lr_d"] = "lr_g"
    decay_start: float = 1.0
    lr_scale: float = 1.0  # times the rate (lr or the train.* override): lazy regularisation's c


@dataclass(frozen=True, kw_only=True)
class Composition:
    """What every family's composition has: the preset's name, the optimiser axes (one optimiser over the
    generators, one over the discriminators), and the paper it follows. Families subclass it with their axes."""

    name: str
    optimizer: Literal["adam", "rmsprop"] = "adam"
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 1  # discriminator updates per generator update
    paper: str = ""

    def optimizer_label(self) -> str:
        """e.g. ``adam(lr_g=0.0002, lr_d=0.0002, betas=(0.5, 0.999))``, for listings and run tags."""
        betas = f", betas=({self.beta1:g}, {self.beta2:g})" if self.optimizer == "adam" else ""
        return f"{self.optimizer}(lr_g={self.lr_g:g}, lr_d={self.lr_d:g}{betas})"

    def optimizers(self, generators: tuple[str, ...], discriminators: tuple[str, ...],
                   decay_start: float = 1.0) -> dict[str, OptimizerSpec]:
        """Optimisers ``G`` over ``generators`` and ``D`` over ``discriminators`` (none when empty)."""
        betas = (self.beta1, self.beta2)
        specs = {"G": OptimizerSpec(generators, self.lr_g, self.optimizer, betas, "lr_g", decay_start)}
        if discriminators:
            specs["D"] = OptimizerSpec(discriminators, self.lr_d, self.optimizer, betas, "lr_d", decay_start)
        return specs

    def check_optimizer(self, where: str) -> None:
        """Positive learning rates and at least one critic update, or a ConfigError naming the key."""
        from gans.config import require

        for key in ("lr_g", "lr_d"):
            require(getattr(self, key) > 0, f"{where}.{key}", f"got {getattr(self, key)}; expected > 0")
        require(self.n_critic >= 1, f"{where}.n_critic", f"got {self.n_critic}; expected >= 1")


class Recipe(Protocol):
    """One composition of one family, bound to one training set: what the trainer runs."""

    variant: str
    phases: tuple[Phase, ...]
    optimizers: dict[str, OptimizerSpec]
    ema: dict[str, str]  # EMA copy -> the trained network it follows
    streams: dict[str, dict[str, torch.Tensor]]  # training data: uint8 images, int64 labels, on the CPU
    primary_metric: str  # what periodic evaluation keeps the best of
    higher_is_better: bool

    def describe(self) -> dict[str, Any]:
        """The resolved composition and network spec (JSON-able): fingerprinted with every checkpoint."""

    def build(self) -> dict[str, nn.Module]:
        """The trained networks, freshly initialised (the trainer seeds the RNG first)."""

    def bind(self, networks: dict[str, nn.Module], *, augment: Augment | None, device: torch.device) -> None:
        """Attach the networks (now on the device) and the discriminator augmentation before training."""

    def loss(self, phase: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one update of ``phase`` and detached statistics. A ``d_real_sign`` statistic,
        E[sign D(augmented reals)], feeds the ADA controller."""

    def after_update(self, phase: str) -> None:
        """Hook after an optimiser step of ``phase`` (weight clipping)."""

    def compile(self) -> None:
        """``torch.compile`` the networks in place for the training step."""

    def state_dict(self) -> dict[str, Any]:
        """Extra state a checkpoint keeps beside networks and optimisers (image pools, ...)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def export(self, ema: dict[str, nn.Module], step: int) -> dict[str, Any]:
        """The artifact payload (``models/generator.pt``): EMA weights and all that rebuilds them."""

    def sample_grid(self, ema: dict[str, nn.Module], device: torch.device) -> torch.Tensor:
        """uint8 (C, H, W) grid of fixed inputs through the EMA networks."""


class StatelessRecipe:
    """The recipe hooks of a family that keeps no extra state and has nothing to do after an update (no
    weight clipping, no image pool): mix it into a recipe class that sets ``nets`` in ``bind``."""

    nets: dict[str, nn.Module]

    def after_update(self, phase: str) -> None:
        pass

    def compile(self) -> None:
        for net in self.nets.values():
            net.compile()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """A network's state dict with contiguous tensors, as artifacts store them."""
    return {k: v.contiguous() for k, v in module.state_dict().items()}


class Extractor(Protocol):
    """Features (for FID, KID, precision/recall) and logits (for IS and label metrics) of uint8 images."""

    id: str

    def extract(self, images: torch.Tensor, *, batch_size: int, desc: str = ...) -> Features: ...


@dataclass(frozen=True)
class EvalContext:
    """What a family's evaluation may use. ``extractors`` and ``classifiers`` are keyed by the holdout's
    part names ("images"; or "a" and "b"): the feature extractor the user chose, and the domain classifier
    of that part (for label metrics; None when the part has no labels). ``real_features(part)`` gives the
    extractor's features of that holdout part (cached by the caller). ``source`` is the ``data.source`` the
    holdout was prepared from (a bundled source may know more, such as the transform between its domains).
    ``truncation``: the psi values a model with a latent (``truncates``) also reports FID and precision/recall
    at, under ``truncation`` in eval.json."""

    holdout: Dataset
    extractors: Mapping[str, Extractor]
    classifiers: Mapping[str, Extractor | None]
    real_features: Callable[[str], Features]
    device: torch.device
    num_samples: int = 5000
    batch_size: int = 250
    seed: int = 0
    kid_subset_size: int = 1000
    source: str = ""
    truncation: tuple[float, ...] = ()  # psi values a latent model is also scored at (FID, precision, recall)


@dataclass(frozen=True)
class Graph:
    """One network of an artifact as a portable export sees it (:mod:`gans.export`).

    ``module(*inputs)`` returns the image, float (N, C, R, R) in [-1, 1] (``output`` "image"), or a
    classifier's logits, float (N, K) (``output`` "classes"); ``inputs`` are example inputs in the order
    ``module`` takes them, each with the batch as its first dimension. When ``pixels_in`` is set, the first
    input is uint8 pixels and the export converts it to [-1, 1] as the artifact does. ``metadata`` describes
    the inputs for users of the exported file (it is stored in it)."""

    name: str  # the file's stem: "generator", or "generator-a2b" for one direction of a translator
    module: nn.Module
    inputs: dict[str, torch.Tensor]
    metadata: dict[str, str]
    pixels_in: bool = False
    bounds: dict[str, int] = field(default_factory=dict)  # integer inputs: values lie in 0..bound - 1
    output: Literal["image", "classes"] = "image"


class Artifact(Protocol):
    """A trained model loaded from its payload. ``kind`` decides the serving row and the sample command:

    - ``generate``: attributes ``z_dim``, ``num_classes``; ``generate(seeds, labels) -> uint8 (N, C, R, R)``. With
      ``truncates`` set, ``generate`` also takes ``truncation=psi`` (one psi, or one per seed); with ``mix_layers``
      (the number of style layers) also ``mix_seeds=`` and ``mix_layers=`` (style mixing, one of each per seed).
    - ``translate``: attributes ``directions`` (e.g. ("a2b", "b2a")), ``resolution``,
      ``in_channels(direction)``; ``translate(images uint8 (N, C, R, R), direction) -> uint8``.
    - ``classify``: attributes ``classes``, ``resolution``, ``channels``; ``classify(images uint8 (N, C, R, R))
      -> probabilities float (N, K)``; a semi-supervised model also ``generate``s from its generator.
    - ``pair``: attributes ``z_dim``, ``domains`` ("a", "b"); ``generate_pair(seeds) -> (uint8 (N, C_a, R, R),
      uint8 (N, C_b, R, R))``, the two images of each seed's latent (CoGAN); ``pair_grid(seeds, per_row=)``.

    An artifact whose ``graphs()`` is empty may say why in ``no_export``.
    ``graphs()`` gives its networks for export (one per direction), ``describe()`` what a client needs to
    know (JSON-able: kind, family, variant, classes, resolution, ...)."""

    kind: str
    family: str
    variant: str
    payload: dict[str, Any]

    def graphs(self) -> list[Graph]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Metric:
    """A metric a family reports in summaries and tables: its key in eval.json, a label and a format."""

    key: str
    label: str
    fmt: str = ".3f"


class Family(Protocol):
    """A kind of GAN training. Presets map to compositions; ``model.variant`` names one preset."""

    name: str
    artifact: str  # one of ARTIFACT_KINDS
    layouts: tuple[str, ...]  # data layouts it trains on (gans.data.LAYOUTS)
    primary_metric: str  # the registry's champion rule and periodic evaluation compare this
    higher_is_better: bool
    headline: tuple[Metric, ...]  # for summaries and the flow's artifact; the first three: sweep tables
    unused_model_keys: tuple[str, ...]  # model.* keys this family ignores: set them and get an error
    presets: Mapping[str, Any]

    def resolve(self, model: ModelConfig) -> Any:
        """The preset ``model.variant`` with ``model.overrides`` applied and checked."""

    def layouts_of(self, composition: Any) -> tuple[str, ...]:
        """The data layouts this composition trains on (a subset of ``layouts``)."""

    def components(self, composition: Any) -> dict[str, str]:
        """The composition's axes as strings (listings, run tags)."""

    def recipe(self, composition: Any, *, model: ModelConfig, data: Dataset, preview: Dataset | None,
               features: Mapping[str, nn.Module] | None = None) -> Recipe:
        """Bind a composition to a training set (``preview``: fixed held-out inputs for sample grids;
        ``features``: the evaluator stage's domain classifiers by data part, fixed networks a loss may use,
        such as the super-resolution family's content loss)."""

    def load_artifact(self, payload: dict[str, Any], device: torch.device | str) -> Artifact: ...

    def score(self, artifact: Artifact, ctx: EvalContext) -> dict[str, float]:
        """The primary metric only, cheaply (periodic evaluation during training)."""

    def evaluate(self, artifact: Artifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
        """Every metric of ``metrics/eval.json`` and the uint8 (C, H, W) sample grid."""
