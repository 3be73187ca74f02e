"""ADA's augmentation pipe, its controller and DiffAugment."""

from __future__ import annotations

import pytest
import torch

from gans.augment import PIPELINES, AugmentPipe, ada_adjust, diffaugment


def _images(n: int = 16, c: int = 1) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, c, 16, 16) * 2 - 1


@pytest.mark.parametrize("pipeline", list(PIPELINES))
@pytest.mark.parametrize("channels", [1, 3])
def test_p_zero_is_identity_and_p_one_changes_images(pipeline: str, channels: int) -> None:
    x = _images(c=channels)
    assert torch.equal(AugmentPipe(ops=PIPELINES[pipeline], p=0.0)(x), x)
    y = AugmentPipe(ops=PIPELINES[pipeline], p=1.0)(x)
    assert y.shape == x.shape and not torch.allclose(y, x)


@pytest.mark.parametrize("op", PIPELINES["bgc"])
def test_every_op_passes_gradients(op: str) -> None:
    x = _images(c=3).requires_grad_(True)
    AugmentPipe(ops=(op,), p=1.0)(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_blit_ops_only_move_pixels() -> None:
    x = _images(8)
    y = AugmentPipe(ops=("xflip", "rotate90"), p=1.0)(x)
    for a, b in zip(x, y):
        assert torch.allclose(a.flatten().sort().values, b.flatten().sort().values, atol=1e-5)


def test_controller_follows_the_sign_of_d_on_reals() -> None:
    p = torch.tensor(0.5)
    up = ada_adjust(p, torch.tensor(0.9), target=0.6, batch_images=256, speed_kimg=100)
    down = ada_adjust(p, torch.tensor(0.1), target=0.6, batch_images=256, speed_kimg=100)
    assert up == pytest.approx(0.5 + 256 / 100_000) and down == pytest.approx(0.5 - 256 / 100_000)
    assert ada_adjust(torch.tensor(0.0), torch.tensor(-1.0), target=0.6, batch_images=256, speed_kimg=1) == 0
    assert ada_adjust(torch.tensor(0.99), torch.tensor(1.0), target=0.6, batch_images=10**6, speed_kimg=1) < 1


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diffaugment_changes_images_and_keeps_gradients(policy: str) -> None:
    x = _images(c=3).requires_grad_(True)
    y = diffaugment(x, tuple(policy.split(",")))
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_colour_ops_on_grey_images_match_the_rgb_maths() -> None:
    grey = _images(c=1)
    pipe = AugmentPipe(ops=PIPELINES["bgc"], p=0.7)
    torch.manual_seed(1)
    out_grey = pipe(grey)
    torch.manual_seed(1)
    out_rgb = pipe(grey.expand(-1, 3, -1, -1).contiguous())
    assert torch.allclose(out_grey, out_rgb.mean(dim=1, keepdim=True), atol=1e-5)
