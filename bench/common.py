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
