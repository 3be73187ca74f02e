"""The Gated PixelCNN (van den Oord et al. 2016, Conditional Image Generation with PixelCNN Decoders).

Two stacks of gated convolutions see only pixels already drawn in raster order: the *vertical* stack the
rows above (every column its kernels reach, wider with each layer), the *horizontal* stack the pixels to the
left in the same row; the vertical stack feeds the horizontal one shifted down a row, so the two together see
every earlier pixel in reach, with no blind spot. The
first layer's horizontal convolution excludes the pixel itself (mask A); later layers include its position
(mask B), which by then holds only information from earlier pixels.

Each pixel's channels are drawn in order (R, then G given R, then B given both) by a small head: channel c's
256 logits come from the stacks' features plus a 1x1 projection of the pixel's channels before c. A
class-conditional model adds a learned per-class bias to every gate (the paper's h -> V^T h term).

Sampling is one network step per pixel. Output row i depends on input rows i - R .. i only (R = layers x
(kernel height - 1) + 1, the vertical receptive field): per row the vertical stack runs once on that band,
per pixel the horizontal stack on the columns that reach it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 256  # a 256-way softmax per channel of each pixel


@dataclass(frozen=True)
class PixelSpec:
    """What rebuilds a PixelCNN: image shape, classes (0: unconditional) and the stacks' size."""

    channels: int
    resolution: int
    width: int  # feature maps of each stack (the gates have 2 x width)
    layers: int
    kernel: int  # odd: the vertical kernel is (kernel // 2 + 1) x kernel, the horizontal 1 x (kernel // 2 + 1)
    num_classes: int = 0

    @property
    def kernel_height(self) -> int:
        return self.kernel // 2 + 1

    @property
    def context_rows(self) -> int:
        """How many rows above a pixel its logits can depend on (the band sampling feeds the network)."""
        return self.layers * (self.kernel_height - 1) + 1


class GatedLayer(nn.Module):
    """One gated layer of both stacks; ``first`` takes the image and masks the pixel itself (mask A)."""

    def __init__(self, in_channels: int, width: int, kernel: int, num_classes: int, *, first: bool) -> None:
        super().__init__()
        self.first, self.kh, self.half = first, kernel // 2 + 1, kernel // 2
        self.v = nn.Conv2d(in_channels, 2 * width, (self.kh, kernel))
        self.h = nn.Conv2d(in_channels, 2 * width, (1, self.half + 1))
        self.link = nn.Conv2d(2 * width, 2 * width, 1)  # vertical -> horizontal
        self.h_out = nn.Conv2d(width, width, 1)
        self.embed = nn.Embedding(num_classes, 4 * width) if num_classes else None

    @staticmethod
    def _gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def vertical(self, v: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The vertical stack: (its output, what it adds to the horizontal gates). Output row i covers input
        rows i - kh + 1 .. i (all columns its kernel reaches); the horizontal stack of row i gets row i - 1
        of it (shifted down one row), so it sees only rows above."""
        v_pre = self.v(F.pad(v, (self.half, self.half, self.kh - 1, 0)))
        to_h = self.link(F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1])
        if self.embed is not None:
            bias_v, bias_h = self.embed(labels)[:, :, None, None].chunk(2, dim=1)
            v_pre, to_h = v_pre + bias_v, to_h + bias_h
        return self._gate(v_pre), to_h

    def horizontal(self, h: torch.Tensor, to_h: torch.Tensor) -> torch.Tensor:
        """The horizontal stack given the vertical stack's contribution ``to_h`` at the same positions."""
        if self.first:  # mask A: columns j - half - 1 .. j - 1
            h_pre = self.h(F.pad(h, (self.half + 1, 0, 0, 0)))[:, :, :, :h.shape[-1]]
        else:  # mask B: columns j - half .. j
            h_pre = self.h(F.pad(h, (self.half, 0, 0, 0)))
        gated = self.h_out(self._gate(h_pre + to_h))
        return gated if self.first else h + gated

    def forward(self, v: torch.Tensor, h: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        v_new, to_h = self.vertical(v, labels)
        return v_new, self.horizontal(h, to_h)


class PixelCNN(nn.Module):
    """images in [-1, 1] (N, C, H, W) [, labels (N,)] -> logits (N, 256, C, H, W) of each channel's value."""

    def __init__(self, spec: PixelSpec) -> None:
        super().__init__()
        self.spec = spec
        w, k = spec.width, spec.kernel
        self.layers = nn.ModuleList(
            [GatedLayer(spec.channels if i == 0 else w, w, k, spec.num_classes, first=i == 0) for i in range(spec.layers)])
        self.hidden = nn.Conv2d(w, w, 1)
        # channel c's head sees the stacks' features and the pixel's channels before c
        self.previous = nn.ModuleList([nn.Conv2d(c, w, 1) for c in range(1, spec.channels)])
        self.out = nn.ModuleList([nn.Conv2d(w, LEVELS, 1) for _ in range(spec.channels)])

    def features(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.spec.num_classes and labels is None:
            raise ValueError("this PixelCNN is class-conditional: labels are required")
        v = h = images
        for layer in self.layers:
            v, h = layer(v, h, labels)
        return self.hidden(F.relu(h))

    def head(self, features: torch.Tensor, images: torch.Tensor, channel: int) -> torch.Tensor:
        """(N, 256, H, W) logits of ``channel`` given the features and the image's earlier channels."""
        x = features
        if channel:
            x = x + self.previous[channel - 1](images[:, :channel])
        return self.out[channel](F.relu(x))

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        f = self.features(images, labels)
        return torch.stack([self.head(f, images, c) for c in range(self.spec.channels)], dim=2)


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (or integer-valued) pixels 0..255 -> the network's input in [-1, 1]."""
    return pixels.float() / 127.5 - 1


def nll_bits(net: PixelCNN, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood of uint8 ``pixels`` (N, C, H, W) in bits per dimension, one value per image."""
    logits = net(to_input(pixels), labels).float()
    nats = F.cross_entropy(logits, pixels.long(), reduction="none")  # (N, C, H, W)
    return nats.flatten(1).mean(1) / torch.log(torch.tensor(2.0))


def uniforms(seeds: Sequence[int], shape: tuple[int, int, int]) -> torch.Tensor:
    """(N, C, H, W) uniforms in [0, 1), one fixed draw per seed: a seed's image never depends on the batch."""
    return torch.stack([torch.rand(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def _row_context(net: PixelCNN, band: torch.Tensor, labels: torch.Tensor | None) -> list[torch.Tensor]:
    """Each layer's vertical contribution to the horizontal gates of the band's last row (N, 2W, 1, R): it
    depends on the rows above only, so it holds for every pixel of that row."""
    v, out = band, []
    for layer in net.layers:
        v, to_h = layer.vertical(v, labels)
        out.append(to_h[:, :, -1:])
    return out


def _pixel_features(net: PixelCNN, row: torch.Tensor, context: list[torch.Tensor], j: int) -> torch.Tensor:
    """(N, width) features of column ``j`` of a row (N, C, 1, R) whose pixels before ``j`` are drawn: the
    horizontal stack on the columns that reach ``j`` (its receptive field: layers x half + 1 to the left)."""
    spec = net.spec
    left = max(0, j - spec.layers * (spec.kernel // 2) - 1)
    h = row[:, :, :, left:j + 1]
    for layer, to_h in zip(net.layers, context):
        h = layer.horizontal(h, to_h[:, :, :, left:j + 1])
    return net.hidden(F.relu(h))[:, :, 0, -1]


@torch.no_grad()
def sample(net: PixelCNN, u: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Draw uint8 images pixel by pixel, channel by channel: each value is the inverse CDF of its softmax at
    the uniform ``u`` (N, C, H, W) gives it (temperature 1). Per row, the vertical stack runs once on the band
    of rows that reach it; per pixel, the horizontal stack on the columns that reach it."""
    spec = net.spec
    n, c, r = u.shape[0], spec.channels, spec.resolution
    device = next(net.parameters()).device
    if spec.num_classes and labels is None:
        raise ValueError("this PixelCNN is class-conditional: labels are required")
    pixels = torch.zeros(n, c, r, r, dtype=torch.uint8, device=device)
    u = u.to(device)
    for i in range(r):
        top = max(0, i - spec.context_rows)  # rows above the band cannot reach row i
        context = _row_context(net, to_input(pixels[:, :, top:i + 1]), labels)
        for j in range(r):
            f = _pixel_features(net, to_input(pixels[:, :, i:i + 1]), context, j)
            for ch in range(c):
                x = f
                if ch:
                    x = x + net.previous[ch - 1](to_input(pixels[:, :ch, i:i + 1, j:j + 1])).flatten(1)
                logits = net.out[ch](F.relu(x)[:, :, None, None]).flatten(1).float()
                cdf = logits.softmax(1).cumsum(1)
                value = torch.searchsorted(cdf, torch.minimum(u[:, ch, i, j, None].float(), cdf[:, -1:] - 1e-6))
                pixels[:, ch, i, j] = value.squeeze(1).clamp(0, LEVELS - 1).to(torch.uint8)
    return pixels


@torch.no_grad()
def stepwise_logits(net: PixelCNN, pixels: torch.Tensor, labels: torch.Tensor | None, i: int, j: int) -> torch.Tensor:
    """The logits (N, 256, C) sampling computes for pixel (i, j) of fully drawn ``pixels``: the same as
    ``net(pixels)[..., i, j]`` when the band and column windows are right (a test checks it)."""
    spec = net.spec
    top = max(0, i - spec.context_rows)
    context = _row_context(net, to_input(pixels[:, :, top:i + 1]), labels)
    f = _pixel_features(net, to_input(pixels[:, :, i:i + 1]), context, j)
    x = to_input(pixels)
    return torch.stack([net.head(f[:, :, None, None], x[:, :, i:i + 1, j:j + 1], ch)[:, :, 0, 0]
                        for ch in range(spec.channels)], dim=2)
