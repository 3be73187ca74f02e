"""The checkpoint folder: ``ckpt-STEP.pt`` files (newest by step), pruning, and what happens to files that
cannot be resumed: checkpoints of another configuration are set aside under their own dated folder,
unreadable ones are moved to ``unreadable/``, stale temporary files of killed writes are removed. Nothing
here deletes a checkpoint except ``prune``, and ``prune`` only ever sees readable files of this run.
A lock keeps two trainings out of one project."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gans.io import fsync_dir, load_torch
from gans.io import remove_stale_temporaries as remove_stale


class TrainingBusy(RuntimeError):
    """Another training holds this project's checkpoint folder."""


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
    """Delete all but the newest ``keep`` checkpoints (the newest is on disk for good: ``save_torch`` fsyncs
    the file and its folder before this runs)."""
    for old in checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    fsync_dir(folder)


def _free_name(parent: Path, stem: str) -> Path:
    """``parent/stem``, or ``parent/stem-2``, ``-3``... whichever does not exist yet."""
    candidate, n = parent / stem, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{stem}-{n}"
    return candidate


def set_aside(folder: Path, paths: list[Path]) -> Path:
    """Move ``paths`` into a new folder ``folder/previous-YYYYmmdd-HHMMSS/`` (a later change gets a folder of
    its own: earlier sets are never replaced or deleted)."""
    stash = _free_name(folder, time.strftime("previous-%Y%m%d-%H%M%S"))
    stash.mkdir(parents=True)
    for p in paths:
        if p.exists():
            p.rename(stash / p.name)
    fsync_dir(stash)
    fsync_dir(folder)
    return stash


def quarantine(folder: Path, path: Path) -> Path:
    """Move an unreadable checkpoint to ``folder/unreadable/`` (kept for the user, out of pruning's reach)."""
    target_dir = folder / "unreadable"
    target_dir.mkdir(exist_ok=True)
    target = _free_name(target_dir, path.name)
    path.rename(target)
    fsync_dir(folder)
    return target


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes killed half-way (call it only while holding the
    training lock: a running write's temporary file looks the same)."""
    return [p for name in ("ckpt-*.pt", "best.pt") for p in remove_stale(folder / name)]


@contextlib.contextmanager
def training_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for one training; a second training of the same project fails at
    once with a message (the lock goes with the process, so a killed training never leaves it stuck)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise TrainingBusy(f"another training is running in this project ({holder}, lock {path}); "
                               "wait for it to finish or stop it, then rerun") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


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


def warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
