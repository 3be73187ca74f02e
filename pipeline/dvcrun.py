"""Running DVC from the pipeline (the flow's stages, the sweep's experiments) as subprocesses of this install."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def is_dvc_project(root: Path) -> bool:
    """A DVC project: a ``.dvc`` folder and a ``dvc.yaml`` in ``root``."""
    return (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()


def repair_lock(root: Path) -> str | None:
    """Move an unreadable ``dvc.lock`` aside; None when it reads (or there is none), else what was done.

    DVC rewrites dvc.lock in place (truncate, then write) after every stage, so a kill in that moment leaves
    it empty or cut, and every later ``dvc repro`` stops with a schema error ("required key not provided, in
    schema"). The outputs themselves are intact: without the lock DVC restores what its run cache holds and
    reruns the rest; training resumes from its newest checkpoint, and registering the same generator again is
    a no-op."""
    from dvc.exceptions import DvcException
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    from dvc.utils.strictyaml import load

    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        load(str(lock), COMPILED_LOCKFILE_SCHEMA)
        return None
    except DvcException:
        size = lock.stat().st_size
        why = f"{size} bytes that DVC cannot read" if size else "empty"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    aside = lock.with_name(f"dvc.lock.unreadable-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = lock.with_name(f"dvc.lock.unreadable-{stamp}-{n}")
    lock.replace(aside)
    return (f"dvc.lock was unreadable ({why}; DVC writes it in place, so a kill at that moment cuts it): moved "
            f"to {aside.name}; the next dvc repro reruns the stages that DVC's run cache cannot restore (training "
            "resumes from its newest checkpoint; a generator already registered is not registered again)")


def default_remote(root: Path) -> str | None:
    """The project's default DVC remote (``dvc remote add -d NAME URL``), or None when none is set."""
    proc = run("remote", "default", cwd=root, timeout=60)
    name = proc.stdout.strip().splitlines()[-1].strip() if proc.returncode == 0 and proc.stdout.strip() else ""
    return name or None


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
