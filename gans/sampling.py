"""Deterministic sampling from a generator: one seed, one image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gans.data import to_uint8


LATENT_RECIPE = ("the latent of seed s is torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) "
                 "in float32 on the CPU; a batch stacks one such row per seed")
TRUNCATION_RECIPE = ("optional 'truncation' psi in 0..1 (default 1): the latent is scaled by psi, towards the "
                     "mean latent 0 (the truncation trick: psi 1 is the seed's own latent, lower values trade "
                     "diversity for typical, cleaner images, psi 0 draws the same mean image for every seed)")

Truncation = float | Sequence[float]


def check_truncation(psi: float, where: str) -> float:
    """``psi`` as a float, or ValueError naming ``where`` when it is not a finite number in 0..1."""
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not 0 <= psi <= 1:
        raise ValueError(f"{where}: got {psi!r}; expected a number in 0..1 (1: no truncation, 0: the mean latent)")
    return float(psi)


def latents_for_seeds(seeds: Sequence[int], z_dim: int, truncation: Truncation = 1.0) -> torch.Tensor:
    """(len(seeds), z_dim) standard-normal latents; row i depends only on seeds[i] (and its truncation psi:
    one for every row, or one per row), scaled by psi towards the mean latent 0."""
    rows = [torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    z = torch.stack(rows) if rows else torch.empty(0, z_dim)
    if isinstance(truncation, (int, float)):
        return z if truncation == 1 else z * float(truncation)
    psi = torch.tensor([float(p) for p in truncation], dtype=torch.float32)
    if len(psi) != len(z):
        raise ValueError(f"{len(psi)} truncation values for {len(z)} seeds")
    return z * psi[:, None]


def _rows(truncation: Truncation, start: int, stop: int) -> Truncation:
    return truncation if isinstance(truncation, (int, float)) else truncation[start:stop]


@torch.no_grad()
def generate(generator: nn.Module, seeds: Sequence[int], labels: Sequence[int] | None, *, z_dim: int,
             device: torch.device, batch_size: int = 256, truncation: Truncation = 1.0) -> torch.Tensor:
    """Images for ``seeds`` (and ``labels`` for conditional generators): uint8 (N, C, R, R); ``truncation``:
    psi for every seed or one per seed (see :func:`latents_for_seeds`)."""
    generator.eval()
    out = []
    for start in range(0, len(seeds), batch_size):
        stop = start + batch_size
        z = latents_for_seeds(seeds[start:stop], z_dim, _rows(truncation, start, stop)).to(device)
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
