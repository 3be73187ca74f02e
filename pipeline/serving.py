"""The generator as an MLflow pyfunc model: one input row = one image.

Input columns: ``seed`` (int >= 0) and, for class-conditional generators,
``label`` (int in [0, num_classes)). Output column: ``png`` (base64 PNG).
The same seed (and label) always gives the same image.
"""

from __future__ import annotations

import base64
import math
import numbers
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from gans.sampling import generate, png_bytes
from gans.trainer import load_generator

MAX_SEED = 2**63 - 1


def signature(conditional: bool) -> ModelSignature:
    columns = [ColSpec("long", "seed")]
    if conditional:
        columns.append(ColSpec("long", "label"))
    return ModelSignature(inputs=Schema(columns), outputs=Schema([ColSpec("string", "png")]))


def _bad(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


def validate_rows(frame: pd.DataFrame, *, num_classes: int, max_rows: int) -> tuple[list[int], list[int] | None]:
    """Check a request and return (seeds, labels); raise a 400-style MlflowException otherwise."""
    if not isinstance(frame, pd.DataFrame):
        raise _bad("expected a table of rows with column 'seed'" + (" and 'label'" if num_classes else ""))
    if len(frame) == 0:
        raise _bad("the request has no rows; send at least one row like {\"seed\": 0}")
    if len(frame) > max_rows:
        raise _bad(f"the request has {len(frame)} rows; at most {max_rows} images per request (serve.max_rows)")
    if "seed" not in frame.columns:
        raise _bad(f"missing column 'seed'; got columns {list(frame.columns)}")
    seeds = _int_column(frame["seed"], "seed", 0, MAX_SEED)
    labels = None
    if num_classes:
        if "label" not in frame.columns:
            raise _bad(f"this generator is class-conditional: every row needs 'label' in 0..{num_classes - 1}")
        labels = _int_column(frame["label"], "label", 0, num_classes - 1)
    return seeds, labels


def _int_column(column: pd.Series, name: str, low: int, high: int) -> list[int]:
    values = []
    for i, v in enumerate(column.tolist()):
        integral = isinstance(v, numbers.Integral) or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
        if isinstance(v, bool) or not integral:
            raise _bad(f"row {i}: '{name}' must be an integer, got {v!r}")
        v = int(v)
        if not low <= v <= high:
            raise _bad(f"row {i}: '{name}' must be in {low}..{high}, got {v}")
        values.append(v)
    return values


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """Loads ``models/generator.pt`` from the model's artifacts and renders PNGs."""

    def load_context(self, context: Any) -> None:
        import torch

        self.generator, payload = load_generator(context.artifacts["generator"], "cpu")
        self.z_dim = payload["spec"]["z_dim"]
        self.num_classes = payload["spec"]["num_classes"]
        config = getattr(context, "model_config", None) or {}
        self.max_rows = int(config.get("max_rows", 64))
        self.device = torch.device("cpu")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        seeds, labels = validate_rows(model_input, num_classes=self.num_classes, max_rows=self.max_rows)
        images = generate(self.generator, seeds, labels, z_dim=self.z_dim, device=self.device)
        encoded = [base64.b64encode(png_bytes(img)).decode("ascii") for img in images]
        return pd.DataFrame({"png": encoded})
