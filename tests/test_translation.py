"""The translation family: networks at every size, presets and their checks, a few training steps of every
preset through the train stage, exact resume with image pools and LR schedules."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from gans.config import ADAConfig, AugmentConfig, ConfigError, DataConfig, ModelConfig, TrainConfig
from gans.data import load_dataset, split_dataset
from gans.families import build_trainer, load_artifact
from gans.families.translation.nets import (PatchDiscriminator, TranslationSpec, build_discriminator,
                                            build_generator, patch_layers, receptive_field)
from gans.families.translation.presets import PRESETS, resolve_translation
from gans.families.translation.recipe import ImagePool
from pipeline import stages
from pipeline.params import params_from_dict

from conftest import KillAt, state_differences, tiny_params

UNPAIRED = split_dataset(load_dataset(DataConfig(source="digits-mnist5k", resolution=16, max_images=120))[0], 0.1, 0)
PAIRED = split_dataset(load_dataset(DataConfig(source="mnist5k-edges", resolution=16, max_images=120))[0], 0.1, 0)


def translation_params(extra: dict | None = None) -> dict:
    """Tiny params for a translation preset (``model.z_dim`` back at its default: the family has no latent)."""
    raw = tiny_params(extra)
    raw["model"]["z_dim"] = 64
    return raw


@pytest.mark.parametrize("generator", ["unet", "resnet", "encoder-decoder"])
@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_generators_keep_the_size_and_map_channels(generator: str, resolution: int) -> None:
    spec = TranslationSpec(resolution=resolution, channels_a=1, channels_b=3, width=4, generator=generator,
                           g_norm="instance", g_blocks=2)
    x = torch.rand(2, 1, resolution, resolution) * 2 - 1
    y = build_generator(spec, "a2b")(x)
    assert y.shape == (2, 3, resolution, resolution) and y.abs().max() <= 1
    assert build_generator(spec, "b2a")(y).shape == x.shape


def test_patch_size_scales_pix2pix_70_of_256() -> None:
    assert [receptive_field(n) for n in (1, 2, 3)] == [16, 34, 70]
    assert [patch_layers(r) for r in (16, 32, 64, 128, 256)] == [1, 1, 1, 2, 3]
    spec = TranslationSpec(resolution=32, channels_a=1, channels_b=1, width=4, d_layers=1, conditional_d=True)
    d = build_discriminator(spec, "a2b")
    assert d.net[0].in_channels == 2  # the (input, output) pair
    assert d(torch.zeros(3, 2, 32, 32)).shape == (3, 1, 14, 14)
    whole = PatchDiscriminator(cin=1, width=4, layers=0, norm="batch", whole_image=True, resolution=32)
    assert whole(torch.zeros(3, 1, 32, 32)).shape == (3, 1, 1, 1)


def test_presets_are_compositions_and_overrides_are_checked() -> None:
    assert {"pix2pix", "cyclegan", "dualgan", "discogan"} <= set(PRESETS)
    p2p, cyc = resolve_translation(ModelConfig(variant="pix2pix")), resolve_translation(ModelConfig(variant="cyclegan"))
    assert (p2p.generator, p2p.conditional_d, p2p.paired_weight, p2p.two_way) == ("unet", True, 100.0, False)
    assert (cyc.loss, cyc.cycle_weight, cyc.identity_weight, cyc.pool_size) == ("least-squares", 10.0, 0.5, 50)
    dual = resolve_translation(ModelConfig(variant="dualgan"))
    assert dual.loss == "wasserstein" and dual.regularizers == ("gp",) and dual.n_critic > 1
    assert resolve_translation(ModelConfig(variant="cyclegan", overrides={"generator": "unet"})).generator == "unet"
    bad = [({"regularizers": ["ct"]}, "model.overrides.regularizers[0]: got 'ct'; the translation family takes"),
           ({"regularizers": ["gp"], "d_norm": "batch"}, "gradient penalties are per-sample"),
           ({"two_way": False}, "model.overrides.two_way: the cycle and identity terms need both directions"),
           ({"generator": "vit"}, "model.overrides.generator: got 'vit'"),
           ({"decay_start": 0}, "model.overrides.decay_start: got 0.0"),
           ({"loss_args": {"c": "x"}}, "model.overrides.loss_args.c: got 'x'; expected a number"),
           ({"z": 1}, "model.overrides.z: unknown axis")]
    for overrides, fragment in bad:
        with pytest.raises(ConfigError) as err:
            resolve_translation(ModelConfig(variant="cyclegan", overrides=overrides))
        assert fragment in str(err.value)


def test_params_reject_a_family_s_unused_keys_and_a_data_layout_it_cannot_train_on() -> None:
    with pytest.raises(ConfigError, match="model.z_dim: the translation family .pix2pix. does not use it"):
        params_from_dict(tiny_params({"model": {"variant": "pix2pix"}, "data": {"source": "mnist5k-edges"}}))
    with pytest.raises(ConfigError, match=r"model.variant: pix2pix \(translation\) trains on paired data \(two aligned "
                                          r"domains\), but data.source 'digits-mnist5k' is unpaired"):
        params_from_dict(translation_params({"model": {"variant": "pix2pix"}, "data": {"source": "digits-mnist5k"}}))
    with pytest.raises(ConfigError, match=r"model.variant: dcgan \(noise-to-image\) trains on one image set, but "
                                          r"data.source 'mnist5k-edges' is paired"):
        params_from_dict(tiny_params({"data": {"source": "mnist5k-edges"}}))
    ok = params_from_dict(translation_params({"model": {"variant": "cyclegan"}, "data": {"source": "mnist5k-edges"}}))
    assert ok.resolved.family.name == "translation"  # unpaired presets also take paired data


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Prepared and augmented tiny data of each layout, made once."""
    roots = {}
    for source in ("mnist5k-edges", "digits-mnist5k"):
        root = tmp_path_factory.mktemp(source)
        mp = pytest.MonkeyPatch()
        mp.chdir(root)
        params = params_from_dict(translation_params({"data": {"source": source, "max_images": 200},
                                                      "model": {"variant": "cyclegan"}}))
        stages.prepare(params)
        stages.augment(params)
        mp.undo()
        roots[source] = root
    return roots


@pytest.mark.parametrize("variant, source", [("pix2pix", "mnist5k-edges"), ("cyclegan", "digits-mnist5k"),
                                             ("dualgan", "digits-mnist5k"), ("discogan", "mnist5k-edges")])
def test_every_preset_trains_through_the_train_stage(variant: str, source: str, workspaces: dict[str, Path],
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(workspaces[source] / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    raw = translation_params({"data": {"source": source}, "model": {"variant": variant, "width": 4},
                              "train": {"steps": 3, "batch_size": 8, "log_every": 1, "checkpoint_every": 3,
                                        "eval_every": 0}, "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}})
    result = stages.train(params_from_dict(raw))
    assert result["steps"] == 3 and result["variant"] == variant and result["family"] == "translation"
    rows = (tmp_path / "plots/train.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss_d,loss_g") and len(rows) == 4
    assert all(math.isfinite(float(x)) for row in rows[1:] for x in row.split(",") if x)
    artifact = load_artifact(tmp_path / "models/generator.pt")
    assert artifact.kind == "translate" and artifact.directions == (("a2b",) if variant == "pix2pix" else ("a2b", "b2a"))
    images = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8)
    out = artifact.translate(images, "a2b")
    assert out.shape == (3, 1, 16, 16) and out.dtype == torch.uint8
    assert torch.equal(out, artifact.translate(images, "a2b"))  # eval mode: no dropout, same output


def test_l1_alone_drops_the_discriminator() -> None:
    t = build_trainer(model=ModelConfig(variant="pix2pix", width=4, overrides={"adv_weight": 0}),
                      train=TrainConfig(batch_size=8, steps=2, eval_every=0), augment=AugmentConfig(),
                      data=PAIRED[0], checkpoint_dir="/nonexistent")
    assert [p.name for p in t.recipe.phases] == ["G"] and set(t.recipe.build()) == {"G_ab"}


def test_pix2pix_needs_pairs_and_identity_needs_equal_channels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pix2pix needs paired data"):
        build_trainer(model=ModelConfig(variant="pix2pix", width=4), train=TrainConfig(batch_size=8),
                      augment=AugmentConfig(), data=UNPAIRED[0], checkpoint_dir=tmp_path)
    from gans.data import Dataset, ImageSet

    rgb_b = Dataset("unpaired", {"a": UNPAIRED[0].parts["a"],
                                 "b": ImageSet(UNPAIRED[0].parts["b"].images.expand(-1, 3, -1, -1), None, ())})
    with pytest.raises(ConfigError, match="model.overrides.identity_weight: the identity term feeds domain b"):
        build_trainer(model=ModelConfig(variant="cyclegan", width=4), train=TrainConfig(batch_size=8),
                      augment=AugmentConfig(), data=rgb_b, checkpoint_dir=tmp_path)


def test_image_pool_fills_then_swaps_half_the_time() -> None:
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and len(pool.images) == 4
    out = pool.query(torch.full((200, 1, 1, 1), 9.0))
    swapped = int((out != 9).sum())
    assert 0 < swapped <= 4  # at most the four old images come back, each once: then 9s replace them
    assert torch.equal(pool.images, torch.full((4, 1, 1, 1), 9.0))
    assert torch.equal(ImagePool(0).query(first), first)


def test_cyclegan_killed_after_a_checkpoint_resumes_bit_identically(tmp_path: Path) -> None:
    """Networks, EMA, optimisers, LR schedules, image pools, ADA's p, the data order and RNGs all come back."""
    train = TrainConfig(batch_size=8, steps=8, checkpoint_every=4, log_every=1, sample_every=100, eval_every=0)
    model = ModelConfig(variant="cyclegan", width=4, overrides={"pool_size": 5, "g_blocks": 1})
    augment = AugmentConfig(ada=ADAConfig(target=0.05, speed_kimg=0.2, interval=1))

    def trainer(folder: str, **kw):
        return build_trainer(model=model, train=train, augment=augment, data=UNPAIRED[0], preview=UNPAIRED[1],
                             checkpoint_dir=tmp_path / folder, **kw)

    straight = trainer("straight")
    straight.fit()
    with pytest.raises(KeyboardInterrupt):
        trainer("killed", reporter=KillAt(6)).fit()
    resumed = trainer("killed")
    assert resumed.fit().resumed_from == 4
    a, b = straight.state_dict(), resumed.state_dict()
    assert state_differences({k: v for k, v in a.items() if k != "extra"}, {k: v for k, v in b.items() if k != "extra"}) == []
    assert a["family_state"]["pools"]["a2b"]["images"].shape[0] == 5 and straight.ada_p > 0
    lr = a["schedulers"]["G"]["_last_lr"][0]
    assert lr == pytest.approx(0.0)  # CycleGAN's LR decays linearly to 0 over the second half of the steps


def test_lr_decays_over_the_second_half_and_the_artifact_is_the_ema(tmp_path: Path) -> None:
    t = build_trainer(model=ModelConfig(variant="pix2pix", width=4),
                      train=TrainConfig(batch_size=8, steps=8, checkpoint_every=8, eval_every=0, sample_every=8),
                      augment=AugmentConfig(ada=ADAConfig(enabled=False)), data=PAIRED[0], checkpoint_dir=tmp_path)
    lrs = []
    t.setup()
    while t.step < 8:
        t.train_step()
        lrs.append(t.optimizers["G"].param_groups[0]["lr"])
    assert lrs[:3] == [2e-4] * 3 and lrs[-1] == 0.0 and lrs[4] == pytest.approx(2e-4 * 0.75)
    payload = t.export()
    assert payload["family"] == "translation" and payload["directions"] == ["a2b"]
    ema = t.ema["G_ab_ema"].state_dict()
    assert all(torch.equal(payload["state_dicts"]["a2b"][k], v) for k, v in ema.items())
    assert t.sample_grid().shape == (3, 2 + 8 * 18, 2 + 3 * 18)  # input | output | target, 8 rows


def test_paired_augmentation_transforms_input_and_target_alike() -> None:
    from gans.augment import PIPELINES, AugmentPipe

    pipe = AugmentPipe(ops=PIPELINES["bgc"], p=0.9)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    torch.manual_seed(1)
    alone = pipe(x)
    torch.manual_seed(1)
    pair = pipe(torch.cat([x, x], dim=1))  # an RGB (input, output) pair as D sees it
    assert torch.allclose(pair[:, :3], alone, atol=1e-5) and torch.allclose(pair[:, 3:], alone, atol=1e-5)
    grey = pipe(torch.cat([x[:, :1], x[:, :1]], dim=1))
    assert torch.allclose(grey[:, 0], grey[:, 1])
