"""The super-resolution family: LR/HR pairs from any image source and from a folder, the networks at every
scale, the Y-channel metrics, presets and their checks, the content network (domain classifier or VGG19
weights from a file), a few training steps of every preset, and exact resume across the switch from the
pixel phase to the GAN phases."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gans.config import ADAConfig, AugmentConfig, ConfigError, DataConfig, ModelConfig, TrainConfig
from gans.data import DataError, load_dataset, split_dataset
from gans.domains import downscale
from gans.evaluation import train_classifier
from gans.families import FAMILIES, build_trainer
from gans.families.superres.evaluate import bicubic, luma, y_fidelity
from gans.families.superres.nets import SuperresSpec, build_discriminator, build_generator, vgg19_features
from gans.families.superres.recipe import PRESETS, resolve_superres
from pipeline.params import params_from_dict

from conftest import KillAt, state_differences, tiny_params

PAIRS = split_dataset(load_dataset(DataConfig(source="mnist5k", resolution=16, scale=4, max_images=120))[0], 0.1, 0)
CLASSIFIER = train_classifier(PAIRS[0].parts["hr"], epochs=1, seed=0, device=torch.device("cpu"))
NO_ADA = AugmentConfig(ada=ADAConfig(enabled=False))


def _png(path: Path, image: torch.Tensor) -> None:
    from torchvision.io import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(image, str(path))


# ---------------------------------------------------------------- data


def test_pairs_are_each_image_and_its_bicubic_downscale_kept_aligned_by_the_split() -> None:
    data, shipped = load_dataset(DataConfig(source="mnist5k", resolution=32, scale=4, max_images=60))
    assert shipped is None and data.layout == "superres"
    lr, hr = data.parts["lr"], data.parts["hr"]
    assert lr.images.shape == (60, 1, 8, 8) and hr.images.shape == (60, 1, 32, 32)
    assert torch.equal(lr.images, downscale(hr.images, 4)) and torch.equal(lr.labels, hr.labels)
    train, hold = split_dataset(data, 0.2, 0)
    assert torch.equal(train.parts["lr"].images, downscale(train.parts["hr"].images, 4))
    assert torch.equal(hold.parts["lr"].labels, hold.parts["hr"].labels) and len(hold.parts["lr"]) == 12
    # a flat image keeps its value; an edge is blurred, not aliased
    flat = torch.full((1, 1, 16, 16), 200, dtype=torch.uint8)
    assert torch.equal(downscale(flat, 2), torch.full((1, 1, 8, 8), 200, dtype=torch.uint8))


def test_a_folder_of_hr_and_lr_pairs_loads_and_bad_pairs_are_named(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        hr = torch.randint(0, 256, (3, 64, 48), generator=g, dtype=torch.uint8)
        _png(tmp_path / "set/HR" / f"{i}.png", hr)
        _png(tmp_path / "set/LR" / f"{i}.png", hr[:, ::2, ::2].contiguous())
    data, _ = load_dataset(DataConfig(source=f"superres:{tmp_path / 'set'}", resolution=32, scale=2))
    assert data.layout == "superres" and data.parts["hr"].images.shape == (4, 3, 32, 32)
    assert data.parts["lr"].images.shape == (4, 3, 16, 16) and data.parts["lr"].labels is None
    _png(tmp_path / "set/LR/4.png", torch.zeros(3, 10, 10, dtype=torch.uint8))
    with pytest.raises(DataError, match="4.png has no match in HR/"):
        load_dataset(DataConfig(source=f"superres:{tmp_path / 'set'}", resolution=32, scale=2))
    _png(tmp_path / "set/HR/4.png", torch.zeros(3, 30, 30, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"LR/4.png is 10x10 pixels and HR/4.png 30x30; with data.scale 2 the HR "
                                        r"image must be exactly 20x20"):
        load_dataset(DataConfig(source=f"superres:{tmp_path / 'set'}", resolution=32, scale=2))
    with pytest.raises(DataError, match="has no LR/ folder"):
        _png(tmp_path / "hr-only/HR/0.png", torch.zeros(1, 8, 8, dtype=torch.uint8))
        load_dataset(DataConfig(source=f"superres:{tmp_path / 'hr-only'}", resolution=16, scale=2))


@pytest.mark.parametrize("data, model, fragment", [
    ({"scale": 0}, {"variant": "srgan"}, "model.variant: srgan (superres) trains on super-resolution pairs"),
    ({"scale": 4}, {"variant": "dcgan"}, "but data.source 'digits' is super-resolution pairs"),
    ({"scale": 4, "source": "mnist5k-edges"}, {"variant": "srgan"}, "data.scale: super-resolution pairs are made from one"),
    ({"scale": 0, "source": "superres:x"}, {"variant": "srgan"}, "data.scale: 'superres:x' holds low- and high-"),
    ({"scale": 3}, {"variant": "srgan"}, "data.scale: got 3; expected 0 (off), 2, 4 or 8"),
    ({"scale": 8, "resolution": 16}, {"variant": "srgan"}, "leave low-resolution images of at least 4x4 pixels"),
    ({"scale": 4}, {"variant": "srgan", "overrides": {"content": "vgg19"}}, "model.overrides.vgg19_weights: content"),
    ({"scale": 4}, {"variant": "srgan", "overrides": {"content_weight": 0}}, "nothing ties the output to the"),
    ({"scale": 4}, {"variant": "esrgan", "overrides": {"generator": "edsr"}}, "model.overrides.generator: got 'edsr'"),
])
def test_params_that_cannot_make_a_super_resolution_run_are_refused(data: dict, model: dict, fragment: str) -> None:
    raw = tiny_params({"data": data, "model": model})
    raw["model"]["z_dim"] = 64
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        params_from_dict(raw).validate("params")


# ---------------------------------------------------------------- networks and metrics


@pytest.mark.parametrize("generator", ["srresnet", "rrdb"])
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_generators_upscale_by_the_scale_and_clamp_only_in_eval(generator: str, scale: int) -> None:
    spec = SuperresSpec(resolution=32, scale=scale, channels=3, width=8, generator=generator, g_blocks=1)
    g = build_generator(spec)
    x = torch.rand(2, 3, 32 // scale, 32 // scale) * 2 - 1
    assert g.train()(x).shape == (2, 3, 32, 32)
    with torch.no_grad():
        g.tail.bias.fill_(5.0)  # push the output out of range
        assert g.train()(x).max() > 1 and g.eval()(x).max() == 1.0
    assert build_discriminator(spec)(torch.zeros(3, 3, 32, 32)).shape == (3, 1)


def test_y_channel_psnr_follows_the_bt601_convention_with_the_border_cropped() -> None:
    assert luma(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)).flatten().tolist() == \
        pytest.approx([16 / 255, 235 / 255])
    rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert float(luma(rgb)) == pytest.approx((16 + 65.481) / 255)
    target = torch.full((3, 1, 24, 24), 100, dtype=torch.uint8)
    shifted = target + 10  # every grey level 10 up: Y moves by 219 / 255 * 10 / 255
    expected = -20 * math.log10(219 / 255 * 10 / 255)
    assert y_fidelity(shifted, target, 0)["psnr"] == pytest.approx(expected, rel=1e-6)
    border = target.clone()
    border[..., :4, :] = 0  # only the border differs: cropping 4 pixels makes them equal (capped at 100 dB)
    assert y_fidelity(border, target, 4) == {"psnr": 100.0, "ssim": pytest.approx(1.0)}
    assert y_fidelity(border, target, 0)["psnr"] < 20
    up = bicubic(torch.full((1, 1, 4, 4), 77, dtype=torch.uint8), 4)
    assert up.shape == (1, 1, 16, 16) and bool((up == 77).all())


# ---------------------------------------------------------------- presets, content network


def test_presets_follow_the_papers_and_overrides_are_checked() -> None:
    assert set(PRESETS) == {"srresnet", "srgan", "esrgan"}
    srgan, esrgan = PRESETS["srgan"], PRESETS["esrgan"]
    assert (srgan.adv_weight, srgan.content_layer, srgan.loss, srgan.blocks()) == (1e-3, "after", "non-saturating", 16)
    assert (esrgan.adv_weight, esrgan.pixel_weight, esrgan.content_layer, esrgan.loss, esrgan.blocks()) == \
        (5e-3, 1e-2, "before", "ragan", 23)
    assert not PRESETS["srresnet"].adversarial
    ok = resolve_superres(ModelConfig(variant="esrgan", overrides={"g_blocks": 2, "pretrain_steps": 0}))
    assert ok.blocks() == 2 and ok.pretrain_steps == 0
    with pytest.raises(ConfigError, match="model.overrides.pretrain_steps: got -1"):
        resolve_superres(ModelConfig(variant="srgan", overrides={"pretrain_steps": -1}))


def test_content_from_vgg19_weights_in_a_file_and_clear_errors_without_them(tmp_path: Path) -> None:
    from torchvision.models import vgg19

    torch.manual_seed(0)
    features = {f"features.{k}": v for k, v in vgg19().features.state_dict().items()}
    torch.save(features, tmp_path / "vgg19.pth")
    before = vgg19_features(str(tmp_path / "vgg19.pth"), before_activation=True)
    after = vgg19_features(str(tmp_path / "vgg19.pth"), before_activation=False)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    fb, fa = before(x), after(x)
    assert fb.shape == fa.shape == (2, 512, 2, 2) and torch.equal(fa, fb.relu()) and (fb < 0).any()
    with pytest.raises(ConfigError, match="does not exist; download https://download.pytorch.org/models/vgg19"):
        vgg19_features(str(tmp_path / "missing.pth"), before_activation=True)
    (tmp_path / "junk.pth").write_bytes(b"not weights")
    with pytest.raises(ConfigError, match="is not a PyTorch weights file"):
        vgg19_features(str(tmp_path / "junk.pth"), before_activation=True)
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="does not hold torchvision VGG19 weights"):
        vgg19_features(str(tmp_path / "other.pth"), before_activation=True)
    t = build_trainer(model=ModelConfig(variant="srgan", width=4, overrides={
        "g_blocks": 1, "pretrain_steps": 1, "content": "vgg19", "vgg19_weights": str(tmp_path / "vgg19.pth")}),
        train=TrainConfig(batch_size=4, steps=2, checkpoint_every=10, eval_every=0, sample_every=10), augment=NO_ADA,
        data=PAIRS[0], checkpoint_dir=tmp_path / "ck")
    t.fit()
    assert float(t.train_step()["loss_content"]) > 0


def test_domain_content_needs_the_evaluators_classifier(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="content: domain takes its features from the evaluator stage's classifier"):
        build_trainer(model=ModelConfig(variant="srgan", width=4), train=TrainConfig(steps=2000), augment=NO_ADA,
                      data=PAIRS[0], checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="model.overrides.pretrain_steps: the D phase starts at step 1000, and "
                                          "train.steps is 20"):
        build_trainer(model=ModelConfig(variant="srgan", width=4), train=TrainConfig(steps=20), augment=NO_ADA,
                      data=PAIRS[0], checkpoint_dir=tmp_path, features={"hr": CLASSIFIER}).fit()


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("variant", sorted(PRESETS))
def test_every_preset_trains_a_few_steps_and_upscales(variant: str, tmp_path: Path) -> None:
    t = build_trainer(model=ModelConfig(variant=variant, width=8, overrides={"g_blocks": 1, "pretrain_steps": 2}),
                      train=TrainConfig(batch_size=8, steps=4, checkpoint_every=4, log_every=1, sample_every=4,
                                        eval_every=0), augment=AugmentConfig(), data=PAIRS[0], preview=PAIRS[1],
                      checkpoint_dir=tmp_path, features={"hr": CLASSIFIER})
    result = t.fit()
    logged = [set(h) for h in result.history]
    assert "loss_pixel" in logged[0] and "loss_d" not in logged[0]  # step 1: the pixel phase
    if variant != "srresnet":
        assert {"loss_d", "loss_adv", "loss_content"} <= logged[-1]  # step 4: the GAN phases
        assert set(t.optimizers) == {"pixel", "G", "D"}
        steps = {name: int(opt.state_dict()["state"][0]["step"]) for name, opt in t.optimizers.items()}
        assert steps == {"pixel": 2, "G": 2, "D": 2}  # steps 0-1 in the pixel phase, 2-3 in the GAN phases
    else:
        assert all("loss_d" not in h for h in logged) and set(t.optimizers) == {"pixel"}
    artifact = FAMILIES["superres"].load_artifact(t.export(), "cpu")
    assert artifact.kind == "translate" and artifact.directions == ("x4",) and artifact.resolution == 4
    out = artifact.translate(PAIRS[1].parts["lr"].images[:3], "x4")
    assert out.shape == (3, 1, 16, 16) and out.dtype == torch.uint8
    assert t.sample_grid().shape == (3, 2 + 8 * 18, 2 + 4 * 18)  # input | bicubic | model | original


def test_a_run_killed_in_either_phase_resumes_in_the_right_phase_bit_identically(tmp_path: Path) -> None:
    """Killed in the pixel phase and again in the GAN phase: networks, EMA, all three optimisers (the pixel
    phase's Adam is kept, the GAN phases' start fresh at the switch), ADA's p, data order and RNGs come back."""
    train = TrainConfig(batch_size=8, steps=8, checkpoint_every=2, log_every=1, sample_every=100, eval_every=0)
    model = ModelConfig(variant="esrgan", width=4, overrides={"g_blocks": 1, "pretrain_steps": 3})
    augment = AugmentConfig(ada=ADAConfig(target=0.05, speed_kimg=0.2, interval=1))

    def trainer(folder: str, **kw):
        return build_trainer(model=model, train=train, augment=augment, data=PAIRS[0], checkpoint_dir=tmp_path / folder,
                             features={"hr": CLASSIFIER}, **kw)

    straight = trainer("straight")
    straight.fit()
    with pytest.raises(KeyboardInterrupt):
        trainer("killed", reporter=KillAt(3)).fit()  # after the checkpoint at step 2, in the pixel phase
    with pytest.raises(KeyboardInterrupt):
        trainer("killed", reporter=KillAt(7)).fit()  # resumed at 2, killed after the checkpoint at 6 (GAN phase)
    resumed = trainer("killed")
    assert resumed.fit().resumed_from == 6
    a, b = straight.state_dict(), resumed.state_dict()
    assert state_differences({k: v for k, v in a.items() if k != "extra"},
                             {k: v for k, v in b.items() if k != "extra"}) == []
    assert a["optimizers"]["pixel"]["state"] and a["optimizers"]["D"]["state"] and straight.ada_p > 0
