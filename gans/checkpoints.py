"""The checkpoint folder: ``ckpt-STEP.pt`` files (newest last), pruning, and setting aside the checkpoints
of another configuration."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gans.io import load_torch


def step_of(path: Path) -> int:
    """The step in a checkpoint's name (``ckpt-00000250.pt`` -> 250); -1 for a name without one."""
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def checkpoints(folder: Path) -> list[Path]:
    """The checkpoint files, oldest first, ordered by their step (not by name)."""
    return sorted(folder.glob("ckpt-*.pt"), key=lambda p: (step_of(p), p.name))


def prune(folder: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for old in checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)


def set_aside(folder: Path, paths: list[Path]) -> Path:
    """Move ``paths`` to ``folder/previous/`` (replacing what an earlier change put there)."""
    stash = folder / "previous"
    shutil.rmtree(stash, ignore_errors=True)
    stash.mkdir(parents=True)
    for p in paths:
        p.rename(stash / p.name)
    return stash


def latest_extra(folder: Path, fingerprint: str) -> dict[str, Any]:
    """``extra`` of the newest readable checkpoint (e.g. its tracking run id) when it was written for this
    configuration, else {}."""
    for path in reversed(checkpoints(folder)):
        try:
            state = load_torch(path)
        except Exception:
            continue
        return dict(state.get("extra", {})) if state.get("fingerprint") == fingerprint else {}
    return {}
