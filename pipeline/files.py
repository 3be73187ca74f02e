"""Reading what earlier stages wrote, with an error that names the stage to run when a file is missing, and
the stage to rerun when it is truncated, corrupt or of another kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gans.data import Dataset
from gans.io import load_torch
from pipeline import paths


class StageError(RuntimeError):
    """A stage cannot run: a missing input, or an input of the wrong kind."""


# The keys readers index in a stage's file without a default: a file without them is damaged, or was written
# by another program (the generator's keys are those gans.families.load_artifact requires).
KEYS: dict[Path, tuple[str, ...]] = {
    paths.PREPARED / "meta.json": ("hash",),
    paths.AUGMENTED / "meta.json": ("hash", "source"),
    paths.EVAL_METRICS: ("variant", "evaluator_id", "extractor", "num_samples"),
    paths.GENERATOR: ("spec", "variant"),
    paths.EVALUATOR: ("id",),
}


def require_file(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise StageError(f"{path} is missing: run the '{stage}' stage first (dvc repro {stage})")
    return path


def _unreadable(path: Path, stage: str, why: str) -> StageError:
    return StageError(f"{path} cannot be read ({why}): rerun the '{stage}' stage (dvc repro {stage}, or gans {stage})")


def _check_keys(obj: Any, path: Path, stage: str, what: str) -> None:
    if not isinstance(obj, dict):
        raise _unreadable(path, stage, f"not a {what}")
    missing = [key for key in KEYS.get(path, ()) if key not in obj]
    if missing:
        raise _unreadable(path, stage, f"no {missing[0]!r} in it")


def read_json(path: Path, stage: str) -> dict[str, Any]:
    """The JSON object ``stage`` wrote at ``path``."""
    try:
        obj = json.loads(require_file(path, stage).read_bytes())
    except OSError as err:
        raise _unreadable(path, stage, err.strerror or str(err)) from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise _unreadable(path, stage, f"truncated or corrupt: not valid JSON ({err})") from None
    _check_keys(obj, path, stage, "JSON object")
    return obj


def load_torch_file(path: Path, stage: str) -> dict[str, Any]:
    """The dict ``stage`` saved at ``path`` with ``torch.save``."""
    require_file(path, stage)
    try:
        obj = load_torch(path)
    except PermissionError as err:
        raise _unreadable(path, stage, err.strerror) from None
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, OSError, ... for a damaged file
        raise _unreadable(path, stage, f"truncated or corrupt: not a PyTorch file ({type(err).__name__})") from None
    _check_keys(obj, path, stage, "dict of tensors")
    return obj


def require_torch_file(path: Path, stage: str) -> Path:
    """``path``, once it has loaded as the file ``stage`` writes: for a file that code elsewhere loads again
    (the generator, the evaluator's classifiers), so that a damaged one fails naming the stage to rerun."""
    load_torch_file(path, stage)
    return path


def load_dataset_file(path: Path, stage: str) -> Dataset:
    """A prepared or augmented split written by ``stage``."""
    obj = load_torch_file(path, stage)
    try:
        return Dataset.from_dict(obj)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise _unreadable(path, stage, f"not a dataset: {type(err).__name__} {err}") from None
