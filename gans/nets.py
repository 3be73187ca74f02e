"""Generator and discriminator architectures, registered by name.

Generators map ``z`` (N, z_dim) and optional ``labels`` (N,) int64 to images
(N, C, R, R) in [-1, 1]. Discriminators map images (N, C, R, R) and optional
labels to logits (N,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from gans.config import ConfigError


@dataclass(frozen=True, kw_only=True)
class NetSpec:
    """What every architecture needs to know to build itself."""

    channels: int
    resolution: int
    z_dim: int
    width: int
    num_classes: int = 0  # 0: unconditional


def _num_upsamplings(spec: NetSpec, arch: str) -> int:
    n = math.log2(spec.resolution / 4)
    if spec.resolution < 8 or n != int(n):
        raise ConfigError(
            f"data.resolution: {arch} builds square images whose side is a power of two >= 8 "
            f"(8, 16, 32, 64, 128, 256); got {spec.resolution}"
        )
    return int(n)


class DCGANGenerator(nn.Module):
    """Radford et al. 2015: transposed convolutions, batch norm, ReLU, tanh output.

    Class-conditional when ``num_classes > 0``: a learned label embedding is
    concatenated to ``z`` (as in CGAN).
    """

    def __init__(self, *, spec: NetSpec) -> None:
        super().__init__()
        n = _num_upsamplings(spec, "dcgan")
        self.z_dim = spec.z_dim
        self.num_classes = spec.num_classes
        in_dim = spec.z_dim
        if spec.num_classes:
            self.embed = nn.Embedding(spec.num_classes, spec.z_dim)
            in_dim += spec.z_dim
        ch = spec.width * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, ch, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(inplace=True),
        ]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, spec.channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        _init_dcgan(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z: (N, z_dim), labels: (N,) -> images (N, C, R, R) in [-1, 1]."""
        if self.num_classes:
            if labels is None:
                raise ValueError("this generator is class-conditional: labels are required")
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """Strided convolutions with LeakyReLU(0.2) and batch norm (none on the first layer).

    Class-conditional when ``num_classes > 0`` through a projection term
    (Miyato and Koyama 2018): logit += <embed(y), pooled features>.
    """

    def __init__(self, *, spec: NetSpec) -> None:
        super().__init__()
        n = _num_upsamplings(spec, "dcgan")
        ch = spec.width
        layers: list[nn.Module] = [nn.Conv2d(spec.channels, ch, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(n - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(ch, 1, 4, 1, 0)
        self.num_classes = spec.num_classes
        if spec.num_classes:
            self.embed = nn.Embedding(spec.num_classes, ch)
        _init_dcgan(self)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """images: (N, C, R, R) -> logits (N,)."""
        h = self.features(images)
        out = self.head(h).flatten(1).sum(1)
        if self.num_classes:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: labels are required")
            out = out + (self.embed(labels) * h.sum(dim=(2, 3))).sum(1)
        return out


def _init_dcgan(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


Builder = Callable[..., nn.Module]

ARCHITECTURES: dict[str, tuple[Builder, Builder]] = {
    "dcgan": (DCGANGenerator, DCGANDiscriminator),
}


def build_networks(architecture: str, spec: NetSpec) -> tuple[nn.Module, nn.Module]:
    """Build (generator, discriminator) of a registered architecture."""
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"model.overrides.architecture: unknown {architecture!r}; allowed: {', '.join(ARCHITECTURES)}")
    make_g, make_d = ARCHITECTURES[architecture]
    return make_g(spec=spec), make_d(spec=spec)
