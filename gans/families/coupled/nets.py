"""CoGAN's coupled networks (Liu and Tuzel 2016), DCGAN-shaped and scaled to the data's resolution.

The generator is a chain of blocks from the latent to the image: a projection to a base x base map, doubling
blocks, and an output block. Its first ``shared_g`` blocks are one set of weights for both domains (they
decode the high-level content), the rest are a private copy per domain (they render each domain's look), so
one latent gives a corresponding pair. The discriminator mirrors it: its first blocks are private per domain
(low-level features), its last ``shared_d`` blocks and the logit are shared (high-level judgement). Batch
norm follows every convolution but the first and the last, as in DCGAN; a shared block's batch norm sees each
domain's batch on its own.
``shared_g = 0`` and ``shared_d = 0`` give two independent GANs: the ablation that shows what the sharing does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gans.families.noise.nets import _geometry
from gans.layers import init_normal

DOMAINS = ("a", "b")


@dataclass(frozen=True, kw_only=True)
class CoupledSpec:
    """Everything that rebuilds a coupled generator and discriminator."""

    channels_a: int
    channels_b: int
    resolution: int
    z_dim: int
    width: int
    shared_g: int  # leading generator blocks shared by both domains
    shared_d: int  # trailing discriminator blocks (and the logit) shared by both domains

    def channels(self, domain: str) -> int:
        return self.channels_a if domain == "a" else self.channels_b

    @property
    def blocks(self) -> int:
        """Blocks of each network: 1 + the doublings from the base map (4 or 7 pixels) to the resolution."""
        return _geometry(self.resolution, "cogan")[1] + 1


def _generator_blocks(spec: CoupledSpec, channels: int) -> list[nn.Module]:
    base, n = _geometry(spec.resolution, "cogan")
    ch = spec.width * 2 ** (n - 1)
    blocks: list[nn.Module] = [nn.Sequential(nn.ConvTranspose2d(spec.z_dim, ch, base, 1, 0, bias=False),
                                             nn.BatchNorm2d(ch), nn.ReLU(inplace=True))]
    for _ in range(n - 1):
        blocks.append(nn.Sequential(nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2),
                                    nn.ReLU(inplace=True)))
        ch //= 2
    blocks.append(nn.Sequential(nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()))
    return blocks


def _discriminator_blocks(spec: CoupledSpec, channels: int) -> list[nn.Module]:
    base, n = _geometry(spec.resolution, "cogan")
    ch = spec.width
    blocks: list[nn.Module] = [nn.Sequential(nn.Conv2d(channels, ch, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))]
    for _ in range(n - 1):
        blocks.append(nn.Sequential(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2),
                                    nn.LeakyReLU(0.2, inplace=True)))
        ch *= 2
    blocks.append(nn.Sequential(nn.Conv2d(ch, ch, base, 1, 0), nn.LeakyReLU(0.2, inplace=True), nn.Flatten(),
                                nn.Linear(ch, 1)))
    return blocks


class CoupledGenerator(nn.Module):
    """z (N, z_dim) -> (image_a, image_b), each (N, C_domain, R, R) in [-1, 1]."""

    def __init__(self, spec: CoupledSpec) -> None:
        super().__init__()
        self.spec = spec
        self.shared = nn.Sequential(*_generator_blocks(spec, spec.channels_a)[:spec.shared_g])
        self.private = nn.ModuleDict({d: nn.Sequential(*_generator_blocks(spec, spec.channels(d))[spec.shared_g:])
                                      for d in DOMAINS})
        init_normal(self)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.shared(z[:, :, None, None])
        return self.private["a"](h), self.private["b"](h)


class CoupledDiscriminator(nn.Module):
    """(images of ``domain``, domain) -> (N,) logits."""

    def __init__(self, spec: CoupledSpec) -> None:
        super().__init__()
        cut = spec.blocks - spec.shared_d
        self.private = nn.ModuleDict({d: nn.Sequential(*_discriminator_blocks(spec, spec.channels(d))[:cut])
                                      for d in DOMAINS})
        self.shared = nn.Sequential(*_discriminator_blocks(spec, spec.channels_a)[cut:])
        init_normal(self)

    def forward(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        return self.shared(self.private[domain](x)).flatten()


class OneDomain(nn.Module):
    """The generator seen from one domain: ``(z, labels=None) -> image`` (sampling and portable exports)."""

    def __init__(self, generator: CoupledGenerator, domain: str) -> None:
        super().__init__()
        self.generator, self.index = generator, DOMAINS.index(domain)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z)[self.index]
