"""The progressive and style-based family. StyleGAN2: the modulated convolution against its per-sample definition, the lazy
regularisation schedule (R1 and path length counted at their intervals, the Adam settings rescaled), exact
resume with the state that changes over the run (path-length mean, tracked mean w), and the artifact's latent
controls (truncation towards the mean w: psi 0 draws one image for every seed; style mixing). ProGAN: the growing
schedule, fade-ins that start where the stage below ends, and a run resumed inside a fade-in at its alpha.
StackGAN-v2: every stage drawn and judged at its own resolution, colour consistency, conditioning augmentation."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gans.config import ADAConfig, AugmentConfig, ConfigError, DataConfig, ModelConfig, TrainConfig
from gans.data import load_source
from gans.families import build_trainer, load_artifact, resolve
from gans.families.style.nets import ModulatedConv, StyleGenerator, StyleSpec
from gans.families.style.progressive import (ProgressiveDiscriminator, ProgressiveGenerator, ProgressiveSpec, Schedule,
                                             real_at_stage)
from gans.io import save_torch

DATA = load_source(DataConfig(source="digits", resolution=16, max_images=120))
NO_ADA = AugmentConfig(ada=ADAConfig(enabled=False))
FEW = TrainConfig(batch_size=8, steps=8, checkpoint_every=4, log_every=1, sample_every=100, eval_every=0)
MODEL = ModelConfig(variant="stylegan2", width=8, z_dim=8)


def _trainer(tmp: Path, *, model: ModelConfig = MODEL, train: TrainConfig = FEW, **overrides):
    model = dataclasses.replace(model, overrides=overrides) if overrides else model
    return build_trainer(model=model, train=train, augment=NO_ADA, data=DATA, checkpoint_dir=tmp / "ckpt")


def test_modulated_convolution_equals_a_per_sample_convolution_of_modulated_weights() -> None:
    torch.manual_seed(0)
    conv = ModulatedConv(3, 5, 3, 4)
    x, w = torch.randn(2, 3, 8, 8), torch.randn(2, 4)
    out = conv(x, w)
    styles = conv.affine(w)
    for i in range(2):  # the paper's definition: w'_ijk = s_i w_ijk, w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps)
        weight = conv.weight * conv.scale * styles[i][None, :, None, None]
        weight = weight / (weight.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
        assert torch.allclose(out[i], F.conv2d(x[i:i + 1], weight, padding=1)[0], atol=1e-5)


def test_generator_reads_one_w_per_layer_and_mixing_swaps_the_later_ones() -> None:
    spec = StyleSpec(channels=1, resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=128, channel_max=16)
    g = StyleGenerator(spec).eval()
    assert spec.num_ws == 6 and g(torch.randn(3, 8)).shape == (3, 1, 16, 16)
    z, z2 = torch.randn(2, 8), torch.randn(2, 8)
    ws = g.ws(z, mix_z=z2, mix_layer=torch.tensor([2, 6]))
    w, w2 = g.mapping(z), g.mapping(z2)
    assert torch.equal(ws[0, :2], w[0].expand(2, -1)) and torch.equal(ws[0, 2:], w2[0].expand(4, -1))
    assert torch.equal(ws[1], w[1].expand(6, -1))  # layer num_ws: no mixing
    g.mapping.w_avg.fill_(0.5)
    assert torch.allclose(g.ws(z, psi=0.0), torch.full((2, 6, 8), 0.5))
    g.mapping.track(torch.ones(4, 8))
    assert torch.allclose(g.mapping.w_avg, torch.full((1, 8), 0.5 + 0.5 * 0.005))


def test_lazy_regularisation_runs_at_its_intervals_with_rescaled_adam(tmp_path: Path) -> None:
    t = _trainer(tmp_path, train=dataclasses.replace(FEW, steps=13), r1_every=4, pl_every=3, lr_d=0.01)
    counts: collections.Counter[str] = collections.Counter()
    loss = t.recipe.loss

    def counted(phase, batch):
        counts[phase] += 1
        return loss(phase, batch)

    t.recipe.loss = counted
    result = t.fit()
    assert dict(counts) == {"D": 13, "D_reg": 4, "G": 13, "G_reg": 5}  # R1 at steps 0, 4, 8, 12; PL at 0, 3, 6, 9, 12
    d, g = t.optimizers["D"].param_groups[0], t.optimizers["G"].param_groups[0]
    assert d["lr"] == pytest.approx(0.01 * 4 / 5) and d["betas"] == pytest.approx((0.0, 0.99 ** (4 / 5)))
    assert g["lr"] == pytest.approx(2e-3 * 3 / 4) and g["betas"] == pytest.approx((0.0, 0.99 ** (3 / 4)))
    rows = {k: [r[k] for r in result.history if k in r] for k in ("r1_penalty", "pl_length")}
    assert len(rows["r1_penalty"]) == 4 and len(rows["pl_length"]) == 5  # logged where they ran (log_every 1)
    assert all(v > 0 for v in rows["r1_penalty"] + rows["pl_length"])
    # train.lr_d overrides the preset's rate, and the lazy rescaling still applies to it
    t2 = _trainer(tmp_path / "o", train=dataclasses.replace(FEW, steps=1, lr_d=0.004))
    t2.fit()
    assert t2.optimizers["D"].param_groups[0]["lr"] == pytest.approx(0.004 * 16 / 17)


def test_a_resumed_run_continues_exactly_with_its_path_length_mean_and_mean_w(tmp_path: Path) -> None:
    straight = _trainer(tmp_path / "a")
    straight.fit()
    half = _trainer(tmp_path / "b", train=dataclasses.replace(FEW, steps=4))
    half.fit()
    resumed = _trainer(tmp_path / "b")
    result = resumed.fit()
    assert result.resumed_from == 4
    assert float(straight.recipe.pl_mean) > 0 and torch.equal(straight.recipe.pl_mean, resumed.recipe.pl_mean)
    for a, b in zip(straight.ema["G_ema"].state_dict().items(), resumed.ema["G_ema"].state_dict().items()):
        assert a[0] == b[0] and torch.equal(a[1], b[1]), a[0]
    assert straight.nets["G"].mapping.w_avg.abs().sum() > 0  # tracked during training, and carried by the EMA copy
    assert torch.equal(straight.nets["G"].mapping.w_avg, straight.ema["G_ema"].mapping.w_avg)


def test_artifact_truncates_towards_the_mean_w_and_mixes_styles_deterministically(tmp_path: Path) -> None:
    t = _trainer(tmp_path, model=dataclasses.replace(MODEL, variant="stylegan2-cifar"),
                 train=dataclasses.replace(FEW, steps=3))
    t.fit()
    save_torch(t.export(), tmp_path / "generator.pt")
    art = load_artifact(tmp_path / "generator.pt")
    assert (art.kind, art.family, art.num_classes, art.mix_layers) == ("generate", "progressive-style", 10, 6)
    assert "mean w" in art.describe()["truncation"] and "1..5" in art.describe()["mixing"]
    seeds, labels = [3, 4, 5], [1, 1, 2]
    images = art.generate(seeds, labels)
    assert images.shape == (3, 1, 16, 16) and images.dtype == torch.uint8
    assert torch.equal(art.generate([5, 3], [2, 1])[1], images[0])  # a seed's image, whatever the batch
    mean = art.generate(seeds, labels, truncation=0)
    assert torch.equal(mean[0], mean[1]) and not torch.equal(mean[0], mean[2])  # psi 0: the mean image of the class
    assert not torch.equal(images[0], images[1])
    assert torch.equal(art.generate(seeds, labels, mix_seeds=seeds, mix_layers=[2, 2, 2]), images)  # itself: no change
    mixed = art.generate([3, 3], [1, 1], mix_seeds=[4, 4], mix_layers=[1, 5])
    assert not torch.equal(mixed[0], images[0]) and not torch.equal(mixed[0], mixed[1])
    assert torch.equal(mixed, art.generate([3, 3], [1, 1], mix_seeds=[4, 4], mix_layers=[1, 5]))
    with pytest.raises(ValueError, match="mix layer 7: expected 1..5"):
        art.generate([3], [1], mix_seeds=[4], mix_layers=[7])


def test_bad_compositions_and_data_get_errors_naming_the_key() -> None:
    for overrides, fragment in (({"style_mixing": 1.5}, "model.overrides.style_mixing"),
                                ({"r1_every": 0}, "model.overrides.r1_every"),
                                ({"pl_weight": -1}, "model.overrides.pl_weight"),
                                ({"mapping": 2}, "model.overrides.mapping: unknown axis")):
        with pytest.raises(ConfigError, match=fragment):
            resolve(ModelConfig(variant="stylegan2", overrides=overrides))
    unlabelled = load_source(DataConfig(source="digits", resolution=16, max_images=40, labels_per_class=0))
    unlabelled = dataclasses.replace(unlabelled, labels=None)
    with pytest.raises(ConfigError, match="stylegan2-cifar is class-conditional and needs labelled data"):
        build_trainer(model=dataclasses.replace(MODEL, variant="stylegan2-cifar"), train=FEW, augment=NO_ADA,
                      data=unlabelled, checkpoint_dir="unused")
    odd = load_source(DataConfig(source="digits", resolution=12, max_images=40))
    with pytest.raises(ConfigError, match="data.resolution: StyleGAN2 draws square images whose side is a power of two"):
        build_trainer(model=MODEL, train=FEW, augment=NO_ADA, data=odd, checkpoint_dir="unused")


# ---------------------------------------------------------------- ProGAN

PROGAN = ModelConfig(variant="progan", width=8, z_dim=8, overrides={"fade_steps": 4, "stable_steps": 2})


def test_progan_schedule_grows_from_4x4_with_fade_ins_then_holds_the_last_resolution() -> None:
    s = Schedule(stages=3, fade=4, stable=2)  # 4x4, 8x8, 16x16
    at = [s.at(step) for step in range(16)]
    assert at[:2] == [(0, 1.0)] * 2
    assert at[2:6] == [(1, 0.25), (1, 0.5), (1, 0.75), (1, 1.0)] and at[6:8] == [(1, 1.0)] * 2
    assert at[8:12] == [(2, 0.25), (2, 0.5), (2, 0.75), (2, 1.0)] and at[12:] == [(2, 1.0)] * 4
    assert s.changes() == [2, 8]


def test_a_fade_in_starts_exactly_where_the_stage_below_ends() -> None:
    """alpha 0 at stage k: the generator draws the stage below's image, and the discriminator judges the real
    images as the stage below did; every stage's image comes out at the data's resolution."""
    spec = ProgressiveSpec(channels=1, resolution=16, z_dim=8, channel_base=128, channel_max=16)
    g, d = ProgressiveGenerator(spec).eval(), ProgressiveDiscriminator(spec).eval()
    z, real = torch.randn(4, 8), torch.rand(4, 1, 16, 16) * 2 - 1
    for stage in (1, 2):
        g.set_stage(stage - 1, 1.0)
        d.set_stage(stage - 1, 1.0)
        below, judged = g(z), d(real_at_stage(real, 16, stage - 1, 1.0))
        g.set_stage(stage, 0.0)
        d.set_stage(stage, 0.0)
        assert g(z).shape == (4, 1, 16, 16) and torch.equal(g(z), below)
        assert torch.allclose(d(real_at_stage(real, 16, stage, 0.0)), judged, atol=1e-6)
        lower = F.interpolate(real_at_stage(real, 16, stage - 1, 1.0), scale_factor=2, mode="nearest")
        assert torch.allclose(real_at_stage(real, 16, stage, 0.0), lower, atol=1e-6)  # the reals fade in as G's images
        g.set_stage(stage, 0.5)
        assert not torch.equal(g(z), below)


def test_progan_resumes_inside_a_fade_in_at_the_same_alpha(tmp_path: Path) -> None:
    straight = _trainer(tmp_path / "a", model=PROGAN, train=dataclasses.replace(FEW, steps=10))
    straight.fit()
    half = _trainer(tmp_path / "b", model=PROGAN, train=dataclasses.replace(FEW, steps=4))  # killed at step 4
    half.fit()
    assert half.recipe.state_dict() | {"stage_changes": None} == \
        {"step": 4, "stage": 1, "alpha": 0.75, "stage_changes": None}  # in the 8x8 fade-in
    resumed = _trainer(tmp_path / "b", model=PROGAN, train=dataclasses.replace(FEW, steps=10))
    result = resumed.fit()
    assert result.resumed_from == 4 and resumed.recipe.step == 10
    assert [(r["resolution"], r["alpha"]) for r in result.history] == \
        [(r["resolution"], r["alpha"]) for r in straight.history]  # the history is kept across the resume
    assert (result.history[4]["step"], result.history[4]["alpha"]) == (5, 0.75)  # the first resumed step: same fade-in
    assert [r["loss_d"] for r in result.history] == [r["loss_d"] for r in straight.history]
    for a, b in zip(straight.ema["G_ema"].state_dict().items(), resumed.ema["G_ema"].state_dict().items()):
        assert torch.equal(a[1], b[1]), a[0]
    save_torch(resumed.export(), tmp_path / "generator.pt")
    art = load_artifact(tmp_path / "generator.pt")
    assert (art.family, art.stage, art.describe()["stage_resolution"]) == ("progressive-style", 2, 16)
    images = art.generate([1, 2], None)
    assert images.shape == (2, 1, 16, 16)
    mean = art.generate([1, 2], None, truncation=0)  # psi acts after the pixel norm, which would undo a scaled z
    assert torch.equal(mean[0], mean[1]) and not torch.equal(art.generate([1], None, truncation=0.5)[0], images[0])
    assert torch.equal(art.generate([2, 1], None, truncation=[1.0, 0.0])[1], mean[0])  # one psi per row


# ---------------------------------------------------------------- StackGAN-v2

STACKGAN = ModelConfig(variant="stackgan", width=8, z_dim=8, overrides={"ca_dim": 4})  # z: 4 of noise, 4 of eps


def test_colour_consistency_is_zero_between_an_image_and_its_upsampled_copy() -> None:
    from gans.families.style.stacked import color_consistency

    low = torch.rand(4, 3, 8, 8) * 2 - 1
    same = F.interpolate(low, scale_factor=2, mode="nearest")  # the same pixels, each four times
    assert float(color_consistency(low, same)) < 1e-10
    shifted = same + torch.tensor([0.3, 0.0, 0.0])[None, :, None, None]  # a redder copy: the mean term
    assert float(color_consistency(low, shifted)) == pytest.approx(0.09, rel=1e-4)
    contrast = same * 2  # the covariance term, with its weight 5: sum of (3 cov)^2 over the 3x3 entries
    stats = low.flatten(2) - low.flatten(2).mean(2, keepdim=True)
    cov = stats @ stats.transpose(1, 2) / 64
    expected = (0 * 1 + 5 * (3 * cov).square().sum((1, 2))).mean() + (low.flatten(2).mean(2)).square().sum(1).mean()
    assert float(color_consistency(low, contrast)) == pytest.approx(float(expected), rel=1e-4)


def test_stackgan_draws_every_stage_and_each_discriminator_judges_its_own_resolution(tmp_path: Path) -> None:
    t = _trainer(tmp_path, model=STACKGAN)
    t.fit()
    recipe = t.recipe
    assert recipe.spec.sides == [4, 8, 16] and len(t.nets["D"].scales) == 3
    batch = t._next_batch()
    for net in t.nets.values():
        net.zero_grad(set_to_none=True)
    loss, stats = recipe.loss("D", batch)
    loss.backward()
    assert {"loss_d0", "loss_d1", "loss_d2"} <= set(stats)
    for k, d in enumerate(t.nets["D"].scales):  # every discriminator, its conditional head included, learns
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters()), k
    for net in t.nets.values():
        net.zero_grad(set_to_none=True)
    loss, stats = recipe.loss("G", batch)
    loss.backward()
    assert {"loss_g0", "loss_g1", "loss_g2", "kl", "color"} <= set(stats) and float(stats["kl"]) > 0
    assert all(p.grad is not None for p in t.nets["G"].ca.parameters())  # the KL term and c reach the embedding
    save_torch(t.export(), tmp_path / "generator.pt")
    art = load_artifact(tmp_path / "generator.pt")
    assert type(art).__name__ == "StackedArtifact" and art.describe()["stage_resolutions"] == [4, 8, 16]
    images = art.generate([3, 4, 3], [1, 1, 2])
    assert images.shape == (3, 1, 16, 16) and torch.equal(art.generate([3], [1])[0], images[0])  # one image per seed
    z = torch.randn(1, 8).expand(2, -1)
    with torch.no_grad():  # the class matters (in floats: 8 steps leave eval-mode batch norm drawing near-flat images)
        a, b = art.generator(z, torch.tensor([1, 2]))
    assert (a - b).abs().max() > 1e-4
    stages = art.stages([3, 4], [1, 1])
    assert [s.shape[-1] for s in stages] == [4, 8, 16] and torch.equal(stages[-1], images[:2])
    mean = art.generate([3, 4], [1, 1], truncation=0)
    assert torch.equal(mean[0], mean[1])


def test_stackgan_draws_the_conditioning_noise_from_the_latent(tmp_path: Path) -> None:
    """A loaded model draws c = mean + sigma * eps with eps the latent's last ca_dim entries, as training did;
    drawing c at its mean collapsed each class to nearly one image (recall 0.09 against 0.61)."""
    t = _trainer(tmp_path, model=STACKGAN)
    t.fit()
    save_torch(t.export(), tmp_path / "generator.pt")
    g = load_artifact(tmp_path / "generator.pt").generator
    assert not g.training and g.spec.noise_dim == 4 and g.fc[0].in_features == 4 + 4
    assert load_artifact(tmp_path / "generator.pt").describe()["latent_layout"].startswith(
        "the first 4 entries of z are noise, the last 4 the conditioning noise eps")
    y = torch.tensor([1, 1])
    z = torch.randn(1, 8).expand(2, -1).clone()
    z[1, 4:] += 1.0  # the same noise, other eps
    with torch.no_grad():
        mu, logvar = g.ca(y)
        c, _, _ = g.condition(y, z[:, 4:])
        a, b = g(z, y)
    assert torch.allclose(c, mu + z[:, 4:] * (0.5 * logvar).exp())
    assert (a - b).abs().max() > 1e-4  # eps alone changes the image in eval mode
    from gans import latent

    w, sigma = g.fc[0].weight.detach(), (0.5 * g.ca(torch.arange(10))[1].detach()).exp().mean(0)
    a_z = latent.z_weight(g, 8)  # SeFa's view of the latent: noise columns as they are, eps's through sigma
    assert a_z.shape == (w.shape[0], 8) and torch.equal(a_z[:, :4], w[:, :4])
    assert torch.allclose(a_z[:, 4:], w[:, 4:] * sigma)
    with pytest.raises(ConfigError, match="model.z_dim: got 4 with model.overrides.ca_dim 4"):
        build_trainer(model=dataclasses.replace(STACKGAN, z_dim=4), train=FEW, augment=NO_ADA, data=DATA,
                      checkpoint_dir="unused")


def test_a_stackgan_artifact_from_before_eps_joined_the_latent_still_loads(tmp_path: Path) -> None:
    """Its spec has no ``latent_ca``: z and c side by side in the first layer, c = mean when drawing."""
    from dataclasses import asdict

    from gans.data import to_uint8
    from gans.families.style.stacked import StackedGenerator, StackedSpec
    from gans.sampling import latents_for_seeds

    spec = StackedSpec(channels=1, resolution=16, z_dim=8, width=8, num_classes=10, ca_dim=4,
                       conditioning="conditioning-augmentation")
    g = StackedGenerator(spec).eval()
    assert g.fc[0].in_features == 8 + 4
    t = _trainer(tmp_path, model=STACKGAN)
    old_spec = {k: v for k, v in asdict(spec).items() if k != "latent_ca"}
    save_torch({**t.recipe.export({"G_ema": g}, 0), "spec": old_spec}, tmp_path / "old.pt")
    art = load_artifact(tmp_path / "old.pt")
    with torch.no_grad():
        expected = to_uint8(g(latents_for_seeds([5, 6], 8), torch.tensor([2, 3])))
    assert torch.equal(art.generate([5, 6], [2, 3]), expected)


def test_stackgan_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="model.overrides.stages: 4 stages at 16x16 would start at 2x2"):
        build_trainer(model=dataclasses.replace(STACKGAN, overrides={"stages": 4}), train=FEW, augment=NO_ADA,
                      data=DATA, checkpoint_dir="unused")
    for overrides, fragment in (({"kl_weight": -1}, "model.overrides.kl_weight"),
                                ({"ca_dim": 0}, "model.overrides.ca_dim")):
        with pytest.raises(ConfigError, match=fragment):
            resolve(dataclasses.replace(STACKGAN, overrides=overrides))
    unlabelled = dataclasses.replace(DATA, labels=None)
    with pytest.raises(ConfigError, match="stackgan is class-conditional"):
        build_trainer(model=STACKGAN, train=FEW, augment=NO_ADA, data=unlabelled, checkpoint_dir="unused")
    t = build_trainer(model=dataclasses.replace(STACKGAN, overrides={"conditional": False, "stages": 2}), train=FEW,
                      augment=NO_ADA, data=unlabelled, checkpoint_dir="unused")
    assert t.recipe.spec.sides == [8, 16] and t.recipe.build()["G"].ca is None
