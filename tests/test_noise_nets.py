"""The noise-to-image networks' shared wrappers: conditioning, minibatch discrimination, the heads."""

from __future__ import annotations

import pytest
import torch

from gans.families.noise.nets import MinibatchDiscrimination, NetSpec, build_networks


def test_minibatch_closeness_is_a_mean_over_the_others_in_zero_one() -> None:
    mb = MinibatchDiscrimination(4, 3)
    same = mb(torch.ones(5, 4))
    assert same.shape == (5, 7) and torch.allclose(same[:, 4:], torch.ones(5, 3))  # identical rows: 1
    spread = mb(torch.randn(5, 4) * 100)
    assert (spread[:, 4:] >= 0).all() and (spread[:, 4:] < 0.5).all()


@pytest.mark.parametrize("conditioning", ["concat", "projection", "acgan"])
def test_conditional_networks_need_labels_and_use_them(conditioning: str) -> None:
    spec = NetSpec(channels=1, resolution=16, z_dim=4, width=4, num_classes=3, conditioning=conditioning,
                   d_norm="none")
    g, d = build_networks("dcgan", spec)
    g.eval()
    z = torch.randn(2, 4)
    with pytest.raises(ValueError, match="labels are required"):
        g(z)
    x = g(z, torch.tensor([0, 1]))
    assert not torch.equal(x, g(z, torch.tensor([2, 2])))
    if conditioning != "acgan":  # ACGAN's D judges realness alone; its auxiliary head reads the class
        with pytest.raises(ValueError, match="labels are required"):
            d(x)
        assert not torch.equal(d(x, torch.tensor([0, 1])), d(x, torch.tensor([2, 2])))
    assert d(x, torch.tensor([0, 1])).shape == (2,)
    assert (d.aux is not None) == (conditioning == "acgan") and (d.embed is not None) == (conditioning == "projection")


def test_infogan_codes_default_to_zero_and_q_reads_every_code() -> None:
    spec = NetSpec(channels=1, resolution=16, z_dim=4, width=4, num_classes=10, conditioning="infogan",
                   info_continuous=2)
    g, d = build_networks("dcgan", spec)
    g.eval()
    z, c = torch.randn(2, 4), torch.tensor([1, 2])
    assert torch.equal(g(z, c), g(torch.cat([z, torch.zeros(2, 2)], 1), c))
    assert d.q(d.features(g(z, c))).shape == (2, 12)
