"""The trainer: a few real steps, exact resume, checkpoints of another configuration."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from gans.config import AugmentConfig, ADAConfig, ConfigError, DataConfig, ModelConfig, TrainConfig
from gans.data import Dataset, load_source
from gans.sampling import generate
from gans.families import build_trainer
from gans.families.noise import load_generator
from gans.trainer import Trainer

DATA = load_source(DataConfig(source="digits", resolution=16, max_images=200))
TRAIN = TrainConfig(batch_size=16, steps=12, checkpoint_every=6, log_every=3, sample_every=6)
MODEL = ModelConfig(z_dim=8, width=8)
AUG = AugmentConfig(ada=ADAConfig(speed_kimg=1.0))


def _trainer(tmp: Path, **kw) -> Trainer:
    args = {"model": MODEL, "train": TRAIN, "augment": AUG, "data": DATA, "checkpoint_dir": tmp / "ckpt"}
    return build_trainer(**{**args, **kw})


def test_few_steps_have_finite_losses_and_right_shapes(tmp_path: Path) -> None:
    t = _trainer(tmp_path)
    result = t.fit()
    assert result.steps == 12 and result.resumed_from is None and len(result.history) == 4
    for row in result.history:
        assert all(torch.isfinite(torch.tensor(v)) for v in row.values())
    assert result.ada_p > 0  # the controller moved p (D is confident on reals early on)
    torch.save(t.export(), tmp_path / "g.pt")
    g, payload = load_generator(tmp_path / "g.pt")
    images = generate(g, [0, 1, 2], None, z_dim=8, device=torch.device("cpu"))
    assert images.shape == (3, 1, 16, 16) and images.dtype == torch.uint8
    assert torch.equal(images[0], generate(g, [0], None, z_dim=8, device=torch.device("cpu"))[0])


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight = _trainer(tmp_path / "a")
    straight.fit()
    half = _trainer(tmp_path / "b", train=TrainConfig(**{**TRAIN.__dict__, "steps": 6}))
    half.fit()
    resumed = _trainer(tmp_path / "b")
    result = resumed.fit()
    assert result.resumed_from == 6 and result.steps == 12
    for a, b in zip(straight.ema["G_ema"].state_dict().values(), resumed.ema["G_ema"].state_dict().values()):
        assert torch.equal(a, b)
    assert straight.ada_p == resumed.ada_p
    assert [r["loss_d"] for r in straight.history] == [r["loss_d"] for r in resumed.history]


def test_corrupt_checkpoint_falls_back_and_foreign_ones_are_set_aside(tmp_path: Path, capsys) -> None:
    t = _trainer(tmp_path)
    t.fit()
    ckpts = sorted((tmp_path / "ckpt").glob("ckpt-*.pt"))
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:100])  # truncated newest
    again = _trainer(tmp_path)
    again.setup()
    assert again.resume() == 6
    assert "unreadable" in capsys.readouterr().err
    other = _trainer(tmp_path, model=ModelConfig(z_dim=8, width=12))
    other.setup()
    assert other.resume() is None
    assert list((tmp_path / "ckpt").glob("previous-*/ckpt-*.pt"))


def test_checkpoints_of_a_preset_whose_definition_changed_are_set_aside(tmp_path: Path, monkeypatch) -> None:
    """Same params, but the preset now builds other networks (e.g. batch norm added to D): no resume."""
    from gans.families.noise import variants

    _trainer(tmp_path, train=dataclasses.replace(TRAIN, steps=6)).fit()
    monkeypatch.setitem(variants.PRESETS, "dcgan", dataclasses.replace(variants.PRESETS["dcgan"], d_norm="none"))
    changed = _trainer(tmp_path)
    changed.setup()
    assert changed.resume() is None
    assert list((tmp_path / "ckpt").glob("previous-*/ckpt-*.pt"))


def test_checkpoints_of_other_networks_under_the_same_fingerprint_are_set_aside(tmp_path: Path) -> None:
    """The code's networks changed (a layer added) while params and preset stayed: no resume, no load error."""
    t = _trainer(tmp_path, train=dataclasses.replace(TRAIN, steps=6))
    t.fit()
    newer = _trainer(tmp_path)
    newer.setup()
    newer.nets["D"].extra = torch.nn.Linear(2, 2)  # as if this release's discriminator had one more layer
    assert newer.fingerprint == t.fingerprint
    assert newer.resume() is None
    assert list((tmp_path / "ckpt").glob("previous-*/ckpt-*.pt"))


def _relabelled(data):
    """The same images, every label moved to the next class (no image keeps its label)."""
    return dataclasses.replace(data, labels=(data.labels + 1) % len(data.classes))


def test_conditional_training_learns_from_the_data_labels(tmp_path: Path) -> None:
    """Untrained, a conditional G already gives label-dependent samples; what training adds is the labels'
    signal. Same seed, same images, other labels: a conditional run ends elsewhere, an unconditional one
    (the control: the runs are deterministic) bit for bit where it did."""
    def weights(name: str, variant: str, data) -> list[torch.Tensor]:
        t = _trainer(tmp_path / name, model=ModelConfig(variant=variant, z_dim=8, width=8), data=data)
        t.fit()
        a = generate(t.ema["G_ema"], [0, 0], [1, 7], z_dim=8, device=torch.device("cpu"))
        assert variant == "dcgan" or not torch.equal(a[0], a[1])  # the exported G reads its label
        return [v.clone() for v in t.ema["G_ema"].state_dict().values()]

    cond, cond_relabelled = weights("c", "cdcgan", DATA), weights("c2", "cdcgan", _relabelled(DATA))
    assert not all(torch.equal(a, b) for a, b in zip(cond, cond_relabelled))
    plain, plain_relabelled = weights("u", "dcgan", DATA), weights("u2", "dcgan", _relabelled(DATA))
    assert all(torch.equal(a, b) for a, b in zip(plain, plain_relabelled))


def test_batch_larger_than_data_is_a_clear_error(tmp_path: Path) -> None:
    from gans.config import ConfigError

    with pytest.raises(ConfigError, match="train.batch_size: 500 is larger than the 200 training images"):
        _trainer(tmp_path, train=TrainConfig(batch_size=500))


def test_a_diverging_run_stops_naming_step_and_variant_and_keeps_good_checkpoints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Losses turn NaN at step 8, after the checkpoint at step 6 and before the one at step 12 (logging only
    at the end, so the check before writing a checkpoint is the one that stops the run)."""
    from gans.trainer import TrainingDiverged

    t = _trainer(tmp_path, train=dataclasses.replace(TRAIN, steps=30, log_every=30, sample_every=30))
    healthy = t.recipe.loss

    def loss(phase, batch):
        value, stats = healthy(phase, batch)
        return (value * float("nan") if t.step >= 7 else value), stats  # t.step: steps done before this one

    monkeypatch.setattr(t.recipe, "loss", loss)
    with pytest.raises(TrainingDiverged, match=r"at step 8 \(variant dcgan\); the last good checkpoint, "
                                                r".*ckpt-00000006\.pt, is kept"):
        t.fit()
    kept = sorted((tmp_path / "ckpt").glob("ckpt-*.pt"))
    assert [p.name for p in kept] == ["ckpt-00000006.pt"]
    for path in kept:
        state = torch.load(path, weights_only=True)
        for part in ("G", "D", "G_ema"):
            assert all(torch.isfinite(v).all() for v in state[part].values() if v.is_floating_point()), part


def test_on_nan_skip_drops_only_the_bad_update(tmp_path: Path) -> None:
    t = _trainer(tmp_path, train=TrainConfig(**{**TRAIN.__dict__, "on_nan": "skip"}))
    t.setup()
    real_loss = t.recipe.objective.loss

    class NanOnce:
        needs_real_in_g = False
        calls = 0

        def d_loss(self, real, fake):
            NanOnce.calls += 1
            out = real_loss.d_loss(real, fake)
            return out * float("nan") if NanOnce.calls == 2 else out

        def g_loss(self, fake, real):
            return real_loss.g_loss(fake, real)

    t.recipe.objective.loss = NanOnce()
    t.train_step()
    before = [p.detach().clone() for p in t.nets["D"].parameters()]
    t.train_step()  # D's update is skipped, G's goes on
    assert all(torch.equal(a, b) for a, b in zip(before, t.nets["D"].parameters()))
    t.train_step()
    assert not all(torch.equal(a, b) for a, b in zip(before, t.nets["D"].parameters()))
    t.check_finite()  # skip mode never records a divergence


class _SeriesRecorder:
    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def image(self, step: int, grid: torch.Tensor) -> None:
        pass

    def series(self, key: str, points: list[tuple[int, float]]) -> None:
        assert key == "ada_p"
        self.points.extend(points)


def test_ada_p_is_reported_at_every_adjustment(tmp_path: Path) -> None:
    rec = _SeriesRecorder()
    result = _trainer(tmp_path, reporter=rec).fit()
    # interval 4 minibatches, one D step per G step: adjustments at steps 4, 8, 12
    assert [s for s, _ in rec.points] == [4, 8, 12]
    assert rec.points[-1][1] == pytest.approx(result.ada_p)
    assert all(0 <= p < 1 for _, p in rec.points)


def test_fixed_mode_keeps_p_and_checkpoints_it(tmp_path: Path) -> None:
    fixed = AugmentConfig(ada=ADAConfig(mode="fixed", initial_p=0.3, speed_kimg=1.0))
    rec = _SeriesRecorder()
    t = _trainer(tmp_path, augment=fixed, reporter=rec)
    result = t.fit()
    assert result.ada_p == pytest.approx(0.3) and rec.points == []
    assert all(row["ada_p"] == pytest.approx(0.3) for row in result.history)
    more = _trainer(tmp_path, augment=fixed, train=dataclasses.replace(TRAIN, steps=15))
    assert more.fit().resumed_from == 12 and more.ada_p == pytest.approx(0.3)


# ---------------------------------------------------------------- the GPU path's knobs


def test_fused_optimizers_on_cuda_foreach_where_none_exists_default_on_cpu() -> None:
    from gans.trainer import optimizer_flags

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert optimizer_flags("adam", cuda) == {"fused": True}
    assert optimizer_flags("rmsprop", cuda) == {"foreach": True}  # torch 2.14's RMSprop has no fused kernel
    assert optimizer_flags("adam", cpu) == optimizer_flags("rmsprop", cpu) == {}


def test_channels_last_trains_and_saves_plain_generator_files(tmp_path: Path) -> None:
    t = _trainer(tmp_path, train=dataclasses.replace(TRAIN, channels_last=True, steps=6))
    result = t.fit()
    assert all(torch.isfinite(torch.tensor(v)) for row in result.history for v in row.values())
    conv = next(p for p in t.nets["D"].parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    real = t._next_batch()["real"]["images"]
    assert real.is_contiguous(memory_format=torch.channels_last)
    payload = t.export()
    assert all(v.is_contiguous() for v in payload["state_dict"].values())
    torch.save(payload, tmp_path / "g.pt")
    load_generator(tmp_path / "g.pt")
    assert _trainer(tmp_path / "auto", train=dataclasses.replace(TRAIN, device="cpu")).channels_last is False


def test_a_checkpoint_resumes_with_another_memory_format(tmp_path: Path) -> None:
    """channels_last, compile and distributed change how a step runs, not what it computes: resumable."""
    _trainer(tmp_path, train=dataclasses.replace(TRAIN, steps=6)).fit()
    result = _trainer(tmp_path, train=dataclasses.replace(TRAIN, steps=9, channels_last=True)).fit()
    assert result.resumed_from == 6 and result.steps == 9


@pytest.mark.skipif(not os.environ.get("GANS_TEST_COMPILE"),
                    reason="torch.compile on the CPU needs minutes of C++ compilation here; set GANS_TEST_COMPILE=1")
def test_compiled_trainer_steps_with_finite_losses_and_plain_state_dict_keys(tmp_path: Path) -> None:
    for variant in ("dcgan", "wgan-gp"):  # wgan-gp: the penalty's double backward runs D eagerly
        t = _trainer(tmp_path / variant, model=ModelConfig(variant=variant, z_dim=8, width=8),
                     train=dataclasses.replace(TRAIN, compile=True, steps=3, log_every=1))
        result = t.fit()
        assert result.steps == 3
        assert all(torch.isfinite(torch.tensor(v)) for row in result.history for v in row.values())
        state = torch.load(max((tmp_path / variant / "ckpt").glob("ckpt-*.pt")), weights_only=True)
        assert not any("_orig_mod" in k for part in ("G", "D", "G_ema") for k in state[part])
        torch.save(t.export(), tmp_path / variant / "g.pt")
        load_generator(tmp_path / variant / "g.pt")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_is_channels_last_bf16_and_fused(tmp_path: Path) -> None:
    t = _trainer(tmp_path, train=dataclasses.replace(TRAIN, device="cuda", steps=6))
    result = t.fit()
    assert t.channels_last and t.dtype == torch.bfloat16
    assert t.optimizers["G"].param_groups[0]["fused"] and t.optimizers["D"].param_groups[0]["fused"]
    assert all(torch.isfinite(torch.tensor(v)) for row in result.history for v in row.values())
    resumed = _trainer(tmp_path, train=dataclasses.replace(TRAIN, device="cuda", steps=9)).fit()
    assert resumed.resumed_from == 6


class _CountingRecipe:
    """The smallest recipe: one linear 'network' per phase, phases that run every step, every third step
    (lazy regularisation) and twice per step (an n_critic loop); it records which phase ran at which step."""

    variant, primary_metric, higher_is_better = "counting", "fid", False

    def __init__(self) -> None:
        from gans.family import OptimizerSpec, Phase

        self.phases = (Phase("A", "A", repeats=2), Phase("B", "B", every=3, new_batch=False, frozen=("A",)))
        self.optimizers = {"A": OptimizerSpec(("A",), 0.1), "B": OptimizerSpec(("B",), 0.1, decay_start=0.5)}
        self.ema = {"B_ema": "B"}
        self.streams = {"x": {"images": torch.zeros(8, 1, 2, 2, dtype=torch.uint8)}}
        self.calls: list[tuple[str, int]] = []

    def describe(self):
        return {"variant": "counting"}

    def build(self):
        return {"A": torch.nn.Linear(4, 1), "B": torch.nn.Linear(4, 1)}

    def bind(self, networks, *, augment, device):
        self.nets = networks

    def loss(self, phase, batch):
        self.calls.append((phase, len(self.calls)))
        x = batch["x"]["images"].flatten(1)
        return self.nets[phase](x).pow(2).mean(), {f"loss_{phase.lower()}": torch.zeros(())}

    def after_update(self, phase):
        pass

    def compile(self):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def export(self, ema, step):
        return {"step": step}

    def sample_grid(self, ema, device):
        return torch.zeros(3, 2, 2, dtype=torch.uint8)


def test_phases_run_by_their_interval_and_repeats_and_their_lr_decays(tmp_path: Path) -> None:
    from gans.trainer import Trainer

    recipe = _CountingRecipe()
    t = Trainer(recipe=recipe, train=TrainConfig(batch_size=4, steps=6, checkpoint_every=6, sample_every=6, log_every=6,
                                                 eval_every=0),
                augment=AugmentConfig(ada=ADAConfig(enabled=False)), checkpoint_dir=tmp_path, fingerprint="x")
    t.fit()
    phases = [p for p, _ in recipe.calls]
    assert phases == ["A", "A", "B"] + ["A", "A"] * 2 + ["A", "A", "B"] + ["A", "A"] * 2  # B at steps 0 and 3
    assert t.optimizers["A"].param_groups[0]["lr"] == 0.1 and t.optimizers["B"].param_groups[0]["lr"] == 0.0
    assert set(t.ema) == {"B_ema"} and t.export() == {"step": 6}


# /proc/cpuinfo excerpts: flags lines as Linux prints them (shortened)
ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu vme sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "model name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n"
ICE_LAKE = "model name\t: Intel(R) Xeon(R) Platinum 8375C\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_vbmi2\n"
GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16\n"


@pytest.mark.parametrize("cpuinfo, native", [(ZEN4, True), (SAPPHIRE_RAPIDS, True), (ICE_LAKE, False),
                                             (GRAVITON, False), ("", False)],
                         ids=["zen4", "sapphire-rapids", "ice-lake", "arm", "empty"])
def test_auto_precision_is_bf16_exactly_on_cpus_with_native_bf16(cpuinfo: str, native: bool, monkeypatch) -> None:
    from gans import trainer

    assert trainer.cpu_has_native_bf16(cpuinfo) is native
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda cpuinfo=None: native)
    want = torch.bfloat16 if native else torch.float32
    assert trainer.resolve_precision("auto", torch.device("cpu")) == want
    assert trainer.resolve_precision("fp32", torch.device("cpu")) == torch.float32  # an explicit choice stays


def test_a_bf16_run_trains_and_resumes_exactly(tmp_path: Path) -> None:
    bf16 = dataclasses.replace(TRAIN, precision="bf16")
    straight = _trainer(tmp_path / "a", train=bf16)
    result = straight.fit()
    assert straight.dtype == torch.bfloat16
    assert all(torch.isfinite(torch.tensor(v)) for row in result.history for v in row.values())
    assert all(p.dtype == torch.float32 for p in straight.ema["G_ema"].parameters())  # weights and EMA stay fp32
    _trainer(tmp_path / "b", train=dataclasses.replace(bf16, steps=6)).fit()
    resumed = _trainer(tmp_path / "b", train=bf16)
    assert resumed.fit().resumed_from == 6
    for a, b in zip(straight.ema["G_ema"].state_dict().values(), resumed.ema["G_ema"].state_dict().values()):
        assert torch.equal(a, b)
    assert [r["loss_d"] for r in straight.history] == [r["loss_d"] for r in resumed.history]


# ---------------------------------------------------------------- the overfitting probe (r_v, Karras et al. 2020)

HOLDOUT = Dataset.single(load_source(DataConfig(source="digits", resolution=16, max_images=200, seed=1)))


def test_the_overfitting_probe_is_logged_and_leaves_training_as_it_was(tmp_path: Path) -> None:
    probed = _trainer(tmp_path / "a", preview=HOLDOUT, train=dataclasses.replace(TRAIN, log_every=1))
    plain = _trainer(tmp_path / "b", train=dataclasses.replace(TRAIN, log_every=1))
    r1, r2 = probed.fit(), plain.fit()
    keys = {"d_train", "d_val", "d_gen", "r_v", "sign_train", "sign_val"}
    assert all(keys <= row.keys() for row in r1.history) and not any(keys & row.keys() for row in r2.history)
    for row in r1.history:
        assert -1 <= row["sign_train"] <= 1 and -1 <= row["sign_val"] <= 1
        expected = (row["d_train"] - row["d_val"]) / (row["d_train"] - row["d_gen"])
        assert row["r_v"] == pytest.approx(expected, rel=1e-3, abs=1e-3)
    # the probe runs G and D in training mode: their batch-norm statistics and the random streams must be
    # exactly as without it, or the run (and its exact resume) would depend on train.log_every
    for net in ("G", "D"):
        for (k, a), b in zip(probed.nets[net].state_dict().items(), plain.nets[net].state_dict().values()):
            assert torch.equal(a, b), f"{net}.{k} differs with the probe on"
    assert [r["loss_d"] for r in r1.history] == [r["loss_d"] for r in r2.history]


def test_r_v_reads_a_memorising_discriminator_as_overfitting(tmp_path: Path) -> None:
    """A discriminator trained to call 16 training images real and everything else fake (validation images
    included) gives r_v near 1; on validation images it has never told apart from training ones, near 0."""
    t = _trainer(tmp_path, preview=HOLDOUT)
    t.setup()
    recipe = t.recipe
    D = t.nets["D"]
    opt = torch.optim.Adam(D.parameters(), lr=1e-2)
    train_x = recipe.probe_sets["train"]["images"]
    val_x = recipe.probe_sets["val"]["images"]
    from gans.data import to_float
    before = t._probe()
    for _ in range(150):
        logits = D.logits(D.features(to_float(torch.cat([train_x, val_x])), None), None).flatten()
        target = torch.cat([torch.ones(len(train_x)), torch.zeros(len(val_x))])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = t._probe()
    assert abs(float(before["r_v"])) < 0.5
    assert float(after["r_v"]) > 0.8 and float(after["sign_val"]) < 0 < float(after["sign_train"])


def test_ada_can_steer_by_r_v_from_the_probe(tmp_path: Path) -> None:
    """heuristic r_v: p moves at every log by sign(r_v - target) * batch * log_every / (speed_kimg * 1000);
    replaying that rule over the logged r_v values gives the logged p (and r_t no longer moves it)."""
    ada = ADAConfig(speed_kimg=1.0, heuristic="r_v", target=0.05)
    t = _trainer(tmp_path, preview=HOLDOUT, augment=AugmentConfig(ada=ada), train=dataclasses.replace(TRAIN, log_every=1))
    result = t.fit()
    p, step = 0.0, TRAIN.batch_size * 1 / 1000.0
    for row in result.history:
        p = min(max(p + (step if row["r_v"] > 0.05 else -step if row["r_v"] < 0.05 else 0.0), 0.0), 1 - 1e-6)
        assert row["ada_p"] == pytest.approx(p, abs=1e-6)
    assert any(row["ada_p"] > 0 for row in result.history)


def test_r_v_heuristic_without_a_validation_split_is_a_clear_error(tmp_path: Path) -> None:
    ada = ADAConfig(speed_kimg=1.0, heuristic="r_v")
    with pytest.raises(ConfigError, match=r"augment.ada.heuristic: r_v needs .* use heuristic: r_t"):
        _trainer(tmp_path, augment=AugmentConfig(ada=ada)).fit()
