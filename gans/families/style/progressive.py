"""ProGAN (Karras et al. 2018): progressive growing of a generator and a discriminator from 4x4 to the data's
resolution, each new resolution faded in and then stabilised.

The networks hold every resolution from the start; ``set_stage(stage, alpha)`` (buffers, so the EMA copy and
the exported generator carry them) picks how far they reach. Stage 0 is 4x4; stage k draws at 4 * 2^k, and
while ``alpha`` < 1 it blends the new block's output with the upsampled output of the stage below (the
discriminator, symmetrically, its new block with the downscaled input of the one below). The generator's
``forward`` always returns images at the data's resolution (the stage's image upsampled, nearest): what the
sample grid, the evaluation and the artifact see. Pixel-wise feature normalisation in the generator, the
minibatch standard deviation in the discriminator, equalised learning rate everywhere (the style family's
layers).

The schedule is a function of the step: ``stable_steps`` at 4x4, then for each resolution ``fade_steps`` of
fade-in (alpha from 0 to 1) and ``stable_steps`` at alpha 1; the last resolution stays to the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gans.families.style.nets import EqualConv2d, EqualLinear, MinibatchStd


@dataclass(frozen=True, kw_only=True)
class ProgressiveSpec:
    channels: int
    resolution: int
    z_dim: int
    channel_base: int = 2048
    channel_max: int = 256
    mbstd_group: int = 4

    def width(self, res: int) -> int:
        return max(1, min(self.channel_max, self.channel_base // res))

    @property
    def stages(self) -> int:
        """Resolutions from 4x4 to the data's: 4 at 32x32."""
        return int(math.log2(self.resolution)) - 1


@dataclass(frozen=True)
class Schedule:
    """Where a step falls: stage 0 (4x4) stable for ``stable`` steps, then per stage ``fade`` then ``stable``."""

    stages: int
    fade: int
    stable: int

    def at(self, step: int) -> tuple[int, float]:
        """(stage, alpha) at ``step`` (counted from 0)."""
        if step < self.stable or self.stages == 1:
            return 0, 1.0
        rest = step - self.stable
        period = self.fade + self.stable
        stage = 1 + rest // period
        if stage >= self.stages:
            return self.stages - 1, 1.0
        into = rest % period
        return stage, (min(1.0, (into + 1) / self.fade) if self.fade else 1.0)

    def changes(self) -> list[int]:
        """The steps at which a new stage starts fading in."""
        return [self.stable + (k - 1) * (self.fade + self.stable) for k in range(1, self.stages)]


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (x.float().square().mean(dim=1, keepdim=True) + 1e-8).rsqrt().to(x.dtype)


class _Staged(nn.Module):
    """Holds the current stage and fade-in alpha as buffers (checkpoints, the EMA copy and the artifact carry
    them). :meth:`freeze` reads them once into plain numbers, for a loaded artifact: its forward then has no
    data-dependent branch (exportable)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("stage", torch.zeros((), dtype=torch.int64))
        self.register_buffer("alpha", torch.ones(()))
        self.frozen: tuple[int, float] | None = None

    def set_stage(self, stage: int, alpha: float) -> None:
        self.stage.fill_(stage)
        self.alpha.fill_(alpha)

    def freeze(self) -> None:
        self.frozen = (int(self.stage), float(self.alpha))

    def current(self) -> tuple[int, float]:
        return self.frozen if self.frozen is not None else (int(self.stage), float(self.alpha))


class ProgressiveGenerator(_Staged):
    def __init__(self, spec: ProgressiveSpec) -> None:
        super().__init__()
        self.spec = spec
        c4 = spec.width(4)
        self.norm = PixelNorm()
        self.dense = EqualLinear(spec.z_dim, c4 * 16, act=True)
        self.blocks = nn.ModuleList([nn.Sequential(EqualConv2d(c4, c4, 3), PixelNorm())])
        self.to_rgbs = nn.ModuleList([EqualConv2d(c4, spec.channels, 1, act=False)])
        for k in range(1, spec.stages):
            cin, cout = spec.width(2 ** (k + 1)), spec.width(2 ** (k + 2))
            self.blocks.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             EqualConv2d(cin, cout, 3), PixelNorm(), EqualConv2d(cout, cout, 3), PixelNorm()))
            self.to_rgbs.append(EqualConv2d(cout, spec.channels, 1, act=False))

    def stage_images(self, z: torch.Tensor, psi: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Images at the current stage's resolution, the new block faded in by alpha. ``psi`` (one, or one per
        row) truncates: it scales the normalised latent towards 0 (scaling z itself would do nothing, since the
        first pixel norm undoes it)."""
        stage, alpha = self.current()
        x = self.norm(z.float())
        if isinstance(psi, torch.Tensor):
            x = x * psi.to(x.device, x.dtype)[:, None]
        elif psi != 1:
            x = x * psi
        x = self.norm(self.dense(x).unflatten(1, (-1, 4, 4)))
        previous = None
        for k in range(stage + 1):
            if k == stage:
                previous = x
            x = self.blocks[k](x)
        img = self.to_rgbs[stage](x)
        if stage > 0 and alpha < 1:
            low = F.interpolate(self.to_rgbs[stage - 1](previous), scale_factor=2, mode="nearest")
            img = torch.lerp(low, img, alpha)
        return img

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, psi: torch.Tensor | float = 1.0) -> torch.Tensor:
        img = self.stage_images(z, psi)
        factor = self.spec.resolution // img.shape[-1]
        return F.interpolate(img, scale_factor=factor, mode="nearest") if factor > 1 else img


class ProgressiveDiscriminator(_Staged):
    def __init__(self, spec: ProgressiveSpec) -> None:
        super().__init__()
        c4 = spec.width(4)
        self.from_rgbs = nn.ModuleList([EqualConv2d(spec.channels, c4, 1)])
        self.blocks = nn.ModuleList([nn.Identity()])  # 4x4 has the epilogue below
        for k in range(1, spec.stages):
            cin, cout = spec.width(2 ** (k + 2)), spec.width(2 ** (k + 1))
            self.from_rgbs.append(EqualConv2d(spec.channels, cin, 1))
            self.blocks.append(nn.Sequential(EqualConv2d(cin, cin, 3), EqualConv2d(cin, cout, 3, down=True)))
        self.mbstd = MinibatchStd(spec.mbstd_group)
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4, act=True)
        self.out = EqualLinear(c4, 1)

    def forward(self, img: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of images at the current stage's resolution."""
        stage, alpha = self.current()
        x = self.blocks[stage](self.from_rgbs[stage](img))
        if stage > 0 and alpha < 1:
            x = torch.lerp(self.from_rgbs[stage - 1](F.avg_pool2d(img, 2)), x, alpha)
        for k in range(stage - 1, 0, -1):
            x = self.blocks[k](x)
        return self.out(self.fc(self.conv(self.mbstd(x)).flatten(1)))


def real_at_stage(images: torch.Tensor, resolution: int, stage: int, alpha: float) -> torch.Tensor:
    """Real images downscaled (2x2 averages) to the stage's resolution and, during a fade-in, blended with
    their version at the stage below (downscaled once more, then upsampled), as the generator's output is."""
    side = 4 * 2 ** stage
    x = F.avg_pool2d(images, resolution // side) if side < resolution else images
    if stage > 0 and alpha < 1:
        x = torch.lerp(F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest"), x, alpha)
    return x
