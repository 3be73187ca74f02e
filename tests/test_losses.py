"""Losses and penalties against values worked out by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gans.losses import (F_CONJUGATE_OF_ACTIVATION, F_DIVERGENCES, LOSSES, ConsistencyTerm, Dragan, FDivergence, GradientPenalty, Hinge,
                         LeastSquares, Minimax, NonSaturating, R1, RegContext, RelativisticAverage,
                         RelativisticAverageLS, RelativisticStandard, Wasserstein, WassersteinDivergence, WeightClip)

ZERO = torch.zeros(4)


def test_at_the_optimum_the_discriminator_is_a_coin() -> None:
    # p_g = p_data makes D* = 1/2 (logit 0): the minimax value is -log 4, so D's loss is log 4.
    assert NonSaturating().d_loss(ZERO, ZERO).item() == pytest.approx(math.log(4))
    assert Minimax().g_loss(ZERO, None).item() == pytest.approx(-math.log(2))
    assert NonSaturating().g_loss(ZERO, None).item() == pytest.approx(math.log(2))


def test_one_sided_label_smoothing_targets_point_nine() -> None:
    r = torch.tensor([2.0])
    expected = -(0.9 * math.log(torch.sigmoid(r).item()) + 0.1 * math.log(1 - torch.sigmoid(r).item()))
    got = NonSaturating(smoothing=0.1).d_loss(r, torch.tensor([-50.0])).item()
    assert got == pytest.approx(expected, abs=1e-6)


def test_least_squares_wasserstein_hinge_by_hand() -> None:
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -2.0])
    assert LeastSquares().d_loss(real, fake).item() == pytest.approx(0.5 * (0 + 4) / 2 + 0.5 * (0 + 4) / 2)
    assert LeastSquares(a=-1, b=1, c=0).g_loss(fake, None).item() == pytest.approx(0.5 * (0 + 4) / 2)
    assert Wasserstein().d_loss(real, fake).item() == pytest.approx(-1.0 - 2.0)
    assert Hinge().d_loss(real, fake).item() == pytest.approx((0 + 0) / 2 + (1 + 0) / 2)
    assert Hinge().g_loss(fake, None).item() == pytest.approx(1.0)


def test_relativistic_losses_by_hand() -> None:
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731  softplus
    assert RelativisticStandard().d_loss(real, fake).item() == pytest.approx((sp(-1) + sp(1)) / 2)
    assert RelativisticStandard().g_loss(fake, real).item() == pytest.approx((sp(1) + sp(-1)) / 2)
    # RaGAN: real mean 1, fake mean 1.
    assert RelativisticAverage().d_loss(real, fake).item() == pytest.approx((sp(-1) + sp(1)) / 2 + sp(0))
    assert RelativisticAverageLS().d_loss(real, fake).item() == pytest.approx((0 + 4) / 2 + 1)


@pytest.mark.parametrize("name, f, domain", [
    ("kl", lambda u: u * math.log(u), (-2.0, 2.0)),
    ("reverse-kl", lambda u: -math.log(u), (-3.0, -0.2)),
    ("pearson", lambda u: (u - 1) ** 2, (-1.5, 3.0)),
    ("hellinger", lambda u: (math.sqrt(u) - 1) ** 2, (-2.0, 0.8)),
    ("js", lambda u: -(u + 1) * math.log((1 + u) / 2) + u * math.log(u), (-2.0, 0.6)),
])
def test_f_gan_conjugates_are_the_fenchel_conjugates(name: str, f, domain) -> None:
    """f*(t) = sup_u (u t - f(u)), checked on a fine grid of u for t in the conjugate's domain."""
    _, conj = F_DIVERGENCES[name]
    us = torch.logspace(-6, 3, 200_001, dtype=torch.float64)
    fu = torch.tensor([f(u) for u in us[::100].tolist()], dtype=torch.float64)
    us = us[::100]
    for t in torch.linspace(*domain, 7, dtype=torch.float64):
        sup = (us * t - fu).max().item()
        assert conj(t).item() == pytest.approx(sup, rel=1e-3, abs=1e-3), (name, float(t))


@pytest.mark.parametrize("name", list(F_DIVERGENCES))
def test_f_gan_stable_form_equals_the_composition_and_stays_finite(name: str) -> None:
    act, conj = F_DIVERGENCES[name]
    v = torch.linspace(-3, 3, 61, dtype=torch.float64)
    assert torch.allclose(F_CONJUGATE_OF_ACTIVATION[name](v), conj(act(v)), rtol=1e-9, atol=1e-9)
    wide = torch.linspace(-20, 20, 101)
    assert torch.isfinite(FDivergence(divergence=name).d_loss(wide, wide))


class LinearCritic(nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, so ||grad|| = ||w||."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def features(self, x, labels=None):
        return x.flatten(1)

    def logits(self, h, labels=None):
        return h @ self.w

    def forward(self, x, labels=None):
        return self.logits(self.features(x))


def _ctx(w: torch.Tensor) -> RegContext:
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    return RegContext(LinearCritic(w), real, fake, None, None)


def test_gradient_penalties_see_the_critics_gradient_norm() -> None:
    w = torch.tensor([3.0, 0.0, 4.0, 0.0])  # ||w|| = 5
    gp = GradientPenalty(weight=10.0)(_ctx(w))
    assert gp["grad_norm"].item() == pytest.approx(5.0) and gp["gp"].item() == pytest.approx(10 * 16)
    assert R1(gamma=2.0)(_ctx(w))["r1"].item() == pytest.approx(0.5 * 2 * 25)
    assert WassersteinDivergence(k=2, p=6)(_ctx(w))["div"].item() == pytest.approx(2 * 5 ** 6, rel=1e-5)
    assert Dragan(weight=1.0)(_ctx(w))["dragan"].item() == pytest.approx(16)
    unit = GradientPenalty()(_ctx(w / 5))
    assert unit["gp"].item() == pytest.approx(0.0, abs=1e-10)


def test_penalty_gradient_reaches_the_critic() -> None:
    ctx = _ctx(torch.tensor([3.0, 0.0, 4.0, 0.0]))
    GradientPenalty()(ctx)["gp"].backward()
    # d/dw 10 (||w|| - 1)^2 = 20 (||w|| - 1) w / ||w||
    assert torch.allclose(ctx.D.w.grad, 20 * 4 * ctx.D.w.detach() / 5)


def test_consistency_term_is_zero_without_dropout_and_weight_clip_clamps() -> None:
    ctx = _ctx(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert ConsistencyTerm()(ctx)["ct"].item() == 0.0
    WeightClip(clip=0.5).after_step(ctx.D)
    assert ctx.D.w.detach().tolist() == [0.5, 0.5, 0.5, 0.5]


def test_every_registered_loss_is_finite_and_differentiable() -> None:
    for name, make in LOSSES.items():
        real, fake = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
        loss = make()
        total = loss.d_loss(real, fake) + loss.g_loss(fake, real if loss.needs_real_in_g else None)
        total.backward()
        assert torch.isfinite(total) and fake.grad is not None, name


def test_penalties_run_in_float32_under_bf16_autocast() -> None:
    """The penalty differentiates a gradient: autocast is off inside it and the inputs are cast to fp32."""
    from gans.losses import gradient_norm

    class Critic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(),
                                     nn.Linear(4 * 8 * 8, 1))

        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            return self.net(x).squeeze(1)

    torch.manual_seed(0)
    critic, images = Critic(), torch.randn(6, 1, 8, 8).bfloat16()  # a bf16 batch, as autocast produces
    exact = gradient_norm(critic, images.float(), None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert critic(images.float()).dtype == torch.bfloat16  # autocast is really on out here
        norms = gradient_norm(critic, images, None)
    assert norms.dtype == torch.float32
    torch.testing.assert_close(norms, exact)  # fp32 maths, not bf16's 3 significant digits
