"""Data-parallel training: torchrun's environment, and two real gloo processes through the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from conftest import BIN, subprocess_env, tail, tiny_params

from gans.config import ConfigError, TrainConfig
from gans.distributed import DistContext, context_from_env
from pipeline.cli import main

TORCHRUN = [str(Path(BIN) / "torchrun"), "--standalone", "--nproc_per_node", "2"]


def test_auto_follows_torchrun_and_explicit_modes_check_the_launch() -> None:
    assert context_from_env("auto", {}) == DistContext()
    assert context_from_env("auto", {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) == DistContext()
    ctx = context_from_env("auto", {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert ctx.enabled and not ctx.is_main and (ctx.rank, ctx.world_size, ctx.local_rank) == (1, 2, 1)
    assert context_from_env(True, {"RANK": "0", "WORLD_SIZE": "1"}) == DistContext()
    with pytest.raises(ConfigError, match="train.distributed: true needs a torchrun launch"):
        context_from_env(True, {})
    with pytest.raises(ConfigError, match="train.distributed: false, but torchrun started 2 processes"):
        context_from_env(False, {"RANK": "0", "WORLD_SIZE": "2"})


def test_the_global_batch_must_split_evenly_over_the_processes(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    from test_trainer import _trainer

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    msg = "train.batch_size: 30 does not split evenly over the 4 processes torchrun started; use a multiple of 4"
    with pytest.raises(ConfigError, match=msg):
        _trainer(tmp_path, train=TrainConfig(batch_size=30))
    assert _trainer(tmp_path, train=TrainConfig(batch_size=32)).local_batch == 8  # no process group yet


# ---------------------------------------------------------------- two processes, gloo, through the CLI

TRAIN = {"steps": 6, "batch_size": 16, "checkpoint_every": 3, "keep_checkpoints": 2, "log_every": 3,
         "sample_every": 3, "eval_every": 6, "eval_samples": 50, "device": "cpu"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with tiny prepared data and an evaluator (for rank 0's periodic FID). Tests train in copies
    of it (``_copy``), never in it: each test can run alone, in any order."""
    ws = tmp_path_factory.mktemp("ddp")
    params = tiny_params({"train": TRAIN, "data": {"max_images": 200}, "evaluate": {"evaluator_epochs": 1}})
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with contextlib.chdir(ws):
        for stage in ("prepare", "augment", "evaluator"):
            assert main([stage]) == 0
    return ws


def _copy(project: Path, dest: Path) -> Path:
    shutil.copytree(project, dest)
    return dest


def _torchrun(ws: Path, name: str, *overrides: str, timeout: float = 240) -> dict:
    """Launch ``gans train`` on two gloo processes; return train.json and each rank's stderr. torchrun's own
    output goes to ``logs/NAME.out`` (a pipe nobody reads until the end could fill up and block it)."""
    logs = ws / "logs" / name
    logs.parent.mkdir(parents=True, exist_ok=True)
    out_file = ws / "logs" / f"{name}.out"
    cmd = [*TORCHRUN, "--log-dir", str(logs), "--redirects", "3", "-m", "pipeline.cli", "train", *overrides]
    with out_file.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ws, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        proc.wait(timeout=timeout)
        what = f"torchrun failed ({proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: a hung collective leaves no orphans
        proc.wait()
        what = f"torchrun did not finish in {timeout:.0f} s"
    logs_text = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("**/*.log")))
    assert proc.returncode == 0, f"{what}:\n{tail(out_file)}\n{logs_text}"
    err = {r: next(logs.glob(f"**/attempt_*/{r}/stderr.log")).read_text() for r in (0, 1)}
    return {**json.loads((ws / "metrics/train.json").read_text()), "stderr": err}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.mark.e2e
def test_two_processes_train_in_step_and_resume_exactly(project: Path, tmp_path: Path) -> None:
    ws, straight = _copy(project, tmp_path / "ws"), _copy(project, tmp_path / "straight")
    first = _torchrun(ws, "first")
    assert first["world_size"] == 2 and first["steps"] == 6 and first["resumed_from"] is None
    replicas = first["replicas"]
    assert [(r["rank"], r["step"]) for r in replicas] == [(0, 6), (1, 6)]  # both ranks stepped
    assert replicas[0]["digest"] == replicas[1]["digest"]  # G, D and G_ema identical on both ranks
    ckpts = ws / "models/checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.pt", "ckpt-00000003.pt", "ckpt-00000006.pt"]
    state = torch.load(ckpts / "ckpt-00000006.pt", weights_only=True)
    assert len(state["rng_ranks"]) == 2 and not torch.equal(state["rng_ranks"][0]["cpu"], state["rng_ranks"][1]["cpu"])
    assert not any(k.startswith("_orig_mod") for k in state["G"])
    assert (ws / "models/generator.pt").is_file() and first["best_fid"] is not None
    # Progress, tracking and evaluation are rank 0's: rank 1 prints none of it.
    assert "step 6/6" in first["stderr"][0] and "step 6/6" not in first["stderr"][1]
    with sqlite3.connect(ws / "mlflow.db") as db:
        assert db.execute("select count(*) from runs").fetchone() == (1,)

    more = _torchrun(ws, "more", "-S", "train.steps=9")
    assert more["resumed_from"] == 6 and more["steps"] == 9 and more["run_id"] == first["run_id"]
    assert len({r["digest"] for r in more["replicas"]}) == 1
    assert sorted(p.name for p in ckpts.glob("ckpt-*.pt")) == ["ckpt-00000006.pt", "ckpt-00000009.pt"]
    with sqlite3.connect(ws / "mlflow.db") as db:
        assert db.execute("select count(*) from runs").fetchone() == (1,)
    # Each rank's RNG streams are in the checkpoint: 6 steps + 3 resumed = 9 straight, bit for bit.
    nine = _torchrun(straight, "straight", "-S", "train.steps=9", "-S", f"tracking.uri=http://127.0.0.1:{_closed_port()}")
    assert nine["replicas"] == more["replicas"]


@pytest.mark.e2e
def test_a_single_process_resumes_a_two_process_checkpoint(project: Path, tmp_path: Path) -> None:
    ws = _copy(project, tmp_path / "ws")
    untracked = ("-S", "train.eval_every=0", "-S", f"tracking.uri=http://127.0.0.1:{_closed_port()}")
    two = _torchrun(ws, "two", "-S", "train.steps=3", *untracked)
    assert two["world_size"] == 2 and two["steps"] == 3
    assert [p.name for p in (ws / "models/checkpoints").glob("ckpt-*.pt")] == ["ckpt-00000003.pt"]
    with contextlib.chdir(ws):
        assert main(["train", "-S", "train.steps=6", *untracked]) == 0
    metrics = json.loads((ws / "metrics/train.json").read_text())
    assert metrics["resumed_from"] == 3 and metrics["world_size"] == 1 and "replicas" not in metrics
