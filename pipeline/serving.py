"""Any family's artifact as an MLflow pyfunc model: one input row = one item, by artifact kind.

- ``generate``: ``seed`` (int >= 0) and, for class-conditional generators, ``label`` (int in
  [0, num_classes)) -> ``png``. The same seed (and label) always gives the same image. Optional
  ``truncation`` (psi in 0..1) scales the seed's latent towards the mean latent (a style-based generator: its w
  towards the mean w); a style-based generator also mixes styles: ``mix_seed`` with ``mix_layer``.
- ``translate``: ``image`` (a base64 PNG of the model's input size) and, for two-way models, ``direction``
  (``a2b`` or ``b2a``) -> ``png``. The same image always gives the same translation.
- ``classify``: ``image`` (a base64 PNG of the model's input size) -> ``label`` (the most probable class),
  ``class`` (its name) and ``probabilities`` (one per class, summing to 1).
- ``pair``: ``seed`` (int >= 0) -> ``png_a`` and ``png_b``, the two images a CoGAN draws from the seed's latent
  (optional ``truncation``, as for ``generate``).

A bad row gets a 400-style error naming the row and column; the server keeps serving. Under ``gans serve``,
:class:`RequestGuard` stands in front of MLflow's scoring app: a body larger than ``serve.max_rows`` rows can
need gets a 413 before MLflow reads or parses it.
"""

from __future__ import annotations

import base64
import json
import math
import numbers
import os
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType
from uvicorn.protocols.http.h11_impl import H11Protocol

from gans.families import load_artifact
from gans.sampling import png_bytes

MAX_SEED = 2**63 - 1
EXACT_FLOAT = 2**53  # from here on a float no longer holds every integer: 2**53 + 1 reads as 2**53


def _bad(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


def signature(conditional: bool) -> ModelSignature:
    """The ``generate`` signature: seed (and label) -> png. The columns are typed ``Any``, not ``long``: for a
    ``long`` column MLflow's scoring server casts the parsed JSON with ``astype(int64)`` before the model sees
    it (``cast_df_types_according_to_schema``), so a label 2.5 became 2, a seed ``true`` became 1 and ``"3"``
    became 3, all answered 200. Untyped, the JSON values reach :func:`validate_rows`, which names the row.
    An unconditional generator names ``label`` too, optional: MLflow drops the columns a signature does not
    name, so a label sent to it would be ignored without a word; named, it reaches the model, which refuses it."""
    columns = [ColSpec(AnyType(), "seed", required=False), ColSpec(AnyType(), "label", required=conditional),
               ColSpec(AnyType(), "truncation", required=False), ColSpec(AnyType(), "direction", required=False),
               ColSpec(AnyType(), "alpha", required=False), ColSpec(AnyType(), "mix_seed", required=False),
               ColSpec(AnyType(), "mix_layer", required=False), ColSpec(AnyType(), "image", required=False)]
    return ModelSignature(inputs=Schema(columns), outputs=Schema([ColSpec("string", "png")]))


def translate_signature(two_way: bool, column: str = "direction") -> ModelSignature:
    """The ``translate`` signature: image (base64 PNG) and direction (or, for a multi-domain model, domain) ->
    png. ``direction`` is required by two-way models and optional for one-way ones, which still receive it
    (MLflow drops columns a signature does not name) and refuse any direction but their own."""
    columns = [ColSpec("string", "image"), ColSpec("string", column, required=two_way)]
    return ModelSignature(inputs=Schema(columns), outputs=Schema([ColSpec("string", "png")]))


def classify_signature() -> ModelSignature:
    """The ``classify`` signature: image (base64 PNG) -> label, class and probabilities."""
    from mlflow.types.schema import Array
    from mlflow.types import DataType

    return ModelSignature(inputs=Schema([ColSpec("string", "image")]),
                          outputs=Schema([ColSpec("long", "label"), ColSpec("string", "class"),
                                          ColSpec(Array(DataType.double), "probabilities")]))


def pair_signature() -> ModelSignature:
    """The ``pair`` signature: seed -> png_a, png_b. Untyped like :func:`signature`'s seed (validate_rows
    names a bad value); ``label`` is named, optional, so that a label sent to this unconditional model is
    refused rather than dropped."""
    columns = [ColSpec(AnyType(), "seed", required=False), ColSpec(AnyType(), "label", required=False),
               ColSpec(AnyType(), "truncation", required=False)]
    return ModelSignature(inputs=Schema(columns), outputs=Schema([ColSpec("string", "png_a"), ColSpec("string", "png_b")]))


def target_column(artifact: Any) -> str:
    """The column a translator's rows name their target in: ``direction`` (a2b, x4, ...), or ``domain`` for a
    multi-domain model."""
    return getattr(artifact, "target_column", "direction")


def signature_of(artifact: Any) -> ModelSignature:
    """The pyfunc signature of an artifact, by its kind."""
    if artifact.kind == "translate":
        return translate_signature(len(artifact.directions) > 1, target_column(artifact))
    if artifact.kind == "classify":
        return classify_signature()
    if artifact.kind == "pair":
        return pair_signature()
    return signature(bool(artifact.num_classes))


def input_example_of(artifact: Any) -> pd.DataFrame:
    """Two good rows for the artifact's kind, logged with the model (the registry UI shows them, and MLflow
    checks the model answers them): seeds 0 and 1 (with labels 0 and 1), or a blank image of the model's size
    in each direction."""
    if artifact.kind == "translate":
        directions = list(artifact.directions)
        images = [base64.b64encode(png_bytes(torch.zeros(artifact.in_channels(d), artifact.resolution,
                                                         artifact.resolution, dtype=torch.uint8))).decode("ascii")
                  for d in directions]
        return pd.DataFrame({"image": images, target_column(artifact): directions})
    if artifact.kind == "classify":
        blank = torch.zeros(artifact.channels, artifact.resolution, artifact.resolution, dtype=torch.uint8)
        return pd.DataFrame({"image": [base64.b64encode(png_bytes(blank)).decode("ascii")] * 2})
    rows = pd.DataFrame({"seed": [0, 1]})
    if artifact.num_classes:
        rows["label"] = [0, 1 % artifact.num_classes]
    return rows


def _check_table(frame: Any, *, required: str, max_rows: int, example: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise _bad(f"expected a table of rows with column '{required}'")
    if len(frame) == 0:
        raise _bad(f"the request has no rows; send at least one row like {example}")
    if len(frame) > max_rows:
        raise _bad(f"the request has {len(frame)} rows; at most {max_rows} per request (serve.max_rows)")
    if required not in frame.columns:
        raise _bad(f"missing column '{required}'; got columns {list(frame.columns)}")


MAX_ALPHA = 10.0  # latents are standard normal: a step of 10 is already far outside what training saw


def validate_edits(frame: pd.DataFrame, *, directions: int) -> tuple[list[int], list[float]] | None:
    """The optional ``direction`` and ``alpha`` of a ``generate`` request: None when no row has either, else a
    direction (0..directions-1) and an alpha per row (a row with neither: direction 0, alpha 0, the seed's own
    image). Raise a 400-style MlflowException naming the row otherwise."""
    cols = {c: frame[c].tolist() if c in frame.columns else [None] * len(frame) for c in ("direction", "alpha")}
    if all(_missing(v) for values in cols.values() for v in values):
        return None
    out_d, out_a = [], []
    for i, (d, a) in enumerate(zip(cols["direction"], cols["alpha"])):
        if _missing(d) != _missing(a):
            given, absent = ("direction", "alpha") if _missing(a) else ("alpha", "direction")
            raise _bad(f"row {i}: '{given}' given without '{absent}'; an edit needs both (direction 0..{directions - 1}, "
                       f"alpha -{MAX_ALPHA:g}..{MAX_ALPHA:g})")
        if _missing(d):
            out_d.append(0)
            out_a.append(0.0)
            continue
        integral = isinstance(d, numbers.Integral) or (isinstance(d, float) and math.isfinite(d) and d.is_integer())
        if isinstance(d, bool) or not integral:
            raise _bad(f"row {i}: 'direction' must be an integer, got {type(d).__name__} {d!r}")
        if not 0 <= int(d) < directions:
            raise _bad(f"row {i}: 'direction' must be in 0..{directions - 1} (the generator's top SeFa directions), "
                       f"got {int(d)}")
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not math.isfinite(a):
            raise _bad(f"row {i}: 'alpha' must be a finite number, got {type(a).__name__} {a!r}")
        if abs(a) > MAX_ALPHA:
            raise _bad(f"row {i}: 'alpha' must be in -{MAX_ALPHA:g}..{MAX_ALPHA:g}, got {a!r}")
        out_d.append(int(d))
        out_a.append(float(a))
    return out_d, out_a


def validate_truncation(frame: pd.DataFrame) -> list[float] | float:
    """The optional ``truncation`` column: psi per row (a row without one: 1, the seed's own latent), or 1.0
    when no row has one. Raise a 400-style MlflowException naming the row for a value that is not a number
    in 0..1."""
    if "truncation" not in frame.columns or all(_missing(v) for v in frame["truncation"].tolist()):
        return 1.0
    out = []
    for i, psi in enumerate(frame["truncation"].tolist()):
        if _missing(psi):
            out.append(1.0)
            continue
        if isinstance(psi, bool) or not isinstance(psi, numbers.Real) or not math.isfinite(psi):
            raise _bad(f"row {i}: 'truncation' must be a number in 0..1, got {type(psi).__name__} {psi!r}")
        if not 0 <= psi <= 1:
            raise _bad(f"row {i}: 'truncation' must be in 0..1 (1: the seed's own latent, 0: the mean latent), "
                       f"got {psi!r}")
        out.append(float(psi))
    return out


MIX_COLUMNS = ("mix_seed", "mix_layer")


def validate_mixing(frame: pd.DataFrame, artifact: Any) -> tuple[list[int], list[int]] | None:
    """The optional ``mix_seed`` and ``mix_layer`` of a ``generate`` request: None when no row has either, else
    a mix seed and a mix layer per row (a row with neither keeps its own styles: its own seed, mixed from the
    last layer on, which is none). Raise a 400-style MlflowException naming the row otherwise: for a model
    without style layers, for one column without the other, for a layer out of range, or beside an edit."""
    cols = {c: frame[c].tolist() if c in frame.columns else [None] * len(frame) for c in MIX_COLUMNS}
    given = [i for i in range(len(frame)) if any(not _missing(cols[c][i]) for c in MIX_COLUMNS)]
    if not given:
        return None
    layers = getattr(artifact, "mix_layers", 0)
    if not layers:
        raise _bad(f"row {given[0]}: 'mix_seed'/'mix_layer' given, but {artifact.variant} ({artifact.family}) has no "
                   "style layers to mix; style mixing needs a style-based generator (stylegan2): drop them")
    for column in ("direction", "alpha"):
        if column in frame.columns and any(not _missing(v) for v in frame[column].tolist()):
            raise _bad(f"a request either mixes styles (mix_seed, mix_layer) or edits along a direction (direction, "
                       f"alpha), not both: '{column}' and 'mix_seed' were given; send them separately")
    seeds, out_layers = [], []
    for i in range(len(frame)):
        seed, layer = cols["mix_seed"][i], cols["mix_layer"][i]
        if _missing(seed) and _missing(layer):
            seeds.append(0)
            out_layers.append(layers)
            continue
        if _missing(seed) != _missing(layer):
            have, lack = ("mix_seed", "mix_layer") if _missing(layer) else ("mix_layer", "mix_seed")
            raise _bad(f"row {i}: '{have}' given without '{lack}'; style mixing needs both (mix_seed >= 0, mix_layer "
                       f"1..{layers - 1})")
        seeds.append(_int_column(pd.Series([seed]), "mix_seed", 0, MAX_SEED, row=i)[0])
        out_layers.append(_int_column(pd.Series([layer]), "mix_layer", 1, layers - 1, row=i)[0])
    return seeds, out_layers


def validate_rows(frame: pd.DataFrame, *, num_classes: int, max_rows: int) -> tuple[list[int], list[int] | None]:
    """Check a ``generate`` request and return (seeds, labels); raise a 400-style MlflowException otherwise."""
    _check_table(frame, required="seed", max_rows=max_rows, example='{"seed": 0}')
    seeds = _int_column(frame["seed"], "seed", 0, MAX_SEED)
    labels = None
    if not num_classes and "label" in frame.columns:
        given = [i for i, v in enumerate(frame["label"].tolist()) if not _missing(v)]
        if given:
            raise _bad(f"row {given[0]}: 'label' given, but this generator is unconditional (trained without "
                       "labels): drop 'label'")
    if num_classes:
        if "label" not in frame.columns:
            raise _bad(f"this generator is class-conditional: every row needs 'label' in 0..{num_classes - 1}")
        labels = _int_column(frame["label"], "label", 0, num_classes - 1)
    return seeds, labels


def refuse_latent_columns(frame: Any, artifact: Any) -> None:
    """A model without a latent (a PixelCNN) draws from seeds only: a row with 'truncation', 'direction',
    'alpha' or 'image' asks for a truncation, an edit or an inversion it cannot make, and is refused rather
    than answered as a plain draw."""
    if not isinstance(frame, pd.DataFrame):
        return
    for column in ("truncation", "direction", "alpha", *MIX_COLUMNS, "image"):
        if column in frame.columns:
            given = [i for i, v in enumerate(frame[column].tolist()) if not _missing(v)]
            if given:
                raise _bad(f"row {given[0]}: '{column}' given, but {artifact.variant} ({artifact.family}) has no latent "
                           "to truncate, edit or invert: it draws images pixel by pixel from a 'seed'; drop "
                           f"'{column}'")


def inverting(frame: Any) -> bool:
    """Whether a ``generate`` request asks for latents: any row with an ``image``."""
    return isinstance(frame, pd.DataFrame) and "image" in frame.columns and \
        any(not _missing(v) for v in frame["image"].tolist())


def validate_invert_rows(frame: pd.DataFrame, artifact: Any, *, max_rows: int) -> tuple[torch.Tensor, list[int] | None]:
    """Check an inversion request (every row an ``image`` of the model's size, and a ``label`` when it is
    conditional); return the uint8 images (N, C, R, R) and the labels."""
    _check_table(frame, required="image", max_rows=max_rows, example='{"image": "<base64 PNG>"}')
    if artifact.encoder is None:
        raise _bad("this model version was registered without the explore stage's encoder, so it cannot invert "
                   "images: register a generator after `gans explore` (dvc repro runs it) to get one")
    for column in ("seed", "truncation", "direction", "alpha", *MIX_COLUMNS):
        if column in frame.columns:
            given = [i for i, v in enumerate(frame[column].tolist()) if not _missing(v)]
            if given:
                raise _bad(f"row {given[0]}: '{column}' given in a request that inverts images ('image'); a request "
                           "either draws (seed, truncation, direction, alpha, mix_seed, mix_layer) or inverts (image): "
                           "send them separately")
    r, channels = artifact.spec["resolution"], artifact.spec["channels"]
    images = []
    for i, value in enumerate(frame["image"].tolist()):
        if _missing(value):
            raise _bad(f"row {i}: 'image' is missing; in a request that inverts images every row needs one")
        img = _fit_channels(_decode_image(value, i), channels, i)
        if tuple(img.shape[1:]) != (r, r):
            raise _bad(f"row {i}: 'image' is {img.shape[2]}x{img.shape[1]}; this generator draws and inverts "
                       f"{r}x{r} images")
        images.append(img)
    labels = None
    if artifact.num_classes:
        if "label" not in frame.columns:
            raise _bad(f"this generator is class-conditional: every row needs 'label' in 0..{artifact.num_classes - 1} "
                       "(the class its latent is searched under)")
        labels = _int_column(frame["label"], "label", 0, artifact.num_classes - 1)
    elif "label" in frame.columns and any(not _missing(v) for v in frame["label"].tolist()):
        raise _bad("'label' given, but this generator is unconditional (trained without labels): drop 'label'")
    return torch.stack(images), labels


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))  # pandas turns a missing or null cell into NaN


def _int_column(column: pd.Series, name: str, low: int, high: int, row: int = 0) -> list[int]:
    """Integers (or floats that hold one exactly, like 2.0) in low..high; bools, strings, 2.5 are refused.
    Errors count rows from ``row``."""
    values = column.tolist()
    for i, v in enumerate(values, start=row):  # what is wrong with a row itself first
        if _missing(v):
            raise _bad(f"row {i}: '{name}' is missing or null; every row needs an integer '{name}'")
        integral = isinstance(v, numbers.Integral) or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
        if isinstance(v, bool) or not integral:
            raise _bad(f"row {i}: '{name}' must be an integer, got {type(v).__name__} {v!r}")
        if not (isinstance(v, float) and abs(v) >= EXACT_FLOAT) and not low <= int(v) <= high:
            raise _bad(f"row {i}: '{name}' must be in {low}..{high}, got {int(v)}")
    for i, v in enumerate(values, start=row):  # pandas holds a column that mixes integers and floats as floats
        if isinstance(v, float) and abs(v) >= EXACT_FLOAT:
            raise _bad(f"row {i}: '{name}' arrived as the float {v!r}, too large to be exact (a column that mixes "
                       f"integers and floats is read as floats); send every '{name}' as a JSON integer")
    return [int(v) for v in values]


def _decode_image(value: Any, row: int) -> torch.Tensor:
    """A base64 PNG (or any image torchvision decodes) -> uint8 (C, H, W), C in {1, 3} (alpha dropped)."""
    from torchvision.io import ImageReadMode, decode_image

    if not isinstance(value, str):
        raise _bad(f"row {row}: 'image' must be a base64-encoded PNG string, got {type(value).__name__}")
    if not value:
        raise _bad(f"row {row}: 'image' is an empty string; send a base64-encoded PNG")
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


def validate_classify_rows(frame: pd.DataFrame, artifact: Any, *, max_rows: int) -> torch.Tensor:
    """Check a ``classify`` request (every row one ``image`` of the model's size, nothing else); return the
    uint8 images (N, C, R, R)."""
    _check_table(frame, required="image", max_rows=max_rows, example='{"image": "<base64 PNG>"}')
    extra = [c for c in frame.columns if c != "image" and any(not _missing(v) for v in frame[c].tolist())]
    if extra:
        raise _bad(f"unknown column(s) {extra}: {artifact.variant} ({artifact.family}) classifies images; each row "
                   "takes 'image' only")
    r, images = artifact.resolution, []
    for i, value in enumerate(frame["image"].tolist()):
        if _missing(value):
            raise _bad(f"row {i}: 'image' is missing; every row needs a base64-encoded PNG")
        img = _fit_channels(_decode_image(value, i), artifact.channels, i)
        if tuple(img.shape[1:]) != (r, r):
            raise _bad(f"row {i}: 'image' is {img.shape[2]}x{img.shape[1]} pixels; this model classifies {r}x{r} images")
        images.append(img)
    return torch.stack(images)


def validate_translate_rows(frame: pd.DataFrame, artifact: Any, *,
                            max_rows: int) -> dict[str, tuple[list[int], torch.Tensor]]:
    """Check a ``translate`` request; return {direction or domain: (row numbers, uint8 images (N, C, R, R))}."""
    directions, r, column = tuple(artifact.directions), artifact.resolution, target_column(artifact)
    known = ", ".join(directions)
    check = getattr(artifact, "target_of", None)  # a multi-domain model reads its own domain names and vectors
    _check_table(frame, required="image", max_rows=max_rows, example='{"image": "<base64 PNG>"}')
    extra = sorted(set(frame.columns) - {"image", column})
    if extra:
        raise _bad(f"unknown column(s) {extra}: this model takes 'image'" + (f" and '{column}'" if len(directions) > 1 else ""))
    if column not in frame.columns and len(directions) > 1:
        what = "translates both ways" if column == "direction" else "translates between domains"
        raise _bad(f"this model {what}: every row needs '{column}', one of {known}")
    groups: dict[str, tuple[list[int], list[torch.Tensor]]] = {}
    for i, row in enumerate(frame.to_dict("records")):
        direction = row.get(column)
        if direction is None or (isinstance(direction, float) and math.isnan(direction)):
            if len(directions) > 1:
                raise _bad(f"row {i}: '{column}' is missing; this model translates {known}")
            direction = directions[0]
        if check is not None:
            try:
                check(str(direction))
            except ValueError as err:
                raise _bad(f"row {i}: '{column}' {err}") from None
            direction = str(direction)
        elif direction not in directions:
            raise _bad(f"row {i}: '{column}' must be one of {known}, got {direction!r}")
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
        if "directions" in context.artifacts and hasattr(self.artifact, "attach_encoder"):
            from gans.io import load_torch

            self.artifact.attach_encoder(load_torch(context.artifacts["directions"], map_location="cpu"))
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
        if artifact.kind == "pair":
            seeds, _ = validate_rows(model_input, num_classes=0, max_rows=self.max_rows)
            a, b = artifact.generate_pair(seeds, truncation=validate_truncation(model_input))
            return pd.DataFrame({"png_a": _encode(a)["png"], "png_b": _encode(b)["png"]})
        if artifact.kind == "classify":
            probabilities = artifact.classify(validate_classify_rows(model_input, artifact, max_rows=self.max_rows))
            labels = probabilities.argmax(1).tolist()
            return pd.DataFrame({"label": labels, "class": [artifact.classes[k] for k in labels],
                                 "probabilities": [[float(p) for p in row] for row in probabilities.double().tolist()]})
        if hasattr(artifact, "invert") and inverting(model_input):
            images, labels = validate_invert_rows(model_input, artifact, max_rows=self.max_rows)
            z, drawn = artifact.invert(images, labels)
            return pd.DataFrame({"latent": [[round(float(v), 6) for v in row] for row in z.tolist()],
                                 "png": _encode(drawn)["png"]})
        if not hasattr(artifact, "edit"):
            refuse_latent_columns(model_input, artifact)
        seeds, labels = validate_rows(model_input, num_classes=artifact.num_classes, max_rows=self.max_rows)
        if not getattr(artifact, "truncates", False):
            return _encode(artifact.generate(seeds, labels))
        psi = validate_truncation(model_input)
        mixing = validate_mixing(model_input, artifact)
        if mixing is not None:
            return _encode(artifact.generate(seeds, labels, truncation=psi, mix_seeds=mixing[0], mix_layers=mixing[1]))
        edits = validate_edits(model_input, directions=artifact.edit_directions) \
            if hasattr(artifact, "edit") else None
        if edits is not None:
            return _encode(artifact.edit(seeds, labels, *edits, truncation=psi))
        return _encode(artifact.generate(seeds, labels, truncation=psi))


GeneratorModel = ArtifactModel  # the name models registered by earlier releases load


# The request guard. MLflow's scoring server (mlflow/pyfunc/scoring_server/__init__.py: ``init`` reads the
# body with ``await request.body()``, ``invocations`` parses it into a DataFrame) has no body-size setting,
# and neither has uvicorn, which serves it: a million rows (25 MB) were parsed for 2 s before the model
# could count them. uvicorn does take its HTTP protocol class as an import string (``--http``, or
# ``UVICORN_HTTP`` in the environment, which ``mlflow models serve`` passes on): ``gans serve`` names
# GuardedH11Protocol there and the limits in GANS_SERVE_LIMITS.

LIMITS_ENV = "GANS_SERVE_LIMITS"
GENERATE_ROW_BYTES = 256  # {"seed": 9223372036854775807, "label": 4095}, pretty-printed, is about 60
ENVELOPE_BYTES = 16 * 1024


def max_request_bytes(max_rows: int, resolution: int) -> int:
    """The largest body ``max_rows`` good rows can need: a row is a seed and a label, or an image of
    ``resolution`` pixels a side and a direction. A PNG stored uncompressed in 16-bit RGBA takes 8 bytes a
    pixel (plus a filter byte a line), base64 4/3 of that: 12 bytes a pixel covers it."""
    row = max(GENERATE_ROW_BYTES, 12 * resolution * resolution + 1024)
    return max_rows * row + ENVELOPE_BYTES


class RequestGuard:
    """ASGI middleware in front of the scoring app. A POST body over ``max_bytes`` gets a 413 before it is
    read: by its Content-Length, or (chunked, no length) once that many bytes have come; uvicorn discards the
    rest and the connection stays usable. A POST that is not ``application/json`` gets a 415 naming what it
    sent: without a Content-Type MLflow answered 500, and its CSV parser needs typed columns, which the
    generate signature no longer has (see :func:`signature`). ``GET /model`` answers ``description`` (what
    the model is and takes: :func:`describe_model`) as JSON. Everything else passes through."""

    def __init__(self, app: Any, *, max_bytes: int, max_rows: int, columns: list[str] | None = None,
                 description: dict[str, Any] | None = None) -> None:
        self.app, self.max_bytes, self.max_rows, self.columns = app, max_bytes, max_rows, columns
        self.description = {**(description or {}), "max_rows": max_rows, "max_request_bytes": max_bytes}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"].rstrip("/") == "/model":
            await _json(send, 200, self.description, head=scope["method"] == "HEAD")
            return
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")  # h11 has checked that it is a number
        if length is not None and int(length) > self.max_bytes:
            await self._too_large(send, f"the request body is {int(length)} bytes")
            return
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if content_type.split(";")[0].strip().lower() != "application/json":
            got = f"Content-Type {content_type!r}" if content_type else "no Content-Type header"
            await _error(send, 415, "BAD_REQUEST", f"the request has {got}; this server takes JSON: send "
                         'Content-Type: application/json and a body like {"dataframe_records": [...]}')
            return
        if length is not None and self.columns is None:  # h11 delivers exactly that many bytes
            await self.app(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._too_large(send, f"the request body is over {len(body)} bytes")
                return
        unknown = unknown_column(bytes(body), self.columns) if self.columns is not None else None
        if unknown:
            await _error(send, 400, "INVALID_PARAMETER_VALUE", unknown)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, send: Any, what: str) -> None:
        await _error(send, 413, "REQUEST_LIMIT_EXCEEDED",
                     f"{what}; this server takes at most {self.max_bytes} bytes, enough for serve.max_rows "
                     f"({self.max_rows}) rows: send at most {self.max_rows} rows per request")


def unknown_column(body: bytes, columns: list[str]) -> str | None:
    """The message for the first column of a JSON request body that is not among ``columns`` (MLflow drops
    such a column with a log line, so a misspelt ``lable`` or a ``colour`` would be ignored), else None. Only
    named columns are checked (``dataframe_records``, ``dataframe_split``, ``inputs`` and ``instances`` as
    records or as a mapping of columns); a body that does not parse is left to MLflow's own errors."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    forms = [(k, v) for k, v in payload.items() if k != "params"]  # inference params travel beside the data
    if len(forms) != 1:
        return None
    (form, data), = forms
    if form == "dataframe_split" and isinstance(data, dict) and isinstance(data.get("columns"), list):
        named = [("", data["columns"])]
    elif form in ("dataframe_records", "inputs", "instances") and isinstance(data, list):
        named = [(f"row {i}: ", list(row)) for i, row in enumerate(data) if isinstance(row, dict)]
    elif form in ("inputs", "instances") and isinstance(data, dict):
        named = [("", list(data))]
    else:
        return None
    for where, names in named:
        for name in names:
            if name not in columns:
                return f"{where}unknown column {name!r}; this model takes {', '.join(columns)}"
    return None


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI ``receive`` that gives ``body`` in one message, then whatever ``receive`` gives (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> dict:
        return pending.pop() if pending else await receive()
    return replay


async def _error(send: Any, status: int, code: str, message: str) -> None:
    """An error response shaped like MLflow's own: JSON with ``error_code`` and ``message``."""
    await _json(send, status, {"error_code": code, "message": message})


async def _json(send: Any, status: int, payload: Any, *, head: bool = False) -> None:
    body = json.dumps(payload, indent=1).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": b"" if head else body})


def describe_model(uri: str, info: Any, *, version: str | int | None = None) -> dict[str, Any]:
    """What ``GET /model`` answers for the model at ``uri`` (its ``mlflow.models.ModelInfo``): what it is
    (family, variant, kind, classes or directions, resolution, how a seed becomes a latent), the columns it
    takes and returns, an example request, and its portable exports. ``version``: the registered version
    (``info`` has none for an alias). Models registered before this description existed give their
    signature only."""
    gans = dict((info.metadata or {}).get("gans", {}))
    sig = info.signature.to_dict() if info.signature is not None else {}
    direction = (gans.get("directions") or ["a2b"])[0]
    column = gans.get("target_column", "direction")
    example = (json.dumps({"dataframe_records": [{"seed": 0}]}) if gans.get("kind") in ("generate", "pair") else
               json.dumps({"dataframe_records": [{"image": "<base64 PNG>", column: direction}]})
               if gans.get("kind") == "translate" else
               json.dumps({"dataframe_records": [{"image": "<base64 PNG>"}]}) if gans.get("kind") == "classify" else None)
    version = version if version is not None else info.registered_model_version
    return {"model": uri, "version": None if version is None else str(version), "run_id": info.run_id, **gans, "inputs": json.loads(sig.get("inputs") or "null"),
            "outputs": json.loads(sig.get("outputs") or "null"), "example_request": example,
            "request": "POST /invocations with Content-Type: application/json"}


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol (its default where httptools is not installed, as here) with the app behind a
    :class:`RequestGuard` whose limits come from GANS_SERVE_LIMITS (``{"max_rows": N, "resolution": R,
    "columns": [...], "description": {...}}``; without ``columns`` no column is checked)."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        limits = json.loads(os.environ[LIMITS_ENV])
        max_rows = int(limits["max_rows"])
        self.app = RequestGuard(self.app, max_rows=max_rows, columns=limits.get("columns"),
                                description=limits.get("description"),
                                max_bytes=max_request_bytes(max_rows, int(limits["resolution"])))
