"""The PixelCNN family: causal masks without a blind spot, the sampler's row and column windows, per-seed
sampling, presets and their checks, and likelihood training (bits per dimension finite and falling), with
exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gans.config import ADAConfig, AugmentConfig, ConfigError, DataConfig, ModelConfig, TrainConfig
from gans.data import load_dataset, split_dataset
from gans.families import FAMILIES, build_trainer, family_of, resolve
from gans.families.pixelcnn.nets import PixelCNN, PixelSpec, sample, stepwise_logits, to_input, uniforms
from gans.families.pixelcnn.recipe import PRESETS, resolve_pixelcnn

from conftest import KillAt, state_differences

DIGITS = split_dataset(load_dataset(DataConfig(source="digits", resolution=8, max_images=200))[0], 0.2, 0)
NO_ADA = AugmentConfig(ada=ADAConfig(enabled=False))


def _net(channels: int = 1, classes: int = 0, layers: int = 3, kernel: int = 3, r: int = 10) -> PixelCNN:
    torch.manual_seed(0)
    net = PixelCNN(PixelSpec(channels=channels, resolution=r, width=12, layers=layers, kernel=kernel,
                             num_classes=classes)).eval()
    with torch.no_grad():  # random biases too, so a zero input does not hide a connection
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net


def _changed(net: PixelCNN, x: torch.Tensor, at: tuple[int, int, int], labels: torch.Tensor | None = None) -> torch.Tensor:
    """(C, H, W) bool: which logits change when the value of channel, row, column ``at`` changes."""
    c, i, j = at
    y = x.clone()
    y[:, c, i, j] = 255 - y[:, c, i, j]
    with torch.no_grad():
        d = (net(to_input(x), labels) - net(to_input(y), labels)).abs().amax(dim=(0, 1))
    return d > 1e-6


@pytest.mark.parametrize("channels,classes", [(1, 0), (3, 4)])
def test_masks_are_causal_in_raster_and_channel_order(channels: int, classes: int) -> None:
    """Changing one value changes no logit of an earlier pixel, nor of an earlier channel of the same pixel,
    nor its own; and it does reach the next pixel and the pixel below (the dependencies are really there)."""
    net = _net(channels, classes)
    x = torch.randint(0, 256, (2, channels, 10, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1, 3]) if classes else None
    for at in [(0, 4, 5), (channels - 1, 0, 0), (0, 9, 9), (channels - 1, 6, 0)]:
        changed = _changed(net, x, at, labels)  # (C, H, W)
        order = changed.permute(1, 2, 0).reshape(-1)  # raster order, channels within a pixel
        c, i, j = at
        position = (i * 10 + j) * channels + c
        assert not order[:position + 1].any(), at  # nothing before it, itself included
        if j + 1 < 10:
            assert changed[:, i, j + 1].all(), at
        if i + 1 < 10:
            assert changed[:, i + 1, j].all(), at
        if c + 1 < channels:
            assert changed[c + 1:, i, j].all(), at  # later channels of the same pixel see it


def test_no_blind_spot_the_pixel_above_and_right_is_seen() -> None:
    """The plain PixelCNN's stacked masks never see a wedge above and to the right; the two stacks do."""
    net = _net(layers=4)
    x = torch.randint(0, 256, (1, 1, 10, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    for above_right in [(0, 4, 7), (0, 3, 8)]:
        assert _changed(net, x, above_right)[0, 5, 5], above_right


@pytest.mark.parametrize("channels,classes,layers,kernel", [(1, 0, 3, 3), (3, 4, 2, 5), (1, 0, 5, 3)])
def test_the_samplers_windows_give_the_full_networks_logits(channels: int, classes: int, layers: int,
                                                            kernel: int) -> None:
    """Sampling runs the vertical stack on a band of rows and the horizontal stack on a window of columns;
    the logits it gets are those of the whole network on the whole image."""
    net = _net(channels, classes, layers, kernel, r=12)
    x = torch.randint(0, 256, (2, channels, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 2]) if classes else None
    with torch.no_grad():
        full = net(to_input(x), labels)
    for i, j in [(0, 0), (0, 11), (5, 3), (11, 0), (11, 11), (8, 7)]:
        assert torch.allclose(stepwise_logits(net, x, labels, i, j), full[..., i, j], atol=1e-5), (i, j)


def test_a_seeds_image_does_not_depend_on_the_batch_and_labels_are_required() -> None:
    net = _net(1, 3, r=6)
    a = sample(net, uniforms([5, 6, 7], (1, 6, 6)), torch.tensor([0, 1, 2]))
    b = sample(net, uniforms([7], (1, 6, 6)), torch.tensor([2]))
    assert a.dtype == torch.uint8 and a.shape == (3, 1, 6, 6) and torch.equal(a[2:], b)
    assert not torch.equal(a[0], a[1])
    with pytest.raises(ValueError, match="class-conditional: labels are required"):
        sample(net, uniforms([1], (1, 6, 6)))


def test_presets_and_their_checks() -> None:
    assert set(PRESETS) == {"pixelcnn", "cpixelcnn"} and family_of("cpixelcnn").name == "pixelcnn"
    assert PRESETS["cpixelcnn"].conditional and not PRESETS["pixelcnn"].conditional
    for overrides, fragment in [({"kernel": 4}, "model.overrides.kernel: got 4; expected an odd size >= 3"),
                                ({"layers": 0}, "model.overrides.layers: got 0; expected >= 1"),
                                ({"lr_g": 0.0}, "model.overrides.lr_g: got 0.0; expected > 0"),
                                ({"depth": 3}, "model.overrides")]:
        with pytest.raises(ConfigError, match=fragment):
            resolve_pixelcnn(ModelConfig(variant="pixelcnn", overrides=overrides))
    with pytest.raises(ConfigError, match="model.z_dim: the pixelcnn family"):
        resolve(ModelConfig(variant="pixelcnn", z_dim=8))


def test_a_class_conditional_pixelcnn_needs_labels(tmp_path: Path) -> None:
    unlabelled = DIGITS[0].images.__class__(DIGITS[0].images.images, None, ())
    with pytest.raises(ConfigError, match="cpixelcnn is class-conditional and needs labelled data"):
        build_trainer(model=ModelConfig(variant="cpixelcnn", width=8), train=TrainConfig(batch_size=8, steps=2),
                      augment=NO_ADA, data=unlabelled, checkpoint_dir=tmp_path)


@pytest.mark.parametrize("variant", sorted(PRESETS))
def test_bits_per_dim_is_finite_and_falls_over_training(variant: str, tmp_path: Path) -> None:
    def trainer(steps: int):
        return build_trainer(model=ModelConfig(variant=variant, width=12, overrides={"layers": 3}),
                             train=TrainConfig(batch_size=32, steps=steps, checkpoint_every=steps, log_every=1,
                                               sample_every=1000, eval_every=0, ema_kimg=0),
                             augment=AugmentConfig(), data=DIGITS[0], checkpoint_dir=tmp_path / str(steps))

    holdout = DIGITS[1].images
    bits = {}
    for steps in (1, 60):
        t = trainer(steps)
        result = t.fit()
        artifact = FAMILIES["pixelcnn"].load_artifact(t.export(), "cpu")
        labels = holdout.labels if artifact.num_classes else None
        bits[steps] = float(artifact.bits_per_dim(holdout.images, labels).mean())
        assert all(torch.isfinite(torch.tensor(h["loss_g"])) for h in result.history)
    assert 0 < bits[60] < bits[1] - 1.0, bits  # from about 8 bits (uniform over 256 values) down
    assert artifact.kind == "generate" and artifact.z_dim == 0 and artifact.graphs() == []
    drawn = artifact.generate([0, 1, 2], [0, 1, 2] if artifact.num_classes else None)
    assert drawn.shape == (3, 1, 8, 8) and drawn.dtype == torch.uint8
    assert "pixel by pixel" in artifact.describe()["sampling"]


def test_a_killed_run_resumes_bit_identically(tmp_path: Path) -> None:
    train = TrainConfig(batch_size=16, steps=6, checkpoint_every=2, log_every=1, sample_every=100, eval_every=0)
    model = ModelConfig(variant="cpixelcnn", width=8, overrides={"layers": 2})

    def trainer(folder: str, **kw):
        return build_trainer(model=model, train=train, augment=NO_ADA, data=DIGITS[0], checkpoint_dir=tmp_path / folder,
                             **kw)

    straight = trainer("straight")
    straight.fit()
    with pytest.raises(KeyboardInterrupt):
        trainer("killed", reporter=KillAt(3)).fit()
    resumed = trainer("killed")
    assert resumed.fit().resumed_from == 2
    a, b = straight.state_dict(), resumed.state_dict()
    assert state_differences({k: v for k, v in a.items() if k != "extra"},
                             {k: v for k, v in b.items() if k != "extra"}) == []
