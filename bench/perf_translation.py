"""Translation throughput: Pix2Pix and CycleGAN through the trainer against bare PyTorch loops of the same
networks (``python bench/perf.py --parts translation``).

The bare loops are the reference projects' steps written plainly: Pix2Pix translates the batch once, updates
D on (input, output) pairs, then G on the same translations (cGAN + 100 L1); CycleGAN translates both ways,
updates both discriminators on the translations through a history pool of 50, then both generators
(least squares, cycle 10, identity 5). Same networks (built from the trainer's spec, same init seed), Adam
with the presets' settings, data already float tensors in memory; no EMA, ADA, LR schedule, statistics
or checkpoints. "Ours" is the real Trainer's loop body (train_step, then _after_step: logging, and a
checkpoint and sample grid every 250 steps), ADA off.
"""

from __future__ import annotations

import random
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gans.families.translation.nets import build_discriminator, build_generator

PRESETS = {"pix2pix": "mnist5k-edges", "cyclegan": "digits-mnist5k"}


def _float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images.to(device).float().div(127.5).sub(1.0)


class BarePix2Pix:
    def __init__(self, spec, a: torch.Tensor, b: torch.Tensor, *, batch: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        torch.manual_seed(0)
        self.G, self.D = build_generator(spec, "a2b").to(device).train(), build_discriminator(spec, "a2b").to(device).train()
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.a, self.b, self.batch, self.device = _float(a, device), _float(b, device), batch, device
        self.autocast = nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)

    def step(self) -> None:
        idx = torch.randint(0, len(self.a), (self.batch,), device=self.device)
        a, b = self.a[idx], self.b[idx]
        with self.autocast:
            fake = self.G(a)
            real_logits = self.D(torch.cat([a, b], 1)).float()
            fake_logits = self.D(torch.cat([a, fake.detach()], 1)).float()
            loss_d = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.D.requires_grad_(False)
        with self.autocast:
            loss_g = F.softplus(-self.D(torch.cat([a, fake], 1)).float()).mean() + 100 * (fake - b).abs().mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.D.requires_grad_(True)
        self.opt_g.step()


class _Pool:
    """CycleGAN's history of 50 generated images, as its reference code keeps it (a Python list)."""

    def __init__(self, size: int = 50) -> None:
        self.size, self.images = size, []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for img in images:
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif random.random() < 0.5:
                i = random.randrange(self.size)
                out.append(self.images[i].clone())
                self.images[i] = img
            else:
                out.append(img)
        return torch.cat(out)


class BareCycleGAN:
    def __init__(self, spec, a: torch.Tensor, b: torch.Tensor, *, batch: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        torch.manual_seed(0)
        self.G_ab, self.G_ba = (build_generator(spec, d).to(device).train() for d in ("a2b", "b2a"))
        self.D_b, self.D_a = (build_discriminator(spec, d).to(device).train() for d in ("a2b", "b2a"))
        self.opt_g = torch.optim.Adam([*self.G_ab.parameters(), *self.G_ba.parameters()], lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam([*self.D_a.parameters(), *self.D_b.parameters()], lr=2e-4, betas=(0.5, 0.999))
        self.pool_a, self.pool_b = _Pool(), _Pool()
        self.a, self.b, self.batch, self.device = _float(a, device), _float(b, device), batch, device
        self.autocast = nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)

    def step(self) -> None:
        a = self.a[torch.randint(0, len(self.a), (self.batch,), device=self.device)]
        b = self.b[torch.randint(0, len(self.b), (self.batch,), device=self.device)]
        with self.autocast:
            fake_b, fake_a = self.G_ab(a), self.G_ba(b)
            loss_d = 0.0
            for D, real, fake, pool in ((self.D_b, b, fake_b, self.pool_b), (self.D_a, a, fake_a, self.pool_a)):
                loss_d = loss_d + 0.5 * ((D(real).float() - 1) ** 2).mean() + \
                    0.5 * (D(pool.query(fake.detach())).float() ** 2).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.D_a.requires_grad_(False)
        self.D_b.requires_grad_(False)
        with self.autocast:
            adv = ((self.D_b(fake_b).float() - 1) ** 2).mean() + ((self.D_a(fake_a).float() - 1) ** 2).mean()
            cycle = (self.G_ba(fake_b) - a).abs().mean() + (self.G_ab(fake_a) - b).abs().mean()
            identity = (self.G_ab(b) - b).abs().mean() + (self.G_ba(a) - a).abs().mean()
            loss_g = adv + 10 * cycle + 5 * identity
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.D_a.requires_grad_(True)
        self.D_b.requires_grad_(True)
        self.opt_g.step()


def make_pair(preset: str, *, batch: int, width: int, device: torch.device, precision: str, workdir: Path,
              reporter: Any) -> tuple[Any, Any]:
    """(a set-up Trainer with ADA off, the bare loop) of ``preset`` on its bundled data at 32x32."""
    from gans.config import ADAConfig, AugmentConfig, DataConfig, ModelConfig, TrainConfig
    from gans.data import load_dataset, split_dataset
    from gans.families import build_trainer
    from gans.trainer import resolve_precision

    data, _ = load_dataset(DataConfig(source=PRESETS[preset], resolution=32))
    train, holdout = split_dataset(data, 0.1, 0)
    trainer = build_trainer(model=ModelConfig(variant=preset, width=width),
                            train=TrainConfig(device=str(device), batch_size=batch, precision=precision, steps=10 ** 9,
                                              eval_every=0),
                            augment=AugmentConfig(ada=ADAConfig(enabled=False)), data=train, preview=holdout,
                            checkpoint_dir=workdir / preset, reporter=reporter)
    trainer.setup()
    bare_cls = BarePix2Pix if preset == "pix2pix" else BareCycleGAN
    bare = bare_cls(trainer.recipe.spec, train.parts["a"].images, train.parts["b"].images, batch=batch, device=device,
                    dtype=resolve_precision(precision, device))
    return trainer, bare
