"""Shared helpers for the benchmarks: the machine's name, RESULTS.md sections, scratch DVC projects."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """e.g. 'AMD EPYC 9B14, 2 cores, no GPU, torch 2.14.1'."""
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def write_section(title: str, body: str) -> None:
    """Replace (or append) the section '## title' of RESULTS.md, keeping the others."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nWritten by `make bench` and `make bench-quick`.\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    RESULTS.write_text(text.rstrip() + "\n")


# ---------------------------------------------------------------- scratch projects (shared by the benchmarks)

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)

# The tests' tiny workload (tests/conftest.py TINY): every stage of the pipeline in a few seconds.
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
    """This environment with the venv's bin first on PATH, no inherited MLflow URIs, and a git identity."""
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    for key, value in (("GIT_AUTHOR_NAME", "bench"), ("GIT_AUTHOR_EMAIL", "bench@example.com"),
                       ("GIT_COMMITTER_NAME", "bench"), ("GIT_COMMITTER_EMAIL", "bench@example.com")):
        env.setdefault(key, value)
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 900, check: bool = True,
        **env: str) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd``; raise with its output tail when it fails and ``check`` is set."""
    proc = subprocess.run(cmd, cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def timed(cmd: list[str], cwd: Path, **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    """(wall seconds, completed process) of :func:`run`."""
    started = time.perf_counter()
    proc = run(cmd, cwd, **kwargs)
    return time.perf_counter() - started, proc


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
