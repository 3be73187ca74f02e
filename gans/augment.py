"""Differentiable augmentation for the discriminator: ADA and DiffAugment.

``AugmentPipe`` follows the structure of adaptive discriminator augmentation
(Karras et al. 2020): every op fires independently per image with
probability ``p``; geometric ops are composed into one sampling matrix and
applied with a single ``grid_sample``; colour ops are composed into one 4x4
matrix. ``p`` is a buffer, so it travels with ``state_dict`` and the device,
and the controller updates it without a host sync.

All functions take and return images of shape (N, C, H, W) in [-1, 1] and
let gradients flow to their input.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gans.config import ADAConfig

PIPELINES = {
    "b": ("xflip", "rotate90", "xint"),
    "bg": ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac"),
    "bgc": ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
            "brightness", "contrast", "lumaflip", "hue", "saturation"),
    "c": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
}
GEOMETRIC = {"xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac"}

_LOG2 = math.log(2.0)


def _eye(n: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.eye(size, device=device).expand(n, size, size).clone()


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(sx.shape[0], 3, sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(tx.shape[0], 3, tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(theta.shape[0], 3, theta.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


class AugmentPipe(nn.Module):
    """ADA's augmentation pipeline with a learnable-free probability buffer ``p``."""

    def __init__(self, *, ops: tuple[str, ...], p: float = 0.0, xint_max: float = 0.125,
                 scale_std: float = 0.2, rotate_max: float = 1.0, aniso_std: float = 0.2,
                 xfrac_std: float = 0.125, brightness_std: float = 0.2, contrast_std: float = 0.5,
                 hue_max: float = 1.0, saturation_std: float = 1.0) -> None:
        super().__init__()
        self.ops = tuple(ops)
        self.register_buffer("p", torch.tensor(float(p)))
        self.xint_max, self.scale_std, self.rotate_max = xint_max, scale_std, rotate_max
        self.aniso_std, self.xfrac_std = aniso_std, xfrac_std
        self.brightness_std, self.contrast_std = brightness_std, contrast_std
        self.hue_max, self.saturation_std = hue_max, saturation_std

    def _fires(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.rand(n, device=device) < self.p

    def _geometric(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 3) matrices from output to input normalised coordinates, and which images changed."""
        m = _eye(n, 3, device)
        changed = torch.zeros(n, dtype=torch.bool, device=device)
        ones = torch.ones(n, device=device)
        for op in self.ops:
            if op not in GEOMETRIC:
                continue
            fire = self._fires(n, device)
            if op == "xflip":
                flip = 1 - 2 * (fire & (torch.rand(n, device=device) < 0.5)).float()
                step = _scale2d(flip, ones)
            elif op == "rotate90":
                quarter = torch.randint(0, 4, (n,), device=device) * fire
                step = _rotate2d(quarter * (math.pi / 2))
            elif op == "xint":
                t = (torch.rand(n, 2, device=device) * 2 - 1) * self.xint_max * fire[:, None]
                step = _translate2d(t[:, 0], t[:, 1])  # rounded to whole pixels in _warp
            elif op == "scale":
                s = torch.exp2(torch.randn(n, device=device) * self.scale_std * fire)
                step = _scale2d(s, s)
            elif op == "rotate":
                theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * self.rotate_max * fire
                step = _rotate2d(theta)
            elif op == "aniso":
                s = torch.exp2(torch.randn(n, device=device) * self.aniso_std * fire)
                step = _scale2d(s, 1 / s)
            else:  # xfrac
                t = torch.randn(n, 2, device=device) * self.xfrac_std * fire[:, None]
                step = _translate2d(t[:, 0], t[:, 1])
            m = m @ step
            changed |= fire
        return m, changed

    def _warp(self, images: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        theta = m[:, :2, :].clone()
        theta[:, :, 2] *= 2  # translations are in image units; normalised coordinates span 2
        if "xint" in self.ops and not (GEOMETRIC - {"xflip", "rotate90", "xint"}) & set(self.ops):
            theta[:, 0, 2] = torch.round(theta[:, 0, 2] * w / 2) * 2 / w
            theta[:, 1, 2] = torch.round(theta[:, 1, 2] * h / 2) * 2 / h
        grid = F.affine_grid(theta.to(images.dtype), [n, images.shape[1], h, w], align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _color(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 4, 4) colour matrices acting on homogeneous RGB, and which images changed."""
        c = _eye(n, 4, device)
        changed = torch.zeros(n, dtype=torch.bool, device=device)
        v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)  # luma axis
        vv = torch.outer(v, v)
        for op in self.ops:
            if op in GEOMETRIC:
                continue
            fire = self._fires(n, device)
            step = _eye(n, 4, device)
            if op == "brightness":
                b = torch.randn(n, device=device) * self.brightness_std * fire
                step[:, :3, 3] = b[:, None]
            elif op == "contrast":
                s = torch.exp2(torch.randn(n, device=device) * self.contrast_std * fire)
                step[:, :3, :3] *= s[:, None, None]
            elif op == "lumaflip":
                i = (fire & (torch.rand(n, device=device) < 0.5)).float()
                step = step - 2 * vv[None] * i[:, None, None]
            elif op == "hue":
                theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * self.hue_max * fire
                step = _rotate_about(v[:3], theta, device)
            else:  # saturation
                s = torch.exp2(torch.randn(n, device=device) * self.saturation_std * fire)
                step = vv[None] + (torch.eye(4, device=device) - vv)[None] * s[:, None, None]
                step[:, 3, 3] = 1.0
            c = step @ c
            changed |= fire
        return c, changed

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, C, H, W) in [-1, 1] -> augmented images of the same shape."""
        n, ch = images.shape[:2]
        out = images
        if GEOMETRIC & set(self.ops):
            m, changed = self._geometric(n, images.device)
            out = torch.where(changed[:, None, None, None], self._warp(images, m), images)
        if set(self.ops) - GEOMETRIC:
            c, changed = self._color(n, images.device)
            c = c.to(out.dtype)
            if ch % 3 == 0:  # RGB, or several RGB images stacked on channels (an input/output pair): alike
                rgb = out.reshape(n, ch // 3, 3, *out.shape[2:])
                mixed = (torch.einsum("nij,ngjhw->ngihw", c[:, :3, :3], rgb)
                         + c[:, None, :3, 3, None, None]).reshape(out.shape)
            else:  # grey = equal RGB: the mean of the transformed channels is one scale and offset per image
                scale, offset = c[:, :3, :3].sum(2).mean(1), c[:, :3, 3].mean(1)
                mixed = out * scale[:, None, None, None] + offset[:, None, None, None]
            out = torch.where(changed[:, None, None, None], mixed, out)
        return out


def _rotate_about(axis: torch.Tensor, theta: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, 4, 4) rotations by ``theta`` (N,) about the unit 3-vector ``axis`` (Rodrigues)."""
    n = theta.shape[0]
    k = torch.zeros(3, 3, device=device)
    k[0, 1], k[0, 2], k[1, 0], k[1, 2], k[2, 0], k[2, 1] = -axis[2], axis[1], axis[2], -axis[0], -axis[1], axis[0]
    s, c = torch.sin(theta)[:, None, None], torch.cos(theta)[:, None, None]
    r = torch.eye(3, device=device)[None] + s * k[None] + (1 - c) * (k @ k)[None]
    out = _eye(n, 4, device)
    out[:, :3, :3] = r
    return out


def ada_adjust(p: torch.Tensor, sign_mean: torch.Tensor, *, target: float, batch_images: int,
               speed_kimg: float) -> torch.Tensor:
    """One ADA controller step, on tensors (no host sync).

    ``sign_mean`` is r_t = E[sign(D(real))] over the last interval; p moves by
    sign(r_t - target) * batch_images / (speed_kimg * 1000), clamped to [0, 1).
    ``batch_images`` is the number of real images seen since the last step.
    """
    step = torch.sign(sign_mean - target) * (batch_images / (speed_kimg * 1000.0))
    return (p + step).clamp(0.0, 1.0 - 1e-6)


def build_ada(cfg: ADAConfig) -> AugmentPipe:
    return AugmentPipe(ops=PIPELINES[cfg.pipeline], p=cfg.initial_p)


# --------------------------------------------------------------------------
# DiffAugment (Zhao et al. 2020): the same random op for real and fake batches
# is not required; each call draws fresh parameters per image.


def _diff_color(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def _diff_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    ty = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    iy = (gy[None] + tx + 1).clamp(0, h + 1)
    ix = (gx[None] + ty + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, iy, ix].permute(0, 3, 1, 2)


def _diff_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    inside = ((gy[None] - oy + ch // 2).clamp(0, h) < ch) & ((gy[None] - oy + ch // 2) >= 0)
    inside &= ((gx[None] - ox + cw // 2).clamp(0, w) < cw) & ((gx[None] - ox + cw // 2) >= 0)
    return x * (~inside)[:, None].to(x.dtype)


DIFFAUGMENT_OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": _diff_color,
    "translation": _diff_translation,
    "cutout": _diff_cutout,
}


def diffaugment(x: torch.Tensor, policies: tuple[str, ...]) -> torch.Tensor:
    """Apply the named DiffAugment ops in order: (N, C, H, W) -> same shape."""
    for name in policies:
        x = DIFFAUGMENT_OPS[name](x)
    return x
