"""Adversarial losses, regularizers, and the objective that owns the G and D passes.

A loss maps discriminator logits to scalar losses (relativistic losses see
both real and fake logits in both phases). A regularizer adds a term to the
discriminator loss (gradient penalties, consistency) or acts after the
optimiser step (weight clipping). ``GANObjective`` runs the forward passes of
one phase, including augmentation and auxiliary heads (ACGAN, InfoGAN), and
returns the loss to back-propagate plus detached statistics; the training
loop only schedules phases and optimiser steps.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

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
    eager = torch.compiler.set_stance("force_eager") if _is_compiled(discriminator) else contextlib.nullcontext()
    with torch.autocast(images.device.type, enabled=False), eager:  # the backward's matmuls too
        out = discriminator(images, labels).float()
        (grad,) = torch.autograd.grad(out.sum(), images, create_graph=True)
        return grad.flatten(1).norm(dim=1)


def _is_compiled(module: nn.Module) -> bool:
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

Augment = Callable[[torch.Tensor], torch.Tensor]


def _identity(images: torch.Tensor) -> torch.Tensor:
    return images


# ---------------------------------------------------------------- the objective


@dataclass(frozen=True)
class Extras:
    """Auxiliary objectives: ACGAN's class loss, InfoGAN's mutual information, feature matching."""

    acgan: bool = False
    infogan: bool = False
    info_categories: int = 0
    info_continuous: int = 0
    info_weight: float = 1.0
    info_continuous_weight: float = 0.1
    feature_matching: bool = False


class GANObjective:
    """The forward passes of each training phase for one generator/discriminator pair."""

    def __init__(self, *, generator: nn.Module, discriminator: nn.Module, loss: AdversarialLoss,
                 augment: Augment = _identity, regularizers: tuple[Callable[..., Any], ...] = (),
                 extras: Extras = Extras()) -> None:
        self.G, self.D, self.loss, self.augment = generator, discriminator, loss, augment
        self.regularizers, self.extras = regularizers, extras

    def _info_loss(self, h: torch.Tensor, labels: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        """InfoGAN's lower bound on I(c; G(z, c)): categorical cross-entropy + Gaussian NLL (unit variance)."""
        e = self.extras
        q = self.D.q(h).float()
        loss = e.info_weight * F.cross_entropy(q[:, : e.info_categories], labels)
        if e.info_continuous:
            codes = z[:, -e.info_continuous:].float()
            loss = loss + e.info_continuous_weight * 0.5 * ((q[:, e.info_categories:] - codes) ** 2).sum(1).mean()
        return loss

    def d_phase(self, real: torch.Tensor, real_labels: torch.Tensor | None, z: torch.Tensor,
                fake_labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """real: (N, C, R, R), z: (N, z_dim) -> (D loss, stats). Stats include the mean
        sign of D on augmented reals, which feeds the ADA controller."""
        with torch.no_grad():
            fake = self.G(z, fake_labels)
        real_aug, fake_aug = self.augment(real), self.augment(fake)
        h_real = self.D.features(real_aug, real_labels)
        h_fake = self.D.features(fake_aug, fake_labels)
        real_logits = self.D.logits(h_real, real_labels).float()
        fake_logits = self.D.logits(h_fake, fake_labels).float()
        adv = self.loss.d_loss(real_logits, fake_logits)
        stats = {"loss_d_adv": adv.detach(), "d_real": real_logits.detach().mean(),
                 "d_fake": fake_logits.detach().mean(), "d_real_sign": real_logits.detach().sign().mean()}
        loss = adv
        if self.extras.acgan:
            aux = F.cross_entropy(self.D.aux(h_real).float(), real_labels) + \
                F.cross_entropy(self.D.aux(h_fake).float(), fake_labels)
            loss, stats["aux_d"] = loss + aux, aux.detach()
        if self.extras.infogan:  # Q reads the generator's output as is: augmentation would blur the codes
            h_plain = h_fake if self.augment is _identity else self.D.features(fake, fake_labels)
            info = self._info_loss(h_plain, fake_labels, z)
            loss, stats["info_d"] = loss + info, info.detach()
        ctx = RegContext(self.D, real_aug, fake_aug, real_labels, fake_labels)
        for reg in self.regularizers:
            for name, value in reg(ctx).items():
                if name == "grad_norm":
                    stats["grad_norm"] = value
                else:
                    loss, stats[name] = loss + value, value.detach()
        stats["loss_d"] = loss.detach()
        return loss, stats

    def g_phase(self, z: torch.Tensor, labels: torch.Tensor | None, real: torch.Tensor | None = None,
                real_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """z: (N, z_dim) -> (G loss, stats); ``real`` is needed by relativistic losses and feature matching."""
        fake = self.G(z, labels)
        h_fake = self.D.features(self.augment(fake), labels)
        fake_logits = self.D.logits(h_fake, labels).float()
        real_logits, h_real = None, None
        if self.loss.needs_real_in_g or self.extras.feature_matching:
            assert real is not None
            with torch.no_grad():  # D's view of the reals; G's gradient comes through the fakes
                h_real = self.D.features(self.augment(real), real_labels)
                real_logits = self.D.logits(h_real, real_labels).float()
        if self.extras.feature_matching:
            loss = ((h_real.detach().float().mean(0) - h_fake.float().mean(0)) ** 2).sum()
        else:
            loss = self.loss.g_loss(fake_logits, real_logits)
        stats = {}
        if self.extras.acgan:
            aux = F.cross_entropy(self.D.aux(h_fake).float(), labels)
            loss, stats["aux_g"] = loss + aux, aux.detach()
        if self.extras.infogan:
            h_plain = h_fake if self.augment is _identity else self.D.features(fake, labels)
            info = self._info_loss(h_plain, labels, z)
            loss, stats["info_g"] = loss + info, info.detach()
        stats["loss_g"] = loss.detach()
        return loss, stats

    def after_d_step(self) -> None:
        for reg in self.regularizers:
            hook = getattr(reg, "after_step", None)
            if hook is not None:
                hook(self.D)

