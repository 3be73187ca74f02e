"""Deterministic sampling from a generator: one seed, one image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gans.data import to_uint8


LATENT_RECIPE = ("the latent of seed s is torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) "
                 "in float32 on the CPU; a batch stacks one such row per seed")


def latents_for_seeds(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """(len(seeds), z_dim) standard-normal latents; row i depends only on seeds[i]."""
    rows = [torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows) if rows else torch.empty(0, z_dim)


@torch.no_grad()
def generate(generator: nn.Module, seeds: Sequence[int], labels: Sequence[int] | None, *, z_dim: int,
             device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Images for ``seeds`` (and ``labels`` for conditional generators): uint8 (N, C, R, R)."""
    generator.eval()
    out = []
    for start in range(0, len(seeds), batch_size):
        z = latents_for_seeds(seeds[start:start + batch_size], z_dim).to(device)
        y = None
        if labels is not None:
            y = torch.as_tensor(list(labels[start:start + batch_size]), dtype=torch.int64, device=device)
        out.append(to_uint8(generator(z, y)).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)


def grid_seeds_labels(num_classes: int, per_row: int = 8, rows: int = 8) -> tuple[list[int], list[int] | None]:
    """Seeds and labels for a sample grid: one row per class when conditional."""
    if num_classes:
        labels = [c for c in range(num_classes) for _ in range(per_row)]
        return list(range(len(labels))), labels
    return list(range(per_row * rows)), None


def image_grid(images: torch.Tensor, per_row: int = 8) -> torch.Tensor:
    """uint8 (N, C, R, R) -> uint8 (C, H, W) grid with a 2-pixel border."""
    from torchvision.utils import make_grid  # here: importing torchvision takes ~1.7 s (it loads torch._dynamo)

    return make_grid(images, nrow=per_row, padding=2, pad_value=0)


def png_bytes(image: torch.Tensor) -> bytes:
    """uint8 (C, H, W) -> PNG file bytes."""
    from torchvision.io import encode_png

    return encode_png(image.cpu().contiguous()).numpy().tobytes()
