"""The semi-supervised family: the labelled subset (reproducible, exactly the asked number per class), the
held-back labels never reaching training, every preset training a few steps with finite losses, the
baseline beside it, the artifact's probabilities and confusion matrix, and exact resume of Triple-GAN's
three players (and its pseudo-label counter)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gans.config import ADAConfig, AugmentConfig, ConfigError, DataConfig, ModelConfig, TrainConfig
from gans.data import DataError, Dataset, ImageSet, keep_labels, load_dataset, split_dataset
from gans.families import FAMILIES, build_trainer, resolve
from gans.families.semisup import confusion
from gans.families.semisup.recipe import PRESETS

from conftest import KillAt, state_differences

TRAIN, HOLDOUT = split_dataset(load_dataset(DataConfig(source="digits", resolution=8, max_images=300))[0], 0.2, 0)
NO_ADA = AugmentConfig(ada=ADAConfig(enabled=False))
FEW = TrainConfig(batch_size=16, steps=4, checkpoint_every=100, log_every=1, sample_every=100, eval_every=0)


def _some_labels(per_class: int = 3, seed: int = 0) -> Dataset:
    return Dataset.single(keep_labels(TRAIN.images, per_class, seed))


def test_the_labelled_subset_is_reproducible_and_exact_per_class() -> None:
    a, b, other = (keep_labels(TRAIN.images, 3, s) for s in (0, 0, 1))
    assert torch.equal(a.known, b.known)
    assert not torch.equal(a.known, other.known)
    counts = torch.bincount(a.labels[a.known], minlength=len(a.classes))
    assert counts.tolist() == [3] * len(a.classes)
    assert len(a) == len(TRAIN.images)  # every image stays, unlabelled
    assert a.content_hash() != other.content_hash() != TRAIN.images.content_hash()
    again = ImageSet.from_dict(a.to_dict())
    assert torch.equal(again.known, a.known) and again.partly_labelled


def test_asking_for_more_labels_than_a_class_has_names_the_class() -> None:
    smallest = int(torch.bincount(TRAIN.images.labels).min())
    with pytest.raises(DataError, match=r"class '\d' has \d+ training images, fewer than"):
        keep_labels(TRAIN.images, smallest + 1, 0)
    with pytest.raises(DataError, match="needs labelled data"):
        keep_labels(ImageSet(TRAIN.images.images, None, ()), 3, 0)


def test_other_families_refuse_a_partly_labelled_set(tmp_path: Path) -> None:
    for variant in ("dcgan", "cgan", "pixelcnn"):
        with pytest.raises(ConfigError, match="data.labels_per_class: .*improvedgan, catgan, triplegan"):
            build_trainer(model=ModelConfig(variant=variant, width=8), train=FEW, augment=NO_ADA,
                          data=_some_labels(), checkpoint_dir=tmp_path / variant)


def _train(variant: str, data: Dataset, folder: Path, **kw):
    model = ModelConfig(variant=variant, width=8, z_dim=8, overrides=kw.pop("overrides", {}))
    trainer = build_trainer(model=model, train=kw.pop("train", FEW), augment=NO_ADA, data=data, checkpoint_dir=folder,
                            **kw)
    return trainer, trainer.fit()


@pytest.mark.parametrize("variant", list(PRESETS))
def test_each_preset_trains_with_finite_losses_and_ignores_held_back_labels(variant: str, tmp_path: Path) -> None:
    """Two runs whose held-back labels differ (shuffled) end with identical weights: only the known labels
    reach the losses. The artifact classifies into probabilities that sum to 1, and draws samples."""
    data = _some_labels()
    part = data.images
    shuffled = part.labels.clone()
    unknown = (~part.known).nonzero().flatten()
    shuffled[unknown] = shuffled[unknown[torch.randperm(len(unknown), generator=torch.Generator().manual_seed(0))]]
    assert not torch.equal(shuffled, part.labels)
    other = Dataset.single(ImageSet(part.images, shuffled, part.classes, known=part.known))
    trainer, result = _train(variant, data, tmp_path / "a")
    twin, _ = _train(variant, other, tmp_path / "b")
    last = result.history[-1]
    for key in ("loss_d", "loss_g", "loss_baseline"):
        assert torch.isfinite(torch.tensor(last[key])), key
    a, b = trainer.state_dict(), twin.state_dict()
    assert state_differences({k: v for k, v in a.items() if k != "extra"},
                             {k: v for k, v in b.items() if k != "extra"}) == []
    artifact = FAMILIES["semi-supervised"].load_artifact(trainer.export(), "cpu")
    probabilities = artifact.classify(HOLDOUT.images.images[:20])
    assert probabilities.shape == (20, 10)
    assert torch.allclose(probabilities.sum(1), torch.ones(20), atol=1e-5)
    labels = list(range(4)) if artifact.num_classes else None
    assert artifact.generate([0, 1, 2, 3], labels).shape == (4, 1, 8, 8)
    assert artifact.num_classes == (10 if variant == "triplegan" else 0)


def test_the_baseline_learns_from_the_known_labels_alone(tmp_path: Path) -> None:
    """Training the baseline phase changes B from its initialisation, and B's weights do not depend on the
    unlabelled stream: a run whose unlabelled images are replaced by noise ends with the same baseline."""
    data = _some_labels()
    part = data.images
    noise = torch.randint(0, 256, part.images.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    known = part.known
    mixed = torch.where(known[:, None, None, None], part.images, noise)
    other = Dataset.single(ImageSet(mixed, part.labels, part.classes, known=known))
    a, _ = _train("improvedgan", data, tmp_path / "a")
    b, _ = _train("improvedgan", other, tmp_path / "b")
    nets_a, nets_b = a.state_dict(), b.state_dict()
    assert state_differences(nets_a["B"], nets_b["B"]) == []
    assert state_differences(nets_a["D"], nets_b["D"]) != []  # the GAN's classifier does see the unlabelled images


def test_confusion_counts_rows_by_actual_class() -> None:
    actual, predicted = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 2])
    assert confusion(actual, predicted, 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_preset_checks_name_the_key() -> None:
    for overrides, key in (({"alpha": 1.5}, "alpha"), ({"dropout": 1.0}, "dropout"), ({"pseudo_start": -1}, "pseudo_start"),
                           ({"labelled_weight": -1}, "labelled_weight"), ({"lr_d": 0}, "lr_d")):
        with pytest.raises(ConfigError, match=f"model.overrides.{key}"):
            resolve(ModelConfig(variant="triplegan", overrides=overrides))


def test_unlabelled_data_is_refused(tmp_path: Path) -> None:
    data = Dataset.single(ImageSet(TRAIN.images.images, None, ()))
    with pytest.raises(ConfigError, match="needs labelled data"):
        _train("catgan", data, tmp_path)


def test_triplegan_resumes_bit_identically_with_its_pseudo_label_counter(tmp_path: Path) -> None:
    """Killed after the checkpoint at step 2, the run resumes there with the three players, their optimisers
    and the classifier-update counter: the pseudo-label term starts at the same update as in the straight
    run (pseudo_start 3), so the weights end equal."""
    train = TrainConfig(batch_size=16, steps=6, checkpoint_every=2, log_every=1, sample_every=100, eval_every=0)
    overrides = {"pseudo_start": 3}
    data = _some_labels()
    straight, _ = _train("triplegan", data, tmp_path / "straight", train=train, overrides=overrides)
    with pytest.raises(KeyboardInterrupt):
        _train("triplegan", data, tmp_path / "killed", train=train, overrides=overrides, reporter=KillAt(3))
    resumed, result = _train("triplegan", data, tmp_path / "killed", train=train, overrides=overrides)
    assert result.resumed_from == 2
    assert "loss_pseudo" in result.history[-1]
    a, b = straight.state_dict(), resumed.state_dict()
    assert state_differences({k: v for k, v in a.items() if k != "extra"},
                             {k: v for k, v in b.items() if k != "extra"}) == []


@pytest.mark.parametrize("variant", ["improvedgan", "triplegan"])
def test_the_papers_mlp_networks_train_and_load(variant: str, tmp_path: Path) -> None:
    """architecture: mlp (Salimans et al.'s MNIST classifier, MLP generator and pair discriminator)."""
    trainer, result = _train(variant, _some_labels(), tmp_path, overrides={"architecture": "mlp"})
    assert all(torch.isfinite(torch.tensor(v)) for v in result.history[-1].values())
    artifact = FAMILIES["semi-supervised"].load_artifact(trainer.export(), "cpu")
    assert artifact.classify(HOLDOUT.images.images[:5]).shape == (5, 10)
    assert artifact.generate([0, 1], [0, 1] if artifact.num_classes else None).shape == (2, 1, 8, 8)
    with pytest.raises(ConfigError, match="model.overrides.architecture: got 'resnet'; allowed values: conv, mlp"):
        resolve(ModelConfig(variant=variant, overrides={"architecture": "resnet"}))


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_data_init_gives_every_weight_normalised_unit_zero_mean_and_unit_std(arch: str) -> None:
    """Classifier.data_init (Salimans and Kingma 2016): on the batch it saw, the pre-activation of every unit
    of every weight-normalised layer, head included, has mean 0 and std 1 (without the training noise)."""
    from gans.families.semisup.nets import Classifier, ClassifierSpec

    torch.manual_seed(0)
    net = Classifier(ClassifierSpec(1, 8, 8, 10, arch=arch)).train()
    x = TRAIN.images.images[:64].float() / 127.5 - 1
    outputs: list[torch.Tensor] = []
    layers = [m for m in [*net.body, net.head] if hasattr(m, "parametrizations")]
    # a copy: the in-place ReLU after each layer overwrites its output
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.clone())) for m in layers]
    net.eval()
    net(x)
    assert any(o.std() < 0.5 for o in outputs)  # the default initialisation shrinks the signal
    net.train()
    net.data_init(x)
    assert net.training
    outputs.clear()
    net.eval()
    net(x)
    for hook in hooks:
        hook.remove()
    assert len(outputs) == len(layers) >= 3
    for out in outputs:
        dims = [0] + list(range(2, out.dim()))
        assert torch.allclose(out.mean(dims), torch.zeros(out.shape[1]), atol=1e-4)
        assert torch.allclose(out.std(dims), torch.ones(out.shape[1]), atol=1e-3)


def test_improvedgan_resumes_bit_identically_without_initialising_again(tmp_path: Path) -> None:
    """The data-dependent initialisation runs once, on the first batch: a run killed after the checkpoint at
    step 2 resumes with the trained weights, not re-initialised ones, and ends equal to the straight run."""
    assert PRESETS["improvedgan"].data_init
    train = TrainConfig(batch_size=16, steps=4, checkpoint_every=2, log_every=1, sample_every=100, eval_every=0)
    data = _some_labels()
    straight, _ = _train("improvedgan", data, tmp_path / "straight", train=train)
    with pytest.raises(KeyboardInterrupt):
        _train("improvedgan", data, tmp_path / "killed", train=train, reporter=KillAt(3))
    resumed, result = _train("improvedgan", data, tmp_path / "killed", train=train)
    assert result.resumed_from == 2
    a, b = straight.state_dict(), resumed.state_dict()
    assert state_differences({k: v for k, v in a.items() if k != "extra"},
                             {k: v for k, v in b.items() if k != "extra"}) == []
