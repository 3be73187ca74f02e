"""Adversarial losses and regularizers, shared by every family.

A loss maps discriminator logits to scalar losses (relativistic losses see
both real and fake logits in both phases). A regularizer adds a term to the
discriminator loss (gradient penalties, consistency) or acts after the
optimiser step (weight clipping). Which passes produce the logits is a
family's business (its objective); the training loop only schedules phases
and optimiser steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from gans.config import ConfigError

# ---------------------------------------------------------------- adversarial losses


class AdversarialLoss(Protocol):
    needs_real_in_g: bool

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor: ...

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor: ...


@dataclass(frozen=True)
class NonSaturating:
    """Goodfellow et al. 2014 with G maximising log D(G(z)); ``smoothing`` is one-sided
    label smoothing of the real target (Salimans et al. 2016: 0.9 instead of 1)."""

    smoothing: float = 0.0
    needs_real_in_g: bool = False

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        s = self.smoothing
        return ((1 - s) * F.softplus(-real) + s * F.softplus(real)).mean() + F.softplus(fake).mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        return F.softplus(-fake).mean()


@dataclass(frozen=True)
class Minimax(NonSaturating):
    """The original saturating game: G minimises log(1 - D(G(z)))."""

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        return -F.softplus(fake).mean()


@dataclass(frozen=True)
class LeastSquares:
    """Mao et al. 2017: D pushes reals to b and fakes to a; G pushes fakes to c."""

    a: float = 0.0
    b: float = 1.0
    c: float = 1.0
    needs_real_in_g: bool = False

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((real - self.b) ** 2).mean() + 0.5 * ((fake - self.a) ** 2).mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        return 0.5 * ((fake - self.c) ** 2).mean()


@dataclass(frozen=True)
class Wasserstein:
    """Arjovsky et al. 2017: the critic estimates E[D(real)] - E[D(fake)]."""

    needs_real_in_g: bool = False

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return fake.mean() - real.mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        return -fake.mean()


@dataclass(frozen=True)
class Hinge:
    """Lim and Ye 2017; Miyato et al. 2018."""

    needs_real_in_g: bool = False

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        return -fake.mean()


@dataclass(frozen=True)
class RelativisticStandard:
    """Jolicoeur-Martineau 2018 (RSGAN): D estimates P(real is more realistic than fake), pairwise."""

    needs_real_in_g: bool = True

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-(real - fake)).mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        assert real is not None
        return F.softplus(-(fake - real)).mean()


@dataclass(frozen=True)
class RelativisticAverage:
    """RaGAN: each sample is compared with the mean logit of the other kind."""

    needs_real_in_g: bool = True

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-(real - fake.mean())).mean() + F.softplus(fake - real.mean()).mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        assert real is not None
        return F.softplus(-(fake - real.mean())).mean() + F.softplus(real - fake.mean()).mean()


@dataclass(frozen=True)
class RelativisticAverageLS:
    """RaLSGAN: the relativistic average with least-squares targets +-1."""

    needs_real_in_g: bool = True

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return ((real - fake.mean() - 1) ** 2).mean() + ((fake - real.mean() + 1) ** 2).mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        assert real is not None
        return ((fake - real.mean() - 1) ** 2).mean() + ((real - fake.mean() + 1) ** 2).mean()


# f-GAN (Nowozin et al. 2016): output activation g_f and Fenchel conjugate f* per divergence, and
# f*(g_f(v)) in a closed form that stays finite for large |v| (the composition of the two overflows).
F_DIVERGENCES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "kl": (lambda v: v, lambda t: torch.exp(t - 1)),
    "reverse-kl": (lambda v: -torch.exp(-v), lambda t: -1 - torch.log(-t)),
    "js": (lambda v: math.log(2.0) - F.softplus(-v), lambda t: -torch.log(2 - torch.exp(t))),
    "pearson": (lambda v: v, lambda t: 0.25 * t * t + t),
    "hellinger": (lambda v: 1 - torch.exp(-v), lambda t: t / (1 - t)),
}
F_CONJUGATE_OF_ACTIVATION: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "kl": lambda v: torch.exp(v - 1),
    "reverse-kl": lambda v: v - 1,
    "js": lambda v: F.softplus(v) - math.log(2.0),
    "pearson": lambda v: 0.25 * v * v + v,
    "hellinger": lambda v: torch.expm1(v),
}


@dataclass(frozen=True)
class FDivergence:
    """Variational divergence minimisation: D maximises E_real[g_f(v)] - E_fake[f*(g_f(v))];
    G uses the paper's alternative update, maximising E_fake[g_f(v)]."""

    divergence: str = "js"
    needs_real_in_g: bool = False

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        act, _ = F_DIVERGENCES[self.divergence]
        return -(act(real).mean() - F_CONJUGATE_OF_ACTIVATION[self.divergence](fake).mean())

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        act, _ = F_DIVERGENCES[self.divergence]
        return -act(fake).mean()


LOSSES: dict[str, Callable[..., AdversarialLoss]] = {
    "non-saturating": NonSaturating,
    "minimax": Minimax,
    "least-squares": LeastSquares,
    "wasserstein": Wasserstein,
    "hinge": Hinge,
    "rsgan": RelativisticStandard,
    "ragan": RelativisticAverage,
    "ralsgan": RelativisticAverageLS,
    "f-divergence": FDivergence,
}

# ---------------------------------------------------------------- regularizers


def gradient_norm(discriminator: nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """(N,) L2 norms of dD/dx at ``images``, with a graph for the penalty's backward.

    Always in float32 (autocast off, images cast), whatever ``train.precision`` is: the penalty
    differentiates a gradient, which bf16/fp16 would round away. A ``torch.compile``d D runs eagerly
    here, since compiled graphs do not support the double backward the penalty needs."""
    images = images.detach().float().requires_grad_(True)
    eager = torch.compiler.set_stance("force_eager") if is_compiled(discriminator) else contextlib.nullcontext()
    with torch.autocast(images.device.type, enabled=False), eager:  # the backward's matmuls too
        out = discriminator(images, labels).float()
        (grad,) = torch.autograd.grad(out.sum(), images, create_graph=True)
        return grad.flatten(1).norm(dim=1)


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` or a submodule was compiled in place (``nn.Module.compile``)."""
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in module.modules())


def _interpolate(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    return eps * real.detach() + (1 - eps) * fake.detach()


@dataclass(frozen=True)
class RegContext:
    """What a regularizer may look at in a D phase (images are as D saw them, augmented)."""

    D: nn.Module
    real: torch.Tensor
    fake: torch.Tensor
    real_labels: torch.Tensor | None
    fake_labels: torch.Tensor | None


@dataclass(frozen=True)
class GradientPenalty:
    """WGAN-GP (Gulrajani et al. 2017): weight * E[(||grad D(x_hat)|| - 1)^2] on interpolates."""

    weight: float = 10.0

    def __call__(self, ctx: RegContext) -> dict[str, torch.Tensor]:
        norms = gradient_norm(ctx.D, _interpolate(ctx.real, ctx.fake), ctx.real_labels)
        return {"gp": self.weight * ((norms - 1) ** 2).mean(), "grad_norm": norms.detach().mean()}


@dataclass(frozen=True)
class WassersteinDivergence:
    """WGAN-div (Wu et al. 2018): k * E[||grad D(x_hat)||^p] on interpolates, defaults k=2, p=6."""

    k: float = 2.0
    p: float = 6.0

    def __call__(self, ctx: RegContext) -> dict[str, torch.Tensor]:
        norms = gradient_norm(ctx.D, _interpolate(ctx.real, ctx.fake), ctx.real_labels)
        return {"div": self.k * (norms ** self.p).mean(), "grad_norm": norms.detach().mean()}


@dataclass(frozen=True)
class R1:
    """Mescheder et al. 2018: gamma/2 * E[||grad D(real)||^2]."""

    gamma: float = 10.0

    def __call__(self, ctx: RegContext) -> dict[str, torch.Tensor]:
        norms = gradient_norm(ctx.D, ctx.real, ctx.real_labels)
        return {"r1": 0.5 * self.gamma * (norms ** 2).mean(), "grad_norm": norms.detach().mean()}


@dataclass(frozen=True)
class Dragan:
    """Kodali et al. 2017: weight * E[(||grad D(x + delta)|| - 1)^2] around the reals,
    delta = 0.5 * std(x) * U[0, 1)."""

    weight: float = 10.0

    def __call__(self, ctx: RegContext) -> dict[str, torch.Tensor]:
        real = ctx.real.detach()
        noisy = real + 0.5 * real.std() * torch.rand_like(real)
        norms = gradient_norm(ctx.D, noisy, ctx.real_labels)
        return {"dragan": self.weight * ((norms - 1) ** 2).mean(), "grad_norm": norms.detach().mean()}


@dataclass(frozen=True)
class ConsistencyTerm:
    """CT-GAN (Wei et al. 2018): two dropout-perturbed passes of D on the same reals should agree:
    weight * E[max(0, |D(x') - D(x'')| + 0.1 * ||h(x') - h(x'')|| - margin)]. Needs D dropout."""

    weight: float = 2.0
    margin: float = 0.0

    def __call__(self, ctx: RegContext) -> dict[str, torch.Tensor]:
        h1, h2 = ctx.D.features(ctx.real, ctx.real_labels), ctx.D.features(ctx.real, ctx.real_labels)
        d1, d2 = ctx.D.logits(h1, ctx.real_labels), ctx.D.logits(h2, ctx.real_labels)
        dist = (d1 - d2).abs() + 0.1 * (h1 - h2).norm(dim=1)
        return {"ct": self.weight * F.relu(dist - self.margin).mean()}


@dataclass(frozen=True)
class WeightClip:
    """WGAN's Lipschitz constraint: clamp every critic weight to [-clip, clip] after each step."""

    clip: float = 0.01

    def __call__(self, ctx: RegContext) -> dict[str, torch.Tensor]:
        return {}

    @torch.no_grad()
    def after_step(self, discriminator: nn.Module) -> None:
        for p in discriminator.parameters():
            p.clamp_(-self.clip, self.clip)


REGULARIZERS: dict[str, Callable[..., Any]] = {
    "gp": GradientPenalty,
    "wgan-div": WassersteinDivergence,
    "r1": R1,
    "dragan": Dragan,
    "ct": ConsistencyTerm,
    "clip": WeightClip,
}
# Applied by the architecture rather than as a loss term.
ARCHITECTURAL_REGULARIZERS = ("spectral-norm", "minibatch-discrimination")


def _check_args(registry: dict[str, Callable[..., Any]], name: str, args: Any, where: str) -> None:
    if not isinstance(args, dict):
        raise ConfigError(f"{where}: got {args!r}; expected a mapping of arguments")
    allowed = [f.name for f in dataclasses.fields(registry[name]) if f.name != "needs_real_in_g"]
    for key, value in args.items():
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown argument of {name}; allowed: {', '.join(allowed) or 'none'}")
        if key == "divergence":
            if value not in F_DIVERGENCES:
                raise ConfigError(f"{where}.{key}: got {value!r}; allowed values: {', '.join(F_DIVERGENCES)}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}.{key}: got {value!r}; expected a number")


def check_loss(name: str, args: Any, where: str) -> None:
    """Raise ConfigError naming ``where.loss`` / ``where.loss_args.KEY`` unless the loss and its arguments exist."""
    if name not in LOSSES:
        raise ConfigError(f"{where}.loss: got {name!r}; allowed values: {', '.join(LOSSES)}")
    _check_args(LOSSES, name, args, f"{where}.loss_args")


def check_regularizers(names: tuple[str, ...], args: dict[str, Any], where: str,
                       known: tuple[str, ...] = ()) -> None:
    """Every name is a regularizer (or one of ``known``, applied elsewhere); every argument exists."""
    allowed = tuple(REGULARIZERS) + known
    for i, reg in enumerate(names):
        if reg not in allowed:
            raise ConfigError(f"{where}.regularizers[{i}]: got {reg!r}; allowed values: {', '.join(allowed)}")
    for reg, reg_args in args.items():
        if reg not in REGULARIZERS:
            raise ConfigError(f"{where}.reg_args.{reg}: not a regularizer with arguments; allowed: "
                             f"{', '.join(REGULARIZERS)}")
        _check_args(REGULARIZERS, reg, reg_args, f"{where}.reg_args.{reg}")


# Penalties computed per sample: a discriminator that normalises over the batch breaks them.
PER_SAMPLE_PENALTIES = ("gp", "wgan-div", "ct", "dragan", "r1")
