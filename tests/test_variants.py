"""Every preset through the real train stage; architectures at every supported size."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest
import torch

from gans.config import AugmentConfig, ConfigError, DataConfig, ModelConfig, TrainConfig
from gans.data import load_source
from gans.families import build_trainer
from gans.families.noise import load_generator
from gans.families.noise.nets import ARCHITECTURES, NetSpec, build_networks
from gans.sampling import generate
from gans.families.noise.variants import PRESETS, resolve_variant
from pipeline import stages
from pipeline.params import params_from_dict

from conftest import tiny_params


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared and augmented tiny data, made once for every preset."""
    root = tmp_path_factory.mktemp("variants")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    params = params_from_dict(tiny_params({"data": {"max_images": 300}}))
    stages.prepare(params)
    stages.augment(params)
    mp.undo()
    return root


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite store with its tables made (that takes seconds; a copy of the file is instant)."""
    import mlflow

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(empty_store: Path, tmp_path: Path) -> Path:
    """This test's own MLflow store (no test sees another's runs)."""
    path = tmp_path / "mlflow.db"
    shutil.copy(empty_store, path)
    return path


def _params(store: Path, variant: str, **model):
    """Tiny train params for ``variant``, tracked in ``store`` (each test's own sqlite file)."""
    raw = tiny_params({"model": {"variant": variant, "width": 8, "z_dim": 8, **model},
                       "train": {"steps": 3, "batch_size": 16, "log_every": 1, "sample_every": 3, "checkpoint_every": 3,
                                 "eval_every": 0},
                       "tracking": {"uri": f"sqlite:///{store}"}})
    return params_from_dict(raw)


@pytest.mark.parametrize("variant", list(PRESETS))
def test_every_preset_trains_through_the_train_stage(variant: str, workspace: Path, store: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(workspace / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    result = stages.train(_params(store, variant))
    assert result["steps"] == 3 and result["variant"] == variant and result["run_id"]
    rows = (tmp_path / "plots/train.csv").read_text().splitlines()[1:]
    assert len(rows) == 3
    for row in rows:
        assert all(math.isfinite(float(x)) for x in row.split(",") if x), row
    g, payload = load_generator(tmp_path / "models/generator.pt")
    labels = [0, 1, 2, 3] if payload["spec"]["num_classes"] else None
    images = generate(g, [0, 1, 2, 3], labels, z_dim=8, device=torch.device("cpu"))
    assert images.shape == (4, 1, 16, 16)
    import mlflow

    run = mlflow.MlflowClient(f"sqlite:///{store}").get_run(result["run_id"])
    assert run.data.tags["variant"] == variant
    assert run.data.tags["component.architecture"] == PRESETS[variant].architecture


DIGITS = load_source(DataConfig(source="digits", resolution=16, max_images=200))


def _trained(variant: str, data, checkpoint_dir: Path):
    """A trainer of ``variant`` after 3 steps on ``data`` (seeded: the same inputs give the same weights)."""
    t = build_trainer(model=ModelConfig(variant=variant, width=8, z_dim=8), data=data, checkpoint_dir=checkpoint_dir,
                      train=TrainConfig(batch_size=16, steps=3, checkpoint_every=3, log_every=3, sample_every=3,
                                        eval_every=0), augment=AugmentConfig())
    t.fit()
    return t


@pytest.mark.parametrize("variant", ["cgan", "cls-gan", "acgan", "cdcgan", "infogan"])
def test_conditional_presets_give_label_dependent_samples_and_train_on_their_labels(
        variant: str, workspace: Path, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(workspace / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    stages.train(_params(store, variant))
    g, _ = load_generator(tmp_path / "models/generator.pt")
    images = generate(g, [5] * 10, list(range(10)), z_dim=8, device=torch.device("cpu"))
    distinct = {bytes(img.numpy().tobytes()) for img in images}
    assert len(distinct) == 10
    # An untrained G answers per label too; training must carry the labels' signal. Same seed and images,
    # every label moved to the next class: the labelled presets end elsewhere; InfoGAN, whose categories
    # are its own codes, ends bit for bit where it did (the control: the runs are deterministic).
    relabelled = dataclasses.replace(DIGITS, labels=(DIGITS.labels + 1) % len(DIGITS.classes))
    t = _trained(variant, DIGITS, tmp_path / "a")
    a, b = t.ema["G_ema"].state_dict(), _trained(variant, relabelled, tmp_path / "b").ema["G_ema"].state_dict()
    same = all(torch.equal(a[k], b[k]) for k in a)
    assert same is not PRESETS[variant].conditional, \
        f"relabelling the data {'changed nothing' if same else 'changed the weights'} in {variant}"
    if variant == "infogan":  # its codes' signal: Q, which no other term reads, gets a gradient from a D step
        t.recipe.loss("D", t._next_batch())[0].backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in t.nets["D"].q.parameters())


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
@pytest.mark.parametrize("resolution, channels", [(28, 1), (32, 3), (64, 1)])
def test_architectures_build_every_size(architecture: str, resolution: int, channels: int) -> None:
    spec = NetSpec(channels=channels, resolution=resolution, z_dim=8, width=8, num_classes=3,
                   conditioning="projection", d_norm="none", attention_res=resolution // 2)
    g, d = build_networks(architecture, spec)
    x = g(torch.randn(2, 8), torch.tensor([0, 2]))
    assert x.shape == (2, channels, resolution, resolution) and x.abs().max() <= 1
    assert d(x, torch.tensor([0, 2])).shape == (2,)


def test_sagan_has_attention_and_spectral_norm_in_both_networks() -> None:
    from gans.families.noise import build_spec
    from gans.families.noise.nets import SelfAttention

    v = resolve_variant(ModelConfig(variant="sagan"))
    spec = build_spec(v, ModelConfig(variant="sagan", width=8), channels=1, resolution=32, data_classes=0)
    g, d = build_networks("sagan", spec)
    for net in (g, d):
        assert any(isinstance(m, SelfAttention) for m in net.modules())
        assert any("parametrizations" in name for name, _ in net.named_modules())


def test_biggan_feeds_each_block_its_own_piece_of_z_and_the_shared_class_embedding() -> None:
    from gans.families.noise import build_objective, build_spec
    from gans.families.noise.nets import ConditionalBatchNorm, SelfAttention
    from gans.families.noise.objective import orthogonal_penalty
    from gans.latent import z_weight

    v = resolve_variant(ModelConfig(variant="biggan"))
    spec = build_spec(v, ModelConfig(variant="biggan", width=4, z_dim=9), channels=1, resolution=32, data_classes=3)
    g, d = build_networks("biggan", spec)
    assert g.body.split == [3, 2, 2, 2]  # four pieces: the first layer and three up-blocks (4 -> 32)
    with pytest.raises(ConfigError, match="model.z_dim: biggan at 32x32 splits z into 4 pieces"):
        build_networks("biggan", dataclasses.replace(spec, z_dim=3))
    seen = {}
    for i, block in enumerate(g.body.blocks):
        block.bn1.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, args[1].detach()))
    z, y = torch.randn(5, 9), torch.tensor([0, 1, 2, 2, 0])
    g(z, y)
    shared = g.body.shared.detach()[y]  # the one embedding, as every block sees it
    starts = [3, 5, 7]
    for i, start in enumerate(starts):
        assert torch.equal(seen[i], torch.cat([z[:, start:start + 2], shared], 1)), f"block {i}"
    # spectral norm on G's layers (the batch norms' gain and bias maps too), not on the shared embedding
    assert all(hasattr(m, "parametrizations") for m in g.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    assert "body.shared" in dict(g.named_parameters()) and sum(isinstance(m, ConditionalBatchNorm) for m in g.modules()) == 6
    assert sum(isinstance(m, SelfAttention) for m in g.modules()) == 1 and any(isinstance(m, SelfAttention) for m in d.modules())
    # z_weight: the first layer's columns of piece 0 only, and zeros outside each map's piece
    a = z_weight(g.eval(), 9)
    fc_rows = g.body.fc.weight.shape[0]
    assert a.shape[1] == 9 and a[:fc_rows, 3:].abs().sum() == 0 and a[:fc_rows, :3].abs().sum() > 0
    assert a[fc_rows:, :3].abs().sum() == 0
    # the orthogonal penalty: zero for orthogonal rows of any norms, positive once two rows overlap
    lin = torch.nn.Linear(6, 4, bias=False)
    torch.nn.init.orthogonal_(lin.weight)
    with torch.no_grad():
        lin.weight.mul_(torch.tensor([[1.0], [3.0], [0.5], [2.0]]))
    assert float(orthogonal_penalty(lin)) < 1e-8
    with torch.no_grad():
        lin.weight[1] = lin.weight[0]
    assert float(orthogonal_penalty(lin)) > 0.1
    # and the G phase adds it, weighted by ortho_weight
    g.train()
    objective = build_objective(v, g, d)
    _, stats = objective.g_phase(z, y)
    assert torch.isclose(stats["ortho_g"], 1e-4 * orthogonal_penalty(g).detach())


def test_overrides_swap_axes_and_bad_ones_name_the_key() -> None:
    v = resolve_variant(ModelConfig(variant="fgan", overrides={"loss_args": {"divergence": "kl"}}))
    assert v.loss_args == {"divergence": "kl"}
    v = resolve_variant(ModelConfig(variant="dcgan", overrides={"loss": "hinge", "n_critic": 2, "regularizers": ["r1"],
                                                                  "d_norm": "none"}))
    assert (v.loss, v.n_critic, v.regularizers) == ("hinge", 2, ("r1",))
    bad = [({"loss_args": {"divergence": "tv"}}, "model.overrides.loss_args.divergence: got 'tv'"),
           ({"regularizers": ["gp"]}, "gradient penalties are per-sample"),
           ({"regularizers": ["magic"]}, "model.overrides.regularizers[0]: got 'magic'"),
           ({"reg_args": {"gp": {"lambda": 3}}}, "model.overrides.reg_args.gp.lambda: unknown argument of gp"),
           ({"conditioning": "telepathy"}, "model.overrides.conditioning: got 'telepathy'"),
           ({"n_critic": 0}, "model.overrides.n_critic: got 0; expected >= 1"),
           ({"info_weight": -1.0}, "model.overrides.info_weight: got -1.0; expected >= 0"),
           ({"ortho_weight": -1.0}, "model.overrides.ortho_weight: got -1.0; expected >= 0")]
    for overrides, fragment in bad:
        with pytest.raises(ConfigError) as err:
            resolve_variant(ModelConfig(variant="fgan" if "loss_args" in overrides else "dcgan", overrides=overrides))
        assert fragment in str(err.value)


def test_infogan_mutual_information_weights_are_preset_fields_the_objective_uses() -> None:
    from gans.families.noise import build_objective, build_spec

    v = resolve_variant(ModelConfig(variant="infogan", overrides={"info_weight": 5.0, "info_continuous_weight": 0.0}))
    spec = build_spec(v, ModelConfig(variant="infogan", z_dim=8, width=8), channels=1, resolution=16, data_classes=0)
    objective = build_objective(v, *build_networks(v.architecture, spec))
    assert (objective.extras.info_weight, objective.extras.info_continuous_weight) == (5.0, 0.0)
    assert (PRESETS["infogan"].info_weight, PRESETS["infogan"].info_continuous_weight) == (1.0, 0.1)  # the paper's


def test_conditional_variant_on_unlabelled_data_is_a_clear_error(tmp_path: Path) -> None:
    from gans.data import ImageSet
    from gans.families import build_trainer
    from gans.config import AugmentConfig, TrainConfig

    data = ImageSet(torch.zeros(20, 1, 16, 16, dtype=torch.uint8), None, ())
    with pytest.raises(ConfigError, match="acgan is class-conditional and needs labelled data"):
        build_trainer(model=ModelConfig(variant="acgan"), train=TrainConfig(batch_size=4), augment=AugmentConfig(),
                data=data, checkpoint_dir=tmp_path)
    # InfoGAN's codes need no labels.
    build_trainer(model=ModelConfig(variant="infogan"), train=TrainConfig(batch_size=4), augment=AugmentConfig(),
            data=data, checkpoint_dir=tmp_path)


def test_variants_command_lists_every_preset_with_components(capsys: pytest.CaptureFixture) -> None:
    from pipeline.cli import main

    root = Path(__file__).resolve().parents[1]
    assert main(["variants", "--params", str(root / "params.yaml")]) == 0
    out = capsys.readouterr().out
    for name, v in PRESETS.items():
        assert name in out and v.loss in out
    assert "spectral-norm" in out and "rmsprop" in out


def test_a_new_configuration_gets_its_own_tracking_run(workspace: Path, store: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    shutil.copytree(workspace / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    first = stages.train(_params(store, "dcgan"))
    second = stages.train(_params(store, "lsgan"))
    assert first["run_id"] != second["run_id"]
    run = mlflow.MlflowClient(f"sqlite:///{store}").get_run(second["run_id"])
    assert run.data.params["model.variant"] == "lsgan" and run.data.tags["variant"] == "lsgan"
