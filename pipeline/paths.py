"""Where every stage reads and writes, relative to the project folder (the DVC root)."""

from __future__ import annotations

from pathlib import Path

PREPARED = Path("data/prepared")
AUGMENTED = Path("data/augmented")
MODELS = Path("models")
GENERATOR = MODELS / "generator.pt"
EVALUATOR = MODELS / "evaluator.pt"
DIRECTIONS = MODELS / "directions.pt"  # the explore stage's directions and encoder
CHECKPOINTS = MODELS / "checkpoints"
METRICS = Path("metrics")
TRAIN_METRICS = METRICS / "train.json"
EVAL_METRICS = METRICS / "eval.json"
EVALUATOR_METRICS = METRICS / "evaluator.json"
REGISTER_METRICS = METRICS / "register.json"
EXPLORE_METRICS = METRICS / "explore.json"
DIRECTION_GRIDS = Path("samples/directions")
TRAIN_PLOT = Path("plots/train.csv")
FID_PLOT = Path("plots/fid.csv")
TRUNCATION_PLOT = Path("plots/truncation.csv")  # FID, precision, recall against psi (header only without a latent)
CONFUSION_PLOT = Path("plots/confusion.csv")  # a classifier's holdout predictions (header only for other models)
GRID = Path("samples/grid.png")
TRAIN_LOCK = Path(".cache/train.lock")  # held by the training of this project folder
REFERENCE_CACHE = Path(".cache/reference")  # real-feature cache, under the project root


def project_root(start: Path | None = None) -> Path:
    """The project folder. Inside a DVC experiment copy (``.dvc/tmp/exps/...``) it is the
    folder that holds ``.dvc``, so a relative sqlite store is shared by every experiment."""
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    if ".dvc" in parts:
        i = len(parts) - 1 - parts[::-1].index(".dvc")
        if parts[i + 1:i + 3] == ("tmp", "exps"):
            return Path(*parts[:i])
    return here
