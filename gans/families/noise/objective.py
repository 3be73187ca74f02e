"""The noise-to-image objective: the forward passes of the D and G phases for one generator/discriminator
pair, with augmentation, the auxiliary heads (ACGAN, InfoGAN), feature matching and the regularizers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from gans.losses import AdversarialLoss, RegContext

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
    ortho_weight: float = 0.0


def orthogonal_penalty(module: nn.Module) -> torch.Tensor:
    """BigGAN's orthogonal regularisation: sum over weight matrices W (out, fan_in) of ||W W^T * (1 - I)||_F^2,
    the filters' pairwise cosines pushed to 0 with their norms left free. Spectral norm's raw weights are the
    ones penalised; only convolutions' and linear layers' weights, so not BigGAN's shared embedding."""
    total = None
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            continue
        raw = m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
        w = (raw.transpose(0, 1) if isinstance(m, nn.ConvTranspose2d) else raw).float().flatten(1)
        gram = w @ w.T
        term = (gram - torch.diag_embed(gram.diagonal())).square().sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


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
        if self.extras.ortho_weight:
            ortho = self.extras.ortho_weight * orthogonal_penalty(self.G)
            loss, stats["ortho_g"] = loss + ortho, ortho.detach()
        stats["loss_g"] = loss.detach()
        return loss, stats

    def after_d_step(self) -> None:
        for reg in self.regularizers:
            hook = getattr(reg, "after_step", None)
            if hook is not None:
                hook(self.D)

