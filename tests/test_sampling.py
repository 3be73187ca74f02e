"""Sampling: one seed, one latent and one image, whatever else is in the batch; grids and PNG bytes."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from gans.sampling import check_truncation, generate, grid_seeds_labels, image_grid, latents_for_seeds, png_bytes


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


def test_truncation_scales_each_latent_towards_the_mean_and_psi_0_draws_one_image() -> None:
    z = latents_for_seeds([3, 7], 5)
    assert torch.equal(latents_for_seeds([3, 7], 5, 1.0), z)
    assert torch.allclose(latents_for_seeds([3, 7], 5, 0.5), 0.5 * z)
    per_row = latents_for_seeds([3, 7], 5, [1.0, 0.25])
    assert torch.equal(per_row[0], z[0]) and torch.allclose(per_row[1], 0.25 * z[1])
    with pytest.raises(ValueError, match="2 truncation values for 3 seeds"):
        latents_for_seeds([1, 2, 3], 5, [1.0, 0.5])

    class Tanh(torch.nn.Module):
        def forward(self, z, labels=None):
            return z[:, :4].tanh().view(-1, 1, 2, 2)

    cpu = torch.device("cpu")
    mean = generate(Tanh(), [0, 1, 2], None, z_dim=4, device=cpu, truncation=0.0)
    assert torch.equal(mean[0], mean[1]) and torch.equal(mean[0], mean[2])
    own = generate(Tanh(), [0, 1, 2], None, z_dim=4, device=cpu)
    assert not torch.equal(own[0], own[1])
    mixed = generate(Tanh(), [0, 1, 2], None, z_dim=4, device=cpu, batch_size=2, truncation=[1.0, 0.0, 0.5])
    assert torch.equal(mixed[0], own[0]) and torch.equal(mixed[1], mean[1])
    assert torch.equal(mixed[2], generate(Tanh(), [2], None, z_dim=4, device=cpu, truncation=0.5)[0])


@pytest.mark.parametrize("psi", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_a_truncation_outside_0_to_1_is_refused_by_name(psi) -> None:
    with pytest.raises(ValueError, match=r"--truncation: got .*; expected a number in 0\.\.1"):
        check_truncation(psi, "--truncation")
    assert check_truncation(0, "x") == 0.0 and check_truncation(1, "x") == 1.0
