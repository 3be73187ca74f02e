"""Shared helpers for the benchmarks: the machine's name, RESULTS.md sections, scratch DVC projects."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

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


def drop_section(title: str) -> None:
    """Remove the section '## title' of RESULTS.md, if there is one (a section that was renamed)."""
    if not RESULTS.exists():
        return
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    RESULTS.write_text(pattern.sub("", RESULTS.read_text()).rstrip() + "\n")


# ---------------------------------------------------------------- scratch projects (shared by the benchmarks)

# The tests' tiny workload and scratch git + DVC projects: one copy, in tests/scratch.py (imported by path:
# some installed distributions ship a top-level package named "tests").
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scratch import ROOT, make_project, run, subprocess_env, tiny_params  # noqa: E402, F401


def timed(cmd: list[str], cwd: Path, **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    """(wall seconds, completed process) of :func:`run`."""
    started = time.perf_counter()
    proc = run(cmd, cwd, **kwargs)
    return time.perf_counter() - started, proc


def stage_workspace(name: str, samples: int) -> list[str]:
    """Move into bench/out/NAME (made if missing) for a benchmark that runs the pipeline's own stages, prepare
    the data and train the domain evaluator there once (later runs reuse them, so every FID is comparable),
    and return the base overrides of such runs: ``samples`` evaluation samples, the folder's own MLflow store,
    no sample grids, no periodic evaluation, no system metrics."""
    from pipeline import stages
    from pipeline.params import load_params

    work = ROOT / "bench/out" / name
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    base = [f"evaluate.num_samples={samples}", f"tracking.uri=sqlite:///{work}/mlflow.db",
            "train.sample_every=1000000", "train.eval_every=0", "tracking.system_metrics_every=0"]
    if not Path("models/evaluator.pt").is_file():
        params = load_params(ROOT / "params.yaml", base)
        stages.prepare(params)
        stages.evaluator(params)
    return base
