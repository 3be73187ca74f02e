"""Running DVC from the pipeline (the flow's stages, the sweep's experiments) as subprocesses of this install."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def is_dvc_project(root: Path) -> bool:
    """A DVC project: a ``.dvc`` folder and a ``dvc.yaml`` in ``root``."""
    return (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()


def env(**extra: str) -> dict[str, str]:
    """The environment with this interpreter's bin folder first on PATH, so that dvc.yaml's ``gans ...``
    commands and DVC's queue workers (it starts them as ``dvc ...``) run this install."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), **extra}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``dvc ARGS``, output captured (stdout and stderr together)."""
    return subprocess.run(command(*args), cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, check=False)


def stream(*args: str, cwd: Path | None = None, **extra_env: str) -> Iterator[str]:
    """``dvc ARGS``, yielding its output lines as they come; raises ``DvcFailed`` (with the lines) on failure."""
    lines: list[str] = []
    with subprocess.Popen(command(*args), cwd=cwd, env=env(**extra_env), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            yield lines[-1]
    if proc.returncode != 0:
        raise DvcFailed(args, proc.returncode, lines)


class DvcFailed(RuntimeError):
    def __init__(self, args: tuple[str, ...], returncode: int, lines: list[str]) -> None:
        self.lines = lines
        tail = "\n".join(lines[-15:])
        super().__init__(f"dvc {' '.join(args)} failed (exit {returncode}):\n{tail}")
