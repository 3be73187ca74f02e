"""Atomic, durable file writes: a crash or a full disk never leaves a truncated file behind, and a file
reported written is on disk (fsynced, with its folder) before anything relies on it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


TMP_SUFFIX = ".tmp"  # temporary files are ``.NAME.RANDOM.tmp`` beside their target


class WriteFailed(OSError):
    """A write that did not complete (full disk, quota, permissions); the file it was replacing is intact."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Delete the temporary files that writes of ``target`` killed half-way left beside it (only while no
    other process may be writing it: a running write's temporary file looks the same)."""
    target = Path(target)
    stale = sorted(target.parent.glob(f".{target.name}.*{TMP_SUFFIX}")) if target.parent.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def fsync_dir(folder: str | Path) -> None:
    """Make the folder's entries (a rename, an unlink) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, rename it into place and fsync the
    folder. On failure the temporary file is removed and ``path`` is as it was; an OS error (a full disk)
    becomes ``WriteFailed`` naming the file and saying that its previous version is intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error(err)
        if cause is not None:
            before = "its previous version is intact" if path.exists() else "no earlier version existed"
            raise WriteFailed(cause.errno, f"could not write {path} ({cause.strerror or cause}); {before}") from err
        raise
    return path


def _os_error(err: BaseException) -> OSError | None:
    """The OS error behind ``err`` (torch's writer raises a RuntimeError whose context is the OSError)."""
    if isinstance(err, WriteFailed):
        return None
    for e in (err, err.__cause__, err.__context__):
        if isinstance(e, OSError):
            return e
    return None


def save_torch(obj: Any, path: str | Path) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # through a Python file, so a full disk surfaces as its OSError
            torch.save(obj, fh)

    return atomic_write(path, write)


def save_json(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def file_hash(path: str | Path, length: int = 16) -> str:
    """The first ``length`` hex digits of a file's sha256, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a file written by ``save_torch`` without unpickling arbitrary objects."""
    return torch.load(path, map_location=map_location, weights_only=True)
