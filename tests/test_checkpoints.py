"""The checkpoint folder: newest by step (not by name), pruning, the run a configuration continues, and
nothing lost: sets of another configuration kept apart, unreadable files kept, best.pt kept, a second
training refused, a failed write reported with the old file intact."""

from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

from gans.checkpoints import (TrainingBusy, checkpoints, latest_extra, prune, set_aside, step_of,
                              training_lock)
from gans.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from gans.data import load_source
from gans.families import build_trainer
from gans.io import load_torch, save_torch
from scratch import BIN, ROOT, free_port, subprocess_env

DATA = load_source(DataConfig(source="digits", resolution=16, max_images=100))
TRAIN = TrainConfig(batch_size=16, steps=6, checkpoint_every=3, log_every=3, sample_every=6, keep_checkpoints=1)


def _trainer(folder: Path, **kw):
    args = {"model": ModelConfig(z_dim=8, width=8), "train": TRAIN, "augment": AugmentConfig(),
            "data": DATA, "checkpoint_dir": folder}
    return build_trainer(**{**args, **kw})


def test_checkpoints_are_ordered_by_their_step(tmp_path: Path) -> None:
    for step in (5, 100_000_000, 20):  # from 10^8 steps on the name has more digits
        save_torch({"fingerprint": "x", "extra": {"step": step}}, tmp_path / f"ckpt-{step:08d}.pt")
    (tmp_path / "best.pt").write_bytes(b"")
    assert [step_of(p) for p in checkpoints(tmp_path)] == [5, 20, 100_000_000]
    prune(tmp_path, 2)
    assert [step_of(p) for p in checkpoints(tmp_path)] == [20, 100_000_000]
    assert (tmp_path / "best.pt").exists()


def test_latest_extra_only_for_the_same_configuration(tmp_path: Path) -> None:
    save_torch({"fingerprint": "a", "extra": {"run_id": "r1"}}, tmp_path / "ckpt-00000001.pt")
    save_torch({"fingerprint": "a", "extra": {"run_id": "r2"}}, tmp_path / "ckpt-00000002.pt")
    (tmp_path / "ckpt-00000003.pt").write_bytes(b"truncated")  # unreadable: skipped
    assert latest_extra(tmp_path, "a") == {"run_id": "r2"}
    assert latest_extra(tmp_path, "b") == {}
    assert latest_extra(tmp_path / "none", "a") == {}


def test_each_set_aside_keeps_its_own_folder(tmp_path: Path) -> None:
    """A second change of configuration (or a kill during a move) never deletes the first set."""
    stashes = []
    for content in (b"first", b"second"):
        path = tmp_path / "ckpt-00000001.pt"
        path.write_bytes(content)
        stashes.append(set_aside(tmp_path, [path, tmp_path / "best.pt"]))  # best.pt absent: skipped
    assert stashes[0] != stashes[1] and checkpoints(tmp_path) == []
    assert [(s / "ckpt-00000001.pt").read_bytes() for s in stashes] == [b"first", b"second"]


def test_unreadable_checkpoints_are_kept_and_never_outlive_the_new_ones(tmp_path: Path, capsys) -> None:
    """Every checkpoint unreadable: a loud warning, training from step 0, the unreadable files kept aside
    (pruning by step would otherwise keep a corrupt ckpt of a later step and delete the new good one)."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "ckpt-00000999.pt").write_bytes(b"half a checkpoint")
    (folder / "ckpt-00000003.pt").write_bytes(b"")
    (folder / ".ckpt-00000006.pt.x1y2.tmp").write_bytes(b"killed mid-write")
    result = _trainer(folder).fit()
    err = capsys.readouterr().err
    assert result.resumed_from is None and "TRAINING STARTS AGAIN FROM STEP 0" in err
    assert "left by a write that was killed" in err and not list(folder.glob("*.tmp"))
    assert [p.name for p in checkpoints(folder)] == ["ckpt-00000006.pt"]
    assert sorted(p.name for p in (folder / "unreadable").iterdir()) == ["ckpt-00000003.pt", "ckpt-00000999.pt"]
    assert (folder / "unreadable/ckpt-00000999.pt").read_bytes() == b"half a checkpoint"
    assert _trainer(folder, train=dataclasses.replace(TRAIN, steps=9)).fit().resumed_from == 6


def test_a_kill_between_best_pt_and_its_checkpoint_loses_no_best(tmp_path: Path) -> None:
    """best.pt is written at step 6's evaluation, then the process dies before ckpt 6: the resumed run
    knows that best and a worse evaluation at the same step does not replace it."""
    folder = tmp_path / "ckpt"
    scores = {3: 50.0, 6: 40.0}
    first = _trainer(folder, train=dataclasses.replace(TRAIN, eval_every=3, keep_checkpoints=2),
                     evaluate_fn=lambda payload: {"fid": scores[payload["step"]]})
    first.fit()
    (folder / "ckpt-00000006.pt").unlink()  # the kill: best.pt of step 6 exists, its checkpoint does not
    assert load_torch(folder / "best.pt")["fid"] == 40.0
    scores[6] = 45.0  # the rerun's evaluation of step 6 comes out worse (another machine, nondeterminism)
    again = _trainer(folder, train=dataclasses.replace(TRAIN, eval_every=3, keep_checkpoints=2),
                     evaluate_fn=lambda payload: {"fid": scores[payload["step"]]})
    result = again.fit()
    assert result.resumed_from == 3 and result.best == {"fid": 40.0, "step": 6.0}
    assert load_torch(folder / "best.pt")["fid"] == 40.0


def test_best_pt_of_another_configuration_goes_aside_with_its_checkpoints(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    _trainer(folder, train=dataclasses.replace(TRAIN, eval_every=3), evaluate_fn=lambda p: {"fid": 10.0}).fit()
    other = _trainer(folder, model=ModelConfig(z_dim=8, width=12), train=dataclasses.replace(TRAIN, eval_every=3),
                     evaluate_fn=lambda p: {"fid": 30.0})
    assert other.fit().best == {"fid": 30.0, "step": 3.0}  # not measured against the other network's 10
    (stash,) = folder.glob("previous-*")
    assert load_torch(stash / "best.pt")["fid"] == 10.0 and load_torch(folder / "best.pt")["fid"] == 30.0


def test_a_second_training_of_the_same_project_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / ".cache/train.lock"
    with training_lock(lock):
        with pytest.raises(TrainingBusy, match=f"another training is running in this project \\(pid {os.getpid()}"):
            with training_lock(lock):
                pass
    with training_lock(lock):  # released: the next training goes ahead
        pass


def _limited(bytes_: int):
    def limit() -> None:  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (bytes_, bytes_))
    return limit


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    """A write past the file-size limit (the same failure as a full disk): exit 2, one line naming the file
    and saying the previous version is intact, which it is; no temporary file left."""
    from pipeline.cli import main

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    setup = ["-S", "data.source=digits", "-S", "data.max_images=100", "-S", "data.resolution=16"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["prepare", *setup]) == 0 and main(["augment", *setup]) == 0
    finally:
        os.chdir(cwd)
    args = [f"{BIN}/gans", "train", *setup, "-S", "train.checkpoint_every=1",
            "-S", "train.eval_every=0", "-S", f"tracking.uri=http://127.0.0.1:{free_port()}"]  # no tracking
    (tmp_path / "models").mkdir()
    (tmp_path / "models/.generator.pt.k1ll3d.tmp").write_bytes(b"a write killed half-way")
    ok = subprocess.run(args + ["-S", "train.steps=1"], cwd=tmp_path, env=subprocess_env(), capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "removed models/.generator.pt.k1ll3d.tmp" in ok.stderr and not list((tmp_path / "models").glob("*.tmp"))
    before = (tmp_path / "models/generator.pt").read_bytes()
    size = (tmp_path / "models/checkpoints/ckpt-00000001.pt").stat().st_size
    proc = subprocess.run(args + ["-S", "train.steps=2"], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, preexec_fn=_limited(size // 2))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: could not write models/checkpoints/ckpt-00000002.pt (File too large); no earlier version existed")
    assert (tmp_path / "models/generator.pt").read_bytes() == before
    assert [p.name for p in checkpoints(tmp_path / "models/checkpoints")] == ["ckpt-00000001.pt"]
    assert not list((tmp_path / "models").rglob("*.tmp"))
