"""Image-to-image networks: the U-Net generator (pix2pix, DualGAN), the ResNet generator (CycleGAN), the
encoder-decoder generator (DiscoGAN), and the PatchGAN discriminator, scaled to the data's resolution.

Generators map (N, C_in, R, R) in [-1, 1] to (N, C_out, R, R) in [-1, 1]. The discriminator maps
(N, C, R, R) to a map of patch logits (N, 1, h, w) (or (N, 1, 1, 1) over the whole image)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gans.config import ConfigError
from gans.layers import init_normal, norm2d

GENERATORS = ("unet", "resnet", "encoder-decoder")
DISCRIMINATORS = ("patch", "image")


@dataclass(frozen=True, kw_only=True)
class TranslationSpec:
    """Everything needed to rebuild a translation model's networks."""

    resolution: int
    channels_a: int
    channels_b: int
    width: int  # channels of the first generator and discriminator layer (pix2pix's ngf and ndf)
    generator: str = "unet"
    g_norm: str = "batch"
    g_blocks: int = 6  # ResNet generator: residual blocks at the bottleneck
    g_dropout: float = 0.5  # U-Net: dropout in the decoder layers next to the bottleneck
    discriminator: str = "patch"
    d_layers: int = 1  # strided layers of the discriminator
    d_norm: str = "batch"
    conditional_d: bool = False  # D sees (input, output) pairs
    two_way: bool = True

    def channels(self, direction: str) -> tuple[int, int]:
        """(input, output) channels of the generator for ``a2b`` or ``b2a``."""
        return (self.channels_a, self.channels_b) if direction == "a2b" else (self.channels_b, self.channels_a)


def patch_layers(resolution: int) -> int:
    """Strided layers of a PatchGAN whose receptive field covers the share of the image side that pix2pix's
    70x70 patch covers of 256 pixels (1 layer: 16 px; 2: 34; 3: 70; 4: 142)."""
    target, best = 70 * resolution / 256, 1
    for n in range(1, 8):
        if abs(receptive_field(n) - target) < abs(receptive_field(best) - target):
            best = n
    return best


def receptive_field(n: int) -> int:
    """Receptive field in pixels of a PatchGAN with ``n`` strided 4x4 layers and two stride-1 4x4 layers."""
    rf = 7
    for _ in range(n):
        rf = (rf - 1) * 2 + 4
    return rf


def check_geometry(spec: TranslationSpec) -> None:
    """Fail early when a network cannot be built for this resolution."""
    r, log2 = spec.resolution, math.log2(spec.resolution)
    if spec.generator in ("unet", "encoder-decoder") or spec.discriminator == "image":
        if log2 != int(log2) or r < 8:
            raise ConfigError(f"data.resolution: the {spec.generator} generator and the image discriminator need a "
                              f"power of two >= 8 (16, 32, 64, 128, 256); got {r}")
    elif r % 4:
        raise ConfigError(f"data.resolution: the resnet generator downsamples twice; use a multiple of 4, got {r}")
    if spec.discriminator == "patch" and r >> spec.d_layers < 4:
        raise ConfigError(f"model.overrides.d_layers: {spec.d_layers} strided layers leave less than 4x4 of a "
                          f"{r}x{r} image; use at most {int(math.log2(r)) - 2}")


# ---------------------------------------------------------------- U-Net (pix2pix, DualGAN)


class UNetGenerator(nn.Module):
    """Encoder of log2(R) strided 4x4 convolutions down to 1x1, decoder of transposed convolutions with skip
    connections to the mirrored encoder layer; channels width, 2w, 4w, 8w, 8w, ...; dropout in the decoder
    layers next to the bottleneck (pix2pix's noise)."""

    def __init__(self, *, cin: int, cout: int, width: int, resolution: int, norm: str, dropout: float) -> None:
        super().__init__()
        n = int(math.log2(resolution))
        chans = [min(width * 2 ** i, width * 8) for i in range(n)]
        self.down = nn.ModuleList()
        for i, ch in enumerate(chans):
            prev = cin if i == 0 else chans[i - 1]
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2, inplace=True)]
            layers.append(nn.Conv2d(prev, ch, 4, 2, 1, bias=norm != "batch" or i in (0, n - 1)))
            if 0 < i < n - 1:
                layers.append(norm2d(norm, ch))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        with_dropout = max(0, min(3, n - 3))
        for j, i in enumerate(reversed(range(n))):  # j = 0 is the innermost
            inner = chans[i] if j == 0 else 2 * chans[i]
            out = cout if i == 0 else chans[i - 1]
            layers = [nn.ReLU(inplace=True), nn.ConvTranspose2d(inner, out, 4, 2, 1, bias=i == 0 or norm != "batch")]
            if i == 0:
                layers.append(nn.Tanh())
            else:
                layers.append(norm2d(norm, out))
                if 1 <= j <= with_dropout and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, R, R) -> (N, C_out, R, R)."""
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        skips.pop()  # the bottleneck feeds the first decoder layer directly
        for layer in self.up:
            x = layer(x)
            if skips:
                x = torch.cat([x, skips.pop()], dim=1)
        return x


# ---------------------------------------------------------------- ResNet (CycleGAN)


class _ResBlock(nn.Module):
    def __init__(self, ch: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=norm != "batch"), norm2d(norm, ch), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=norm != "batch"), norm2d(norm, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetGenerator(nn.Module):
    """CycleGAN's generator: c7s1-w, two stride-2 downsamplings to 4w channels, residual blocks, two
    transposed-convolution upsamplings, c7s1-C_out and tanh."""

    def __init__(self, *, cin: int, cout: int, width: int, blocks: int, norm: str) -> None:
        super().__init__()
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(cin, width, 7, bias=bias), norm2d(norm, width),
                                   nn.ReLU(inplace=True)]
        ch = width
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, 2, 1, bias=bias), norm2d(norm, ch * 2), nn.ReLU(inplace=True)]
            ch *= 2
        layers += [_ResBlock(ch, norm) for _ in range(blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1, bias=bias), norm2d(norm, ch // 2),
                       nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, cout, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---------------------------------------------------------------- encoder-decoder (DiscoGAN)


class EncoderDecoderGenerator(nn.Module):
    """DiscoGAN's generator: strided 4x4 convolutions (LeakyReLU) down to 4x4, then transposed convolutions
    (ReLU) back up; no skip connections, so every translation passes through the bottleneck."""

    def __init__(self, *, cin: int, cout: int, width: int, resolution: int, norm: str) -> None:
        super().__init__()
        n = int(math.log2(resolution)) - 2
        chans = [min(width * 2 ** i, width * 8) for i in range(n)]
        layers: list[nn.Module] = []
        prev = cin
        for i, ch in enumerate(chans):
            layers += [nn.Conv2d(prev, ch, 4, 2, 1, bias=i == 0 or norm != "batch")]
            layers += ([] if i == 0 else [norm2d(norm, ch)]) + [nn.LeakyReLU(0.2, inplace=True)]
            prev = ch
        for i in reversed(range(n)):
            out = cout if i == 0 else chans[i - 1]
            layers += [nn.ConvTranspose2d(prev, out, 4, 2, 1, bias=i == 0 or norm != "batch")]
            layers += [nn.Tanh()] if i == 0 else [norm2d(norm, out), nn.ReLU(inplace=True)]
            prev = out
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---------------------------------------------------------------- PatchGAN


class PatchDiscriminator(nn.Module):
    """pix2pix's PatchGAN: strided 4x4 convolutions (widths w, 2w, 4w, 8w max), then two stride-1 4x4
    convolutions to one logit per patch. ``whole_image`` stops at 4x4 and ends with one 4x4 convolution
    over it: one logit per image (DiscoGAN)."""

    def __init__(self, *, cin: int, width: int, layers: int, norm: str, whole_image: bool = False,
                 resolution: int = 0) -> None:
        super().__init__()
        n = int(math.log2(resolution)) - 2 if whole_image else layers
        body: list[nn.Module] = [nn.Conv2d(cin, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        ch = width
        for i in range(1, n):
            nxt = min(width * 2 ** i, width * 8)
            body += [nn.Conv2d(ch, nxt, 4, 2, 1, bias=norm != "batch"), norm2d(norm, nxt), nn.LeakyReLU(0.2, inplace=True)]
            ch = nxt
        if whole_image:
            body.append(nn.Conv2d(ch, 1, 4, 1, 0))
        else:
            nxt = min(width * 2 ** n, width * 8)
            body += [nn.Conv2d(ch, nxt, 4, 1, 1, bias=norm != "batch"), norm2d(norm, nxt), nn.LeakyReLU(0.2, inplace=True),
                     nn.Conv2d(nxt, 1, 4, 1, 1)]
        self.net = nn.Sequential(*body)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, R, R) -> (N, 1, h, w) logits (``labels`` is accepted for the shared regularizers and unused)."""
        return self.net(x)


def build_generator(spec: TranslationSpec, direction: str) -> nn.Module:
    cin, cout = spec.channels(direction)
    if spec.generator == "unet":
        g: nn.Module = UNetGenerator(cin=cin, cout=cout, width=spec.width, resolution=spec.resolution,
                                     norm=spec.g_norm, dropout=spec.g_dropout)
    elif spec.generator == "resnet":
        g = ResNetGenerator(cin=cin, cout=cout, width=spec.width, blocks=spec.g_blocks, norm=spec.g_norm)
    else:
        g = EncoderDecoderGenerator(cin=cin, cout=cout, width=spec.width, resolution=spec.resolution, norm=spec.g_norm)
    init_normal(g)
    return g


def build_discriminator(spec: TranslationSpec, direction: str) -> nn.Module:
    """The discriminator of ``direction``'s output domain (on the (input, output) pair when conditional)."""
    cin, cout = spec.channels(direction)
    d = PatchDiscriminator(cin=cout + (cin if spec.conditional_d else 0), width=spec.width, layers=spec.d_layers,
                           norm=spec.d_norm, whole_image=spec.discriminator == "image", resolution=spec.resolution)
    init_normal(d)
    return d
