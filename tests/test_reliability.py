"""Failures that must stay recoverable: tracking down, repeated and racing registrations."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import run, subprocess_env
from gans.io import file_hash

pytestmark = pytest.mark.e2e


def _copy(tiny_repo: Path, dest: Path) -> Path:
    shutil.copytree(tiny_repo, dest, ignore=shutil.ignore_patterns(".git", ".dvc", "mlflow.db*", "mlartifacts"))
    return dest


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_training_finishes_without_tracking_and_register_fails_clearly(tiny_repo: Path, tmp_path: Path) -> None:
    repo = _copy(tiny_repo, tmp_path / "ws")
    down = f"tracking.uri=http://127.0.0.1:{_closed_port()}"
    shutil.rmtree(repo / "models/checkpoints")
    proc = run(["gans", "train", "-S", down], repo)
    assert "unreachable" in proc.stderr
    metrics = json.loads((repo / "metrics/train.json").read_text())
    assert metrics["steps"] == 40 and metrics["run_id"] is None
    assert (repo / "models/generator.pt").is_file()
    failed = run(["gans", "register", "-S", down], repo, check=False)
    assert failed.returncode == 2 and "unreachable" in failed.stderr and "Traceback" not in failed.stderr


def test_registering_the_same_generator_twice_makes_one_version(tiny_repo: Path, tmp_path: Path) -> None:
    import mlflow

    repo = _copy(tiny_repo, tmp_path / "ws")
    store = f"tracking.uri=sqlite:///{tmp_path}/store.db"
    first = json.loads(run(["gans", "register", "-S", store], repo).stdout)
    second = json.loads(run(["gans", "register", "-S", store], repo).stdout)
    assert first["version"] == second["version"] == 1 and second["champion"]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/store.db", f"sqlite:///{tmp_path}/store.db")
    assert len(client.search_model_versions("name='gan-generator'")) == 1


def test_racing_registrations_leave_the_best_as_champion(tiny_repo: Path, tmp_path: Path) -> None:
    import mlflow

    store = f"sqlite:///{tmp_path}/race.db"
    workspaces = []
    for i, fid in enumerate([9.0, 4.0, 6.0]):
        repo = _copy(tiny_repo, tmp_path / f"ws{i}")
        payload = torch.load(repo / "models/generator.pt", weights_only=True)
        torch.save({**payload, "step": 1000 + i}, repo / "models/generator.pt")  # another file, another version
        ev = json.loads((repo / "metrics/eval.json").read_text())  # as if evaluate had scored it at `fid`
        ev.update(fid=fid, generator_hash=file_hash(repo / "models/generator.pt"))
        (repo / "metrics/eval.json").write_text(json.dumps(ev))
        workspaces.append(repo)
    run(["gans", "register", "-S", f"tracking.uri={store}"], workspaces[0])  # creates the store
    procs = [subprocess.Popen(["gans", "register", "-S", f"tracking.uri={store}"], cwd=ws, env=subprocess_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for ws in workspaces[1:]]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    client = mlflow.MlflowClient(store, store)
    versions = client.search_model_versions("name='gan-generator'")
    assert len(versions) == 3
    champion = client.get_model_version_by_alias("gan-generator", "champion")
    assert float(champion.tags["fid"]) == 4.0
