"""Adversarial losses and the objective that owns the G and D passes.

A loss maps discriminator logits to scalar losses. ``GANObjective`` runs the
forward passes of one phase (D or G), including augmentation, and returns
the loss to back-propagate plus detached statistics; the training loop only
schedules phases and optimiser steps.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn


class AdversarialLoss(Protocol):
    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor: ...

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor: ...


class NonSaturatingLoss:
    """Goodfellow et al. 2014, with the generator maximising log D(G(z))."""

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """(N,), (N,) logits -> scalar: -log sigmoid(real) - log(1 - sigmoid(fake))."""
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """(N,) logits -> scalar: -log sigmoid(fake)."""
        return F.softplus(-fake_logits).mean()


LOSSES: dict[str, Callable[[], AdversarialLoss]] = {
    "non-saturating": NonSaturatingLoss,
}

Augment = Callable[[torch.Tensor], torch.Tensor]


class GANObjective:
    """The forward passes of each training phase for one generator/discriminator pair."""

    def __init__(self, *, generator: nn.Module, discriminator: nn.Module, loss: AdversarialLoss,
                 augment: Augment) -> None:
        self.G, self.D, self.loss, self.augment = generator, discriminator, loss, augment

    def d_phase(self, real: torch.Tensor, real_labels: torch.Tensor | None, z: torch.Tensor,
                fake_labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """real: (N, C, R, R), z: (N, z_dim) -> (D loss, stats). Stats include the mean
        sign of D on augmented reals, which feeds the ADA controller."""
        with torch.no_grad():
            fake = self.G(z, fake_labels)
        real_logits = self.D(self.augment(real), real_labels)
        fake_logits = self.D(self.augment(fake), fake_labels)
        loss = self.loss.d_loss(real_logits.float(), fake_logits.float())
        stats = {
            "loss_d": loss.detach(),
            "d_real": real_logits.detach().float().mean(),
            "d_fake": fake_logits.detach().float().mean(),
            "d_real_sign": real_logits.detach().sign().float().mean(),
        }
        return loss, stats

    def g_phase(self, z: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """z: (N, z_dim) -> (G loss, stats)."""
        fake_logits = self.D(self.augment(self.G(z, labels)), labels)
        loss = self.loss.g_loss(fake_logits.float())
        return loss, {"loss_g": loss.detach()}
