"""Shared fixtures: tiny params, a real DVC project in a temporary git repo, one
Prefect server for the session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Prefect binds its console log handler to the stream of the moment it first configures logging; do it
# now, before a test's capsys swaps in a stream that is closed when that test ends.
from prefect.logging.configuration import setup_logging  # noqa: E402

setup_logging()

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)

# Small enough for a 2-core CPU: every stage of the pipeline in a few seconds.
TINY = {
    "data": {"source": "digits", "resolution": 16, "max_images": 400},
    "train": {"steps": 40, "batch_size": 32, "checkpoint_every": 10, "log_every": 5, "sample_every": 20,
              "eval_every": 20, "eval_samples": 50},
    "model": {"width": 16, "z_dim": 16},
    "evaluate": {"num_samples": 200, "evaluator_epochs": 3, "batch_size": 100, "kid_subset_size": 50},
}


def tiny_params(extra: dict | None = None) -> dict:
    """The repo's params.yaml with the TINY values (and ``extra``) merged in."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for source in (TINY, extra or {}):
        for section, values in source.items():
            params.setdefault(section, {}).update(values)
    return params


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.setdefault("GIT_AUTHOR_NAME", "test")
    env.setdefault("GIT_AUTHOR_EMAIL", "test@example.com")
    env.setdefault("GIT_COMMITTER_NAME", "test")
    env.setdefault("GIT_COMMITTER_EMAIL", "test@example.com")
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 600, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def make_project(path: Path, params: dict) -> Path:
    """A git + DVC project with the pipeline's dvc.yaml, code (the stages' deps) and ``params``."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, path / name)
    for pkg in ("gans", "pipeline"):
        shutil.copytree(ROOT / pkg, path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], path)
    run(["dvc", "init", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "init"], path)
    return path


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project after one real `dvc repro` (shared by the end-to-end tests)."""
    repo = make_project(tmp_path_factory.mktemp("project"), tiny_params())
    run(["dvc", "repro"], repo)
    return repo


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server for the whole session (it takes ~15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
