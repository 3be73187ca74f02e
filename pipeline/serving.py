"""Any family's artifact as an MLflow pyfunc model: one input row = one item, by artifact kind.

- ``generate``: ``seed`` (int >= 0) and, for class-conditional generators, ``label`` (int in
  [0, num_classes)) -> ``png``. The same seed (and label) always gives the same image.
- ``translate``: ``image`` (a base64 PNG of the model's input size) and, for two-way models, ``direction``
  (``a2b`` or ``b2a``) -> ``png``. The same image always gives the same translation.

A bad row gets a 400-style error naming the row and column; the server keeps serving.
"""

from __future__ import annotations

import base64
import math
import numbers
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from gans.families import load_artifact
from gans.sampling import png_bytes

MAX_SEED = 2**63 - 1


def _bad(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


def signature(conditional: bool) -> ModelSignature:
    """The ``generate`` signature: seed (and label) -> png."""
    columns = [ColSpec("long", "seed")]
    if conditional:
        columns.append(ColSpec("long", "label"))
    return ModelSignature(inputs=Schema(columns), outputs=Schema([ColSpec("string", "png")]))


def translate_signature(two_way: bool) -> ModelSignature:
    """The ``translate`` signature: image (base64 PNG) and direction -> png. ``direction`` is required by
    two-way models and optional for one-way ones, which still receive it (MLflow drops columns a signature
    does not name) and refuse any direction but their own."""
    columns = [ColSpec("string", "image"), ColSpec("string", "direction", required=two_way)]
    return ModelSignature(inputs=Schema(columns), outputs=Schema([ColSpec("string", "png")]))


def signature_of(artifact: Any) -> ModelSignature:
    """The pyfunc signature of an artifact, by its kind."""
    if artifact.kind == "translate":
        return translate_signature(len(artifact.directions) > 1)
    return signature(bool(artifact.num_classes))


def _check_table(frame: Any, *, required: str, max_rows: int, example: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise _bad(f"expected a table of rows with column '{required}'")
    if len(frame) == 0:
        raise _bad(f"the request has no rows; send at least one row like {example}")
    if len(frame) > max_rows:
        raise _bad(f"the request has {len(frame)} rows; at most {max_rows} per request (serve.max_rows)")
    if required not in frame.columns:
        raise _bad(f"missing column '{required}'; got columns {list(frame.columns)}")


def validate_rows(frame: pd.DataFrame, *, num_classes: int, max_rows: int) -> tuple[list[int], list[int] | None]:
    """Check a ``generate`` request and return (seeds, labels); raise a 400-style MlflowException otherwise."""
    _check_table(frame, required="seed", max_rows=max_rows, example='{"seed": 0}')
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


def _decode_image(value: Any, row: int) -> torch.Tensor:
    """A base64 PNG (or any image torchvision decodes) -> uint8 (C, H, W), C in {1, 3} (alpha dropped)."""
    from torchvision.io import ImageReadMode, decode_image

    if not isinstance(value, str) or not value:
        raise _bad(f"row {row}: 'image' must be a base64-encoded PNG string, got {type(value).__name__}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        raise _bad(f"row {row}: 'image' is not valid base64") from None
    try:
        img = decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
    except Exception:  # noqa: BLE001 - any decoder error means the bytes are not an image
        raise _bad(f"row {row}: 'image' is not a readable image (send a PNG)") from None
    return img[:1] if img.shape[0] == 2 else img[:3] if img.shape[0] == 4 else img


def _fit_channels(img: torch.Tensor, channels: int, row: int) -> torch.Tensor:
    """A grey image becomes RGB for a colour model (lossless); a colour image for a grey model is refused."""
    if img.shape[0] == channels:
        return img
    if img.shape[0] == 1:
        return img.expand(channels, -1, -1)
    raise _bad(f"row {row}: 'image' has {img.shape[0]} channels; this model takes {channels}-channel images")


def validate_translate_rows(frame: pd.DataFrame, artifact: Any, *,
                            max_rows: int) -> dict[str, tuple[list[int], torch.Tensor]]:
    """Check a ``translate`` request; return {direction: (row numbers, uint8 images (N, C, R, R))}."""
    directions, r = tuple(artifact.directions), artifact.resolution
    _check_table(frame, required="image", max_rows=max_rows, example='{"image": "<base64 PNG>"}')
    extra = sorted(set(frame.columns) - {"image", "direction"})
    if extra:
        raise _bad(f"unknown column(s) {extra}: this model takes 'image'" + (" and 'direction'" if len(directions) > 1 else ""))
    if "direction" not in frame.columns and len(directions) > 1:
        raise _bad(f"this model translates both ways: every row needs 'direction', one of {', '.join(directions)}")
    groups: dict[str, tuple[list[int], list[torch.Tensor]]] = {}
    for i, row in enumerate(frame.to_dict("records")):
        direction = row.get("direction")
        if direction is None or (isinstance(direction, float) and math.isnan(direction)):
            if len(directions) > 1:
                raise _bad(f"row {i}: 'direction' is missing; this model translates {', '.join(directions)}")
            direction = directions[0]
        if direction not in directions:
            raise _bad(f"row {i}: 'direction' must be one of {', '.join(directions)}, got {direction!r}")
        img = _decode_image(row["image"], i)
        if tuple(img.shape[1:]) != (r, r):
            raise _bad(f"row {i}: 'image' is {img.shape[2]}x{img.shape[1]} pixels; this model translates {r}x{r} images")
        rows, images = groups.setdefault(direction, ([], []))
        rows.append(i)
        images.append(_fit_channels(img, artifact.in_channels(direction), i))
    return {d: (rows, torch.stack(images)) for d, (rows, images) in groups.items()}


def _encode(images: Any) -> pd.DataFrame:
    return pd.DataFrame({"png": [base64.b64encode(png_bytes(img)).decode("ascii") for img in images]})


class ArtifactModel(mlflow.pyfunc.PythonModel):
    """Loads the artifact (``models/generator.pt``) from the model's artifacts and answers rows of its kind."""

    def load_context(self, context: Any) -> None:
        self.artifact = load_artifact(context.artifacts["generator"], "cpu")
        config = getattr(context, "model_config", None) or {}
        self.max_rows = int(config.get("max_rows", 64))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        artifact = self.artifact
        if artifact.kind == "translate":
            groups = validate_translate_rows(model_input, artifact, max_rows=self.max_rows)
            out: list[Any] = [None] * len(model_input)
            for direction, (rows, images) in groups.items():
                for row, image in zip(rows, artifact.translate(images, direction)):
                    out[row] = image
            return _encode(out)
        seeds, labels = validate_rows(model_input, num_classes=artifact.num_classes, max_rows=self.max_rows)
        return _encode(artifact.generate(seeds, labels))


GeneratorModel = ArtifactModel  # the name models registered by earlier releases load
