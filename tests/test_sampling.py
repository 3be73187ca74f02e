"""Sampling: one seed, one latent and one image, whatever else is in the batch; grids and PNG bytes."""

from __future__ import annotations

import io

import torch
from PIL import Image

from gans.sampling import generate, grid_seeds_labels, image_grid, latents_for_seeds, png_bytes


def test_a_latent_depends_only_on_its_seed() -> None:
    a = latents_for_seeds([3, 7, 3], 5)
    assert a.shape == (3, 5) and torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])
    assert torch.equal(latents_for_seeds([7], 5)[0], a[1])
    assert latents_for_seeds([], 5).shape == (0, 5)


def test_generate_is_batch_independent_and_labels_reach_the_generator() -> None:
    class Echo(torch.nn.Module):
        def forward(self, z, labels=None):
            y = z[:, :4].tanh() + (0 if labels is None else labels[:, None].float() / 10)
            return y.view(-1, 1, 2, 2)

    one_batch = generate(Echo(), [0, 1, 2, 3], [0, 1, 2, 3], z_dim=4, device=torch.device("cpu"))
    small_batches = generate(Echo(), [0, 1, 2, 3], [0, 1, 2, 3], z_dim=4, device=torch.device("cpu"), batch_size=3)
    assert one_batch.dtype == torch.uint8 and torch.equal(one_batch, small_batches)
    assert not torch.equal(generate(Echo(), [0], [5], z_dim=4, device=torch.device("cpu")), one_batch[:1])


def test_grid_rows_per_class_and_png_bytes_decode() -> None:
    seeds, labels = grid_seeds_labels(10)
    assert len(seeds) == 80 and labels[:8] == [0] * 8 and labels[-1] == 9
    assert grid_seeds_labels(0) == (list(range(64)), None)
    grid = image_grid(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), per_row=5)
    assert grid.shape == (3, 2 * 6 + 2, 5 * 6 + 2)
    assert Image.open(io.BytesIO(png_bytes(grid))).size == (32, 14)
