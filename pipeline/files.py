"""Reading what earlier stages wrote, with an error that names the stage to run when it is missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gans.data import Dataset
from gans.io import load_torch


class StageError(RuntimeError):
    """A stage cannot run: a missing input, or an input of the wrong kind."""


def require_file(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise StageError(f"{path} is missing: run the '{stage}' stage first (dvc repro {stage})")
    return path


def read_json(path: Path, stage: str) -> dict[str, Any]:
    return json.loads(require_file(path, stage).read_text())


def load_dataset_file(path: Path, stage: str) -> Dataset:
    """A prepared or augmented split written by ``stage``."""
    return Dataset.from_dict(load_torch(require_file(path, stage)))
