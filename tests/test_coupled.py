"""The coupled family (CoGAN): paired data split so no pair reaches training, the weight sharing (one set of
weights for both domains where it is asked for, two where it is not), the sharing checked against the
resolution, the preset training a few steps on paired and unpaired data, the artifact's pairs (one latent,
two images; the same seed, the same pair) and the pixel agreement the evaluation reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gans.config import ADAConfig, AugmentConfig, ConfigError, DataConfig, ModelConfig, TrainConfig
from gans.data import load_dataset, split_dataset
from gans.domains import PAIR_TRANSFORMS, negative
from gans.families import build_trainer, load_artifact, resolve
from gans.families.coupled.evaluate import pair_grid, pixel_agreement
from gans.families.coupled.nets import CoupledDiscriminator, CoupledGenerator
from gans.families.coupled.recipe import coupled_spec, halves
from gans.io import save_torch

NEGATIVES = split_dataset(load_dataset(DataConfig(source="mnist5k-negatives", resolution=16, max_images=120))[0], 0.2, 0)[0]
NO_ADA = AugmentConfig(ada=ADAConfig(enabled=False))
FEW = TrainConfig(batch_size=8, steps=3, checkpoint_every=100, log_every=1, sample_every=100, eval_every=0)


def test_paired_rows_are_split_in_halves_so_no_pair_reaches_training() -> None:
    images = halves(NEGATIVES)
    n = len(NEGATIVES.parts["a"])
    assert len(images["a"]) + len(images["b"]) == n and abs(len(images["a"]) - len(images["b"])) <= 1
    digits = {bytes(x.numpy()) for x in NEGATIVES.parts["a"].images}
    partners = {bytes(negative(x).numpy()) for x in images["b"]}  # the digit each negative was made from
    kept = {bytes(x.numpy()) for x in images["a"]}
    assert partners <= digits and not partners & kept  # no digit is in a while its negative is in b
    again = halves(NEGATIVES)
    assert all(torch.equal(images[d], again[d]) for d in "ab")  # the same split every time


def _spec(**overrides):
    comp = resolve(ModelConfig(variant="cogan", overrides=overrides)).composition
    return coupled_spec(comp, ModelConfig(variant="cogan", width=8, z_dim=8), {"a": 1, "b": 3}, 32)


def test_shared_blocks_are_one_set_of_weights_and_unshared_blocks_two() -> None:
    spec = _spec()
    assert (spec.blocks, spec.shared_g, spec.shared_d) == (4, 3, 3)  # all but the output / input block
    g, d = CoupledGenerator(spec), CoupledDiscriminator(spec)
    z = torch.randn(4, 8)
    a, b = g(z)
    assert a.shape == (4, 1, 32, 32) and b.shape == (4, 3, 32, 32)
    b.float().mean().backward()  # domain b's output reaches the shared blocks, not domain a's private ones
    assert all(p.grad is not None for p in g.shared.parameters())
    assert all(p.grad is None for p in g.private["a"].parameters())
    d(a.detach(), "a").sum().backward()
    assert all(p.grad is not None for p in d.shared.parameters())
    assert all(p.grad is None for p in d.private["b"].parameters())
    alone = _spec(shared_g=0, shared_d=0)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(CoupledGenerator(alone)) > count(g) and len(CoupledGenerator(alone).shared) == 0
    a2, b2 = CoupledGenerator(alone)(z)
    assert a2.shape == a.shape and b2.shape == b.shape


def test_sharing_more_blocks_than_a_network_has_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"model.overrides.shared_g: got 4; at 32x32 pixels each network has 4 "
                                          r"blocks and its output block stays per domain, so at most 3"):
        _spec(shared_g=4)
    with pytest.raises(ConfigError, match=r"model.overrides.shared_d: got 9; .* its input block stays per domain"):
        _spec(shared_d=9)
    with pytest.raises(ConfigError, match="model.overrides.shared_g: got -2; expected -1"):
        _spec(shared_g=-2)
    with pytest.raises(ConfigError, match=r"model.variant: cogan \(coupled\) trains on two domains \(paired or unpaired data\); the prepared data has the images layout"):
        build_trainer(model=ModelConfig(variant="cogan"), train=FEW, augment=NO_ADA,
                      data=load_dataset(DataConfig(source="digits", resolution=16, max_images=40))[0],
                      checkpoint_dir="unused")


@pytest.mark.parametrize("source", ["mnist5k-negatives", "digits-mnist5k"])
def test_cogan_trains_and_its_artifact_draws_one_pair_per_seed(source: str, tmp_path: Path) -> None:
    data = split_dataset(load_dataset(DataConfig(source=source, resolution=16, max_images=120))[0], 0.2, 0)[0]
    trainer = build_trainer(model=ModelConfig(variant="cogan", width=8, z_dim=8), train=FEW, augment=NO_ADA,
                            data=data, checkpoint_dir=tmp_path / "ckpt")
    last = trainer.fit().history[-1]
    for key in ("loss_d", "loss_g", "loss_d_a", "loss_d_b", "d_real_sign"):
        assert torch.isfinite(torch.tensor(last[key])), key
    save_torch(trainer.export(), tmp_path / "generator.pt")
    artifact = load_artifact(tmp_path / "generator.pt")
    assert artifact.kind == "pair" and artifact.describe()["domains"] == ["a", "b"]
    a, b = artifact.generate_pair([5, 6, 7])
    assert a.dtype == torch.uint8 and a.shape == (3, 1, 16, 16) and b.shape == (3, 1, 16, 16)
    a2, b2 = artifact.generate_pair([7, 5])
    assert torch.equal(a2[0], a[2]) and torch.equal(b2[1], b[0])  # a seed's pair, whatever the batch
    grid = pair_grid(a, b, per_row=3)
    assert grid.shape[0] == 3 and grid.shape[1] == 2 * 16 + 3 * 2  # a row of a above a row of b


def test_pixel_agreement_is_one_for_real_pairs_and_lower_for_shuffled_ones() -> None:
    src, dst, transform, _ = PAIR_TRANSFORMS["mnist5k-negatives"]
    a, b = NEGATIVES.parts[src].images, NEGATIVES.parts[dst].images
    assert pixel_agreement(transform(a), b) == 1.0
    assert pixel_agreement(transform(a), b.roll(1, 0)) < 0.95
    src, dst, transform, _ = PAIR_TRANSFORMS["mnist5k-edges"]
    edges = split_dataset(load_dataset(DataConfig(source="mnist5k-edges", resolution=16, max_images=60))[0], 0.2, 0)[0]
    assert pixel_agreement(transform(edges.parts[src].images), edges.parts[dst].images) == 1.0
