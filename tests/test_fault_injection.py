"""Fault injection: `dvc repro` killed (SIGKILL, the whole process group) at seeded random moments of the
train and register stages, then rerun to the end. After every kill no checkpoint is lost (the newest step
on disk never goes back, every checkpoint file reads), and at the end generator.pt, eval.json, the
checkpoints and the registry agree: eval.json scored this generator.pt, every version carries its tags,
no generator file is registered twice, and the champion's FID tag is its own evaluation's and the best."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from gans.checkpoints import checkpoints, step_of
from gans.io import file_hash, load_torch
from scratch import make_project, run, subprocess_env, tiny_params

pytestmark = pytest.mark.e2e

KILLS = 10
STAGE_SECONDS = {"train": 12.0, "register": 8.0}  # kill moments are drawn over about this long a stage


def _newest_step(folder: Path) -> int:
    """The newest checkpoint's step; every checkpoint must read (writes are atomic)."""
    found = checkpoints(folder)
    for path in found:
        load_torch(path)
    assert not list(folder.glob("unreadable/*")), "a checkpoint became unreadable"
    return step_of(found[-1]) if found else -1


def _repro_killed(repo: Path, stage: str, delay: float, log: Path) -> bool:
    """Start `dvc repro`; once ``stage`` starts, wait ``delay`` s and SIGKILL the process group. False when the
    pipeline finished (or failed) before the kill."""
    with open(log, "w") as out:
        proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=subprocess_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while f"Running stage '{stage}'" not in log.read_text():
            if proc.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"stage {stage} never started:\n{log.read_text()[-3000:]}"
            time.sleep(0.05)
        time.sleep(delay)
        if proc.poll() is not None:
            return False
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def test_kills_during_train_and_register_lose_nothing_and_leave_a_consistent_registry(tmp_path: Path) -> None:
    params = tiny_params({"train": {"steps": 60, "checkpoint_every": 5, "keep_checkpoints": 2, "eval_every": 30}})
    repo = make_project(tmp_path / "project", params)
    rng = random.Random(19)
    schedule = [(rng.choice(["train", "train", "register"]), rng.random()) for _ in range(KILLS)]
    landed, newest, finished_runs = [], -1, 0
    for i, (stage, fraction) in enumerate(schedule):
        delay = fraction * STAGE_SECONDS[stage]
        killed = _repro_killed(repo, stage, delay, tmp_path / f"repro-{i}.log")
        if killed:
            landed.append((stage, round(delay, 2)))
        else:
            finished_runs += 1
            log = (tmp_path / f"repro-{i}.log").read_text()
            assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
            params["train"]["steps"] += 30  # something left to train (and register) for the next kill
            (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        now = _newest_step(repo / "models/checkpoints")
        assert now >= newest, f"kill {i} ({stage} at {delay:.1f} s): newest checkpoint went from {newest} to {now}"
        newest = now
    assert len(landed) >= KILLS // 2, f"too few kills landed in a stage: {landed}"

    final = run(["dvc", "repro"], repo)
    assert "Traceback" not in final.stderr
    steps = params["train"]["steps"]
    assert _newest_step(repo / "models/checkpoints") == steps
    assert not list((repo / "models").rglob("*.tmp")) and not list((repo / "models/checkpoints").glob("previous-*"))
    ev = json.loads((repo / "metrics/eval.json").read_text())
    assert ev["generator_hash"] == file_hash(repo / "models/generator.pt") and ev["step"] == steps
    assert json.loads((repo / "metrics/train.json").read_text())["steps"] == steps

    store = f"sqlite:///{repo}/mlflow.db"
    client = mlflow.MlflowClient(store, store)
    versions = client.search_model_versions("name='gan-generator'")
    hashes = [v.tags.get("generator_hash") for v in versions]
    assert None not in hashes, "a version without its tags"
    assert len(set(hashes)) == len(hashes), f"a generator registered twice: {hashes}"
    champion = client.get_model_version_by_alias("gan-generator", "champion")
    assert float(champion.tags["fid"]) == min(float(v.tags["fid"]) for v in versions)
    current = next(v for v in versions if v.tags["generator_hash"] == ev["generator_hash"])
    assert float(current.tags["fid"]) == pytest.approx(ev["fid"]), "the version's FID is not its eval.json's"
    register = json.loads((repo / "metrics/register.json").read_text())
    assert register["version"] == int(current.version)
    print(f"kills landed: {landed}; runs that finished before their kill: {finished_runs}; "
          f"versions: {len(versions)}; final step {steps}")
