"""The multi-domain family (StarGAN): the bundled five-style digits and an attribute table from a folder, the
networks, the domain classifier the evaluator trains, a few training steps on one-of-K domains and on
multi-hot attributes, what a request's domain may say, and exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gans.config import AugmentConfig, ConfigError, DataConfig, ModelConfig, TrainConfig
from gans.data import DataError, Dataset, ImageSet, load_dataset, split_dataset
from gans.domains import STYLES, restyle
from gans.evaluation import DomainExtractor, accuracy, train_classifier
from gans.families import FAMILIES, build_trainer
from gans.families.multidomain.evaluate import targets_for
from gans.families.multidomain.nets import MultiDomainSpec, StarDiscriminator, StarGenerator
from gans.family import EvalContext

from conftest import KillAt, state_differences

STYLED = split_dataset(load_dataset(DataConfig(source="mnist5k-styles", resolution=16, max_images=150))[0], 0.2, 0)


def _multi_hot() -> tuple[Dataset, Dataset]:
    """The styled digits with two independent attributes: inverted, and outlined."""
    digits = load_dataset(DataConfig(source="mnist5k", resolution=16, max_images=120))[0].images
    g = torch.Generator().manual_seed(1)
    attrs = torch.randint(0, 2, (len(digits), 2), generator=g, dtype=torch.uint8)
    x = digits.images.clone()
    x[attrs[:, 0] == 1] = restyle(x[attrs[:, 0] == 1], "inverted")
    x[attrs[:, 1] == 1] = restyle(x[attrs[:, 1] == 1], "outlined")
    data = Dataset("attributes", {"images": ImageSet(x, digits.labels, digits.classes, attrs, ("inverted", "outlined"))})
    return split_dataset(data, 0.2, 0)


def test_the_bundled_styles_are_one_of_five_domains_with_the_digit_kept() -> None:
    data, _ = load_dataset(DataConfig(source="mnist5k-styles", resolution=16, max_images=100))
    part = data.parts["images"]
    assert data.layout == "attributes" and part.attribute_names == STYLES and part.exclusive
    assert part.attributes.shape == (100, 5) and part.labels is not None
    digits = load_dataset(DataConfig(source="mnist5k", resolution=16, max_images=100))[0].images
    for k, style in enumerate(STYLES):  # every image is its digit in its style
        rows = part.attributes[:, k] == 1
        assert torch.equal(part.images[rows], restyle(digits.images[rows], style))
    assert restyle(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), "inverted").unique().tolist() == [255]
    round_trip = Dataset.from_dict(data.to_dict()).parts["images"]
    assert torch.equal(round_trip.attributes, part.attributes) and round_trip.attribute_names == STYLES


def test_an_attribute_table_loads_multi_hot_and_bad_tables_are_named(tmp_path: Path) -> None:
    from torchvision.io import write_png

    root = tmp_path / "faces"
    (root / "img").mkdir(parents=True)
    for i in range(3):
        write_png(torch.full((3, 20, 20), 40 * i, dtype=torch.uint8), str(root / f"img/{i}.png"))
    (root / "attributes.csv").write_text("file,smiling,glasses\nimg/0.png,1,-1\nimg/1.png,0,1\nimg/2.png,1,1\n")
    data, _ = load_dataset(DataConfig(source=f"attributes:{root}", resolution=16))
    part = data.parts["images"]
    assert part.attribute_names == ("smiling", "glasses") and not part.exclusive and part.labels is None
    assert part.attributes.tolist() == [[1, 0], [0, 1], [1, 1]] and part.images.shape == (3, 3, 16, 16)
    for table, fragment in [("file,a\nimg/0.png,2\n", "line 2: attribute values must be 0 or 1"),
                            ("file,a,b\nimg/0.png,1\n", "line 2: 2 cells; the header has 3"),
                            ("file,a\nimg/9.png,1\n", "'img/9.png' is not a file"),
                            ("file,a,a\nimg/0.png,1,0\n", "attribute names must be distinct")]:
        (root / "attributes.csv").write_text(table)
        with pytest.raises(DataError, match=fragment):
            load_dataset(DataConfig(source=f"attributes:{root}", resolution=16))
    (root / "attributes.csv").unlink()
    with pytest.raises(DataError, match="has no attributes.csv"):
        load_dataset(DataConfig(source=f"attributes:{root}", resolution=16))


def test_networks_condition_on_the_target_and_d_has_two_heads() -> None:
    spec = MultiDomainSpec(resolution=32, channels=3, domains=("a", "b", "c"), exclusive=True, width=4, g_blocks=1)
    g, d = StarGenerator(spec).eval(), StarDiscriminator(spec)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    to_a, to_b = g(x, torch.tensor([[1.0, 0, 0]] * 2)), g(x, torch.tensor([[0.0, 1, 0]] * 2))
    assert to_a.shape == x.shape and not torch.allclose(to_a, to_b)
    src, cls = d(x)
    assert src.shape == (2, 1, 2, 2) and cls.shape == (2, 3)


def test_the_evaluators_domain_classifier_learns_one_of_k_and_multi_hot() -> None:
    train, hold = STYLED
    model = train_classifier(train.parts["images"], epochs=12, seed=0, device=torch.device("cpu"), attributes=True)
    assert model.num_classes == 5
    assert accuracy(model, hold.parts["images"], device=torch.device("cpu"), attributes=True) > 0.5
    train, hold = _multi_hot()
    model = train_classifier(train.parts["images"], epochs=12, seed=0, device=torch.device("cpu"), attributes=True)
    assert accuracy(model, hold.parts["images"], device=torch.device("cpu"), attributes=True) > 0.6


def _trainer(data: tuple[Dataset, Dataset], folder: Path, steps: int = 3, overrides: dict | None = None, **kw):
    overrides = {"g_blocks": 1, "n_critic": 2, **(overrides or {})}
    return build_trainer(model=ModelConfig(variant="stargan", width=4, overrides=overrides),
                         train=TrainConfig(batch_size=8, steps=steps, checkpoint_every=2, log_every=1, sample_every=100,
                                           eval_every=0), augment=AugmentConfig(), data=data[0], preview=data[1],
                         checkpoint_dir=folder, **kw)


def test_stargan_trains_on_one_of_k_domains_and_evaluates_per_domain(tmp_path: Path) -> None:
    t = _trainer(STYLED, tmp_path)
    result = t.fit()
    assert {"loss_d", "loss_d_cls", "grad_norm", "loss_g_cls", "loss_rec"} <= set(result.history[-1])
    assert "loss_id" not in result.history[-1]  # the paper's loss has no identity term
    artifact = FAMILIES["multidomain"].load_artifact(t.export(), "cpu")
    assert artifact.kind == "translate" and artifact.target_column == "domain" and artifact.directions == STYLES
    assert artifact.translate(STYLED[1].parts["images"].images[:2], "inverted").shape == (2, 1, 16, 16)
    assert t.sample_grid().shape == (3, 2 + 8 * 18, 2 + 6 * 18)  # input | five domains
    hold = STYLED[1]
    clf = train_classifier(STYLED[0].parts["images"], epochs=1, seed=0, device=torch.device("cpu"))
    dom = train_classifier(STYLED[0].parts["images"], epochs=1, seed=0, device=torch.device("cpu"), attributes=True)
    ext = DomainExtractor(clf, torch.device("cpu"))
    real = ext.extract(hold.parts["images"].images, batch_size=50)
    ctx = EvalContext(holdout=hold, extractors={"images": ext},
                      classifiers={"images": ext, "attributes": DomainExtractor(dom, torch.device("cpu"))},
                      real_features=lambda part: real, device=torch.device("cpu"), batch_size=50, num_samples=30)
    metrics, grid = FAMILIES["multidomain"].evaluate(artifact, ctx)
    for key in ("fid", "target_accuracy", "label_preservation", "reconstruction_error", "fid_inverted",
                "target_accuracy_thin", "label_preservation_outlined"):
        assert key in metrics, key
    assert metrics["domains"] == list(STYLES) and metrics["exclusive"] is True and metrics["num_samples"] == 30
    assert metrics["fid"] == pytest.approx(sum(metrics[f"fid_{s}"] for s in STYLES) / 5)
    assert 0 <= metrics["target_accuracy"] <= 1 and grid.shape[0] == 3


def test_stargan_trains_on_multi_hot_attributes(tmp_path: Path) -> None:
    data = _multi_hot()
    t = _trainer(data, tmp_path, overrides={"id_weight": 5.0})  # with the optional identity term
    last = t.fit().history[-1]
    assert 0 < last["loss_id"] < float("inf")
    artifact = FAMILIES["multidomain"].load_artifact(t.export(), "cpu")
    assert not artifact.exclusive and artifact.target_of("inverted+outlined").tolist() == [1, 1]
    assert artifact.target_of("none").tolist() == [0, 0] and artifact.target_of("01").tolist() == [0, 1]
    c = torch.tensor([[1, 0], [0, 1]], dtype=torch.uint8)
    assert targets_for(c, 0, exclusive=False).tolist() == [[0, 0], [1, 1]]  # attribute 0 flipped
    assert targets_for(c, 1, exclusive=True).tolist() == [[0, 1], [0, 1]]


def test_a_requests_domain_is_a_name_or_a_vector_and_anything_else_is_refused(tmp_path: Path) -> None:
    t = _trainer(STYLED, tmp_path, steps=1)
    t.fit()
    artifact = FAMILIES["multidomain"].load_artifact(t.export(), "cpu")
    assert artifact.target_of("thick").tolist() == [0, 0, 0, 1, 0] == artifact.target_of("00010").tolist()
    with pytest.raises(ValueError, match=r"names no domain this model knows \('sideways'\); known: original, "
                                         r"inverted, outlined, thick, thin, or a 0/1 vector of 5 digits"):
        artifact.target_of("sideways")
    with pytest.raises(ValueError, match="must name exactly one domain"):
        artifact.target_of("thick+thin")


def test_wrong_data_for_stargan_is_refused(tmp_path: Path) -> None:
    pairs = split_dataset(load_dataset(DataConfig(source="mnist5k-edges", resolution=16, max_images=40))[0], 0.2, 0)
    with pytest.raises(ConfigError, match=r"stargan \(multidomain\) trains on images with domains or attributes"):
        _trainer(pairs, tmp_path)
    one = Dataset("attributes", {"images": ImageSet(STYLED[0].parts["images"].images, None, (),
                                                    STYLED[0].parts["images"].attributes[:, :1], ("x",))})
    with pytest.raises(ConfigError, match="needs at least two domains"):
        _trainer((one, one), tmp_path)


def test_stargan_killed_after_a_checkpoint_resumes_bit_identically(tmp_path: Path) -> None:
    straight = _trainer(STYLED, tmp_path / "straight", steps=4)
    straight.fit()
    with pytest.raises(KeyboardInterrupt):
        _trainer(STYLED, tmp_path / "killed", steps=4, reporter=KillAt(3)).fit()
    resumed = _trainer(STYLED, tmp_path / "killed", steps=4)
    assert resumed.fit().resumed_from == 2
    a, b = straight.state_dict(), resumed.state_dict()
    assert state_differences({k: v for k, v in a.items() if k != "extra"},
                             {k: v for k, v in b.items() if k != "extra"}) == []
