"""StarGAN's networks (Choi et al. 2018): one generator G(x, c) over every domain, the target domain vector
tiled over the image as extra input channels, and a discriminator with two heads on a shared trunk: patch
realism logits and domain (attribute) logits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gans.config import ConfigError


@dataclass(frozen=True, kw_only=True)
class MultiDomainSpec:
    """Everything needed to rebuild a multi-domain model's networks."""

    resolution: int
    channels: int
    domains: tuple[str, ...]
    exclusive: bool  # one-of-K domains (softmax head) rather than multi-hot attributes (a sigmoid each)
    width: int  # channels of G's first layer and D's first layer (64 in the paper)
    g_blocks: int = 6

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def d_layers(self) -> int:
        """Strided layers of D: down to 2x2 (the paper's 6 at 128 pixels)."""
        return int(math.log2(self.resolution)) - 1


def check_geometry(spec: MultiDomainSpec) -> None:
    r = spec.resolution
    if r < 16 or r & (r - 1):
        raise ConfigError(f"data.resolution: StarGAN's discriminator halves the image down to 2x2; use a power of two "
                          f">= 16, got {r}")


def _in(ch: int) -> nn.Module:
    return nn.InstanceNorm2d(ch, affine=True)


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1, bias=False), _in(ch), nn.ReLU(inplace=True),
                                  nn.Conv2d(ch, ch, 3, 1, 1, bias=False), _in(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class StarGenerator(nn.Module):
    """7x7 conv, two stride-2 downsamplings, residual blocks, two transposed-conv upsamplings, 7x7 conv and tanh;
    instance norm throughout. ``forward(x, c)``: x (N, C, R, R) in [-1, 1], c (N, K) the target domain vector."""

    def __init__(self, spec: MultiDomainSpec) -> None:
        super().__init__()
        w, k = spec.width, spec.num_domains
        layers: list[nn.Module] = [nn.Conv2d(spec.channels + k, w, 7, 1, 3, bias=False), _in(w), nn.ReLU(inplace=True)]
        ch = w
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), _in(ch * 2), nn.ReLU(inplace=True)]
            ch *= 2
        layers += [_ResBlock(ch) for _ in range(spec.g_blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), _in(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.Conv2d(ch, spec.channels, 7, 1, 3, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        tiled = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.net(torch.cat([x, tiled], dim=1))


class StarDiscriminator(nn.Module):
    """Strided 4x4 convolutions with LeakyReLU 0.01 (widths w, 2w, 4w, ...) down to 2x2, then a 3x3 patch
    realism head and a domain head over the whole map. ``forward(x) -> (src (N, 1, 2, 2), cls (N, K))``."""

    def __init__(self, spec: MultiDomainSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev, ch = spec.channels, spec.width
        for _ in range(spec.d_layers()):
            layers += [nn.Conv2d(prev, ch, 4, 2, 1), nn.LeakyReLU(0.01, inplace=True)]
            prev, ch = ch, ch * 2
        self.trunk = nn.Sequential(*layers)
        side = spec.resolution >> spec.d_layers()
        self.src = nn.Conv2d(prev, 1, 3, 1, 1, bias=False)
        self.cls = nn.Conv2d(prev, spec.num_domains, side, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.src(h), self.cls(h).flatten(1)


class RealismHead(nn.Module):
    """D's realism output alone, for the gradient penalty (``forward(x, labels)`` as the regularizers call it)."""

    def __init__(self, d: StarDiscriminator) -> None:
        super().__init__()
        self.d = d

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.d(x)[0]
