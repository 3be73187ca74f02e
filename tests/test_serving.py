"""Serving rows by artifact kind, in process: what a translator takes, and every bad row's 400."""

from __future__ import annotations

import base64
import json
import re
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from torchvision.io import decode_png, encode_png

from gans.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from gans.data import load_dataset
from gans.families import build_trainer
from gans.io import save_torch
from pipeline.serving import (ArtifactModel, refuse_latent_columns, signature_of, unknown_column, validate_edits,
                              validate_mixing, validate_rows, validate_translate_rows, validate_truncation)


def _png(image: torch.Tensor) -> str:
    return base64.b64encode(encode_png(image).numpy().tobytes()).decode()


@pytest.fixture(scope="module")
def translator(tmp_path_factory: pytest.TempPathFactory) -> ArtifactModel:
    """A two-way translator (one step of CycleGAN) served as the pyfunc model serves it."""
    tmp = tmp_path_factory.mktemp("translator")
    data, _ = load_dataset(DataConfig(source="digits-mnist5k", resolution=16, max_images=40))
    t = build_trainer(model=ModelConfig(variant="cyclegan", width=4, overrides={"g_blocks": 1}),
                      train=TrainConfig(batch_size=8, steps=1, eval_every=0), augment=AugmentConfig(), data=data,
                      checkpoint_dir=tmp)
    t.setup()
    save_torch(t.export(), tmp / "generator.pt")
    model = ArtifactModel()
    model.load_context(SimpleNamespace(artifacts={"generator": str(tmp / "generator.pt")}, model_config={"max_rows": 4}))
    return model


def test_a_translator_answers_each_row_in_its_own_direction(translator: ArtifactModel) -> None:
    a = torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8)
    rows = pd.DataFrame([{"image": _png(a), "direction": "a2b"}, {"image": _png(a), "direction": "b2a"},
                         {"image": _png(a), "direction": "a2b"}])
    out = translator.predict(None, rows)
    images = [decode_png(torch.frombuffer(bytearray(base64.b64decode(p)), dtype=torch.uint8)) for p in out["png"]]
    assert all(img.shape == (1, 16, 16) for img in images)
    assert torch.equal(images[0], images[2]) and not torch.equal(images[0], images[1])
    sig = signature_of(translator.artifact)
    assert [c.name for c in sig.inputs.inputs] == ["image", "direction"] and sig.inputs.inputs[1].required


def test_a_colour_row_for_a_grey_model_is_refused_and_grey_for_colour_is_widened() -> None:
    grey = SimpleNamespace(directions=("a2b",), resolution=8, in_channels=lambda d: 1)
    rgb = torch.zeros(3, 8, 8, dtype=torch.uint8)
    with pytest.raises(MlflowException, match="row 0: 'image' has 3 channels; this model takes 1-channel images"):
        validate_translate_rows(pd.DataFrame([{"image": _png(rgb)}]), grey, max_rows=4)
    colour = SimpleNamespace(directions=("a2b",), resolution=8, in_channels=lambda d: 3)
    groups = validate_translate_rows(pd.DataFrame([{"image": _png(torch.zeros(1, 8, 8, dtype=torch.uint8))}]),
                                     colour, max_rows=4)
    assert groups["a2b"][1].shape == (1, 3, 8, 8)


@pytest.mark.parametrize("rows, fragment", [
    ([], "no rows"),
    ([{"direction": "a2b"}], "missing column 'image'"),
    ([{"image": "x", "direction": "a2b"}] * 5, "at most 4 per request"),
    ([{"image": 3, "direction": "a2b"}], "row 0: 'image' must be a base64-encoded PNG string"),
    ([{"image": "!!!", "direction": "a2b"}], "row 0: 'image' is not valid base64"),
    ([{"image": base64.b64encode(b"GIF89a nope").decode(), "direction": "a2b"}], "not a readable image"),
    ([{"image": "<a2b>", "direction": "a2b"}, {"image": "<big>", "direction": "a2b"}],
     "row 1: 'image' is 20x20 pixels; this model translates 16x16 images"),
    ([{"image": "<a2b>"}], "every row needs 'direction', one of a2b, b2a"),
    ([{"image": "<a2b>", "direction": "a2b"}, {"image": "<a2b>"}], "row 1: 'direction' is missing"),
    ([{"image": "<a2b>", "direction": "c2d"}], "row 0: 'direction' must be one of a2b, b2a, got 'c2d'"),
    ([{"image": "<a2b>", "direction": "a2b", "seed": 1}], "unknown column(s) ['seed']"),
])
def test_bad_translation_rows_get_a_400_naming_row_and_column(translator: ArtifactModel, rows: list[dict],
                                                              fragment: str) -> None:
    good, big = _png(torch.zeros(1, 16, 16, dtype=torch.uint8)), _png(torch.zeros(1, 20, 20, dtype=torch.uint8))
    rows = [{k: {"<a2b>": good, "<big>": big}.get(v, v) for k, v in r.items()} for r in rows]
    with pytest.raises(MlflowException) as err:
        translator.predict(None, pd.DataFrame(rows))
    assert err.value.get_http_status_code() == 400 and fragment in err.value.message


def test_a_label_for_an_unconditional_generator_is_refused_not_dropped() -> None:
    sig = signature_of(SimpleNamespace(kind="generate", num_classes=0))
    # seed is optional only because a row may invert an image instead; validate_rows requires it
    assert [(c.name, c.required) for c in sig.inputs.inputs] == [("seed", False), ("label", False),
                                                                  ("truncation", False), ("direction", False),
                                                                  ("alpha", False), ("mix_seed", False),
                                                                  ("mix_layer", False), ("image", False)]
    assert validate_rows(pd.DataFrame([{"seed": 1}]), num_classes=0, max_rows=4) == ([1], None)
    # a row without a label beside one with: pandas fills the gap with NaN, which is "no label"
    frame = pd.DataFrame([{"seed": 1}, {"seed": 2, "label": 3}])
    with pytest.raises(MlflowException, match="row 1: 'label' given, but this generator is unconditional"):
        validate_rows(frame, num_classes=0, max_rows=4)
    assert validate_rows(pd.DataFrame([{"seed": 1, "label": None}]), num_classes=0, max_rows=4) == ([1], None)


@pytest.mark.parametrize("body, message", [
    ({"dataframe_records": [{"seed": 0}, {"seed": 1, "lable": 2}]}, "row 1: unknown column 'lable'"),
    ({"dataframe_split": {"columns": ["seed", "size"], "data": [[0, 1]]}}, "unknown column 'size'"),
    ({"inputs": {"seed": [0], "colour": ["red"]}}, "unknown column 'colour'"),
    ({"instances": [{"seed": 0, "x": 1}]}, "row 0: unknown column 'x'"),
    ({"dataframe_records": [{"seed": 0, "label": 1}], "params": {"a": 1}}, None),  # params travel beside
    ({"dataframe_records": [{"seed": 0}]}, None),
    ({"rows": [{"x": 1}]}, None),  # not an MLflow form: MLflow's own error
])
def test_the_request_guard_names_an_unknown_column(body: dict, message: str | None) -> None:
    found = unknown_column(json.dumps(body).encode(), ["seed", "label"])
    assert found == (None if message is None else f"{message}; this model takes seed, label")
    assert unknown_column(b"{not json", ["seed"]) is None


def test_edit_columns_are_optional_per_row_and_checked() -> None:
    """Rows without an edit beside rows with one (pandas fills the gaps with NaN, and holds the column as
    floats): those rows get direction 0, alpha 0, their seed's own image."""
    frame = pd.DataFrame([{"seed": 1}, {"seed": 2, "direction": 3, "alpha": -1.5}, {"seed": 3, "direction": 0, "alpha": 2}])
    assert validate_edits(frame, directions=10) == ([0, 3, 0], [0.0, -1.5, 2.0])
    assert validate_edits(pd.DataFrame([{"seed": 1}]), directions=10) is None
    assert validate_edits(pd.DataFrame([{"seed": 1, "direction": None, "alpha": None}]), directions=10) is None
    for rows, fragment in (([{"seed": 1, "alpha": 1}], "row 0: 'alpha' given without 'direction'"),
                           ([{"seed": 1, "direction": 1.5, "alpha": 1}], "row 0: 'direction' must be an integer"),
                           ([{"seed": 1, "direction": True, "alpha": 1}], "row 0: 'direction' must be an integer"),
                           ([{"seed": 1, "direction": 4, "alpha": 1}], "'direction' must be in 0..3"),
                           ([{"seed": 1, "direction": 0, "alpha": float("inf")}], "'alpha' must be a finite number"),
                           ([{"seed": 1, "direction": 0, "alpha": -10.5}], "'alpha' must be in -10..10")):
        with pytest.raises(MlflowException, match=re.escape(fragment)):
            validate_edits(pd.DataFrame(rows), directions=4)


def test_truncation_is_optional_per_row_and_checked() -> None:
    """No truncation column (or only nulls): 1.0 for the whole request; otherwise psi per row, 1 where a row has
    none; anything but a number in 0..1 is a 400 naming the row. A model without a latent refuses the column."""
    assert validate_truncation(pd.DataFrame([{"seed": 1}])) == 1.0
    assert validate_truncation(pd.DataFrame([{"seed": 1, "truncation": None}])) == 1.0
    assert validate_truncation(pd.DataFrame([{"seed": 1}, {"seed": 2, "truncation": 0}, {"seed": 3, "truncation": 0.7}])) \
        == [1.0, 0.0, 0.7]
    for value, fragment in ((1.5, "row 1: 'truncation' must be in 0..1"), (-0.5, "row 1: 'truncation' must be in 0..1"),
                            ("0.5", "row 1: 'truncation' must be a number in 0..1, got str '0.5'"),
                            (True, "row 1: 'truncation' must be a number in 0..1, got bool True"),
                            (float("inf"), "row 1: 'truncation' must be a number in 0..1, got float inf")):
        with pytest.raises(MlflowException, match=re.escape(fragment)) as err:
            validate_truncation(pd.DataFrame([{"seed": 1}, {"seed": 2, "truncation": value}]))
        assert err.value.get_http_status_code() == 400
    pixel_model = SimpleNamespace(variant="pixelcnn", family="pixelcnn")
    with pytest.raises(MlflowException, match="row 0: 'truncation' given, but pixelcnn .* has no latent to truncate"):
        refuse_latent_columns(pd.DataFrame([{"seed": 1, "truncation": 0.5}]), pixel_model)
    with pytest.raises(MlflowException, match="row 0: 'mix_seed' given, but pixelcnn"):
        refuse_latent_columns(pd.DataFrame([{"seed": 1, "mix_seed": 2, "mix_layer": 1}]), pixel_model)


def test_style_mixing_columns_are_optional_per_row_and_checked() -> None:
    """No mixing column: None. Otherwise a mix seed and layer per row (a row without: its own styles, the layer
    count meaning no mixing); one without the other, a layer out of 1..layers - 1, a non-integer, mixing beside an
    edit, or mixing asked of a model without style layers get a 400 naming the row."""
    style = SimpleNamespace(variant="stylegan2", family="progressive-style", mix_layers=6)
    assert validate_mixing(pd.DataFrame([{"seed": 1}]), style) is None
    assert validate_mixing(pd.DataFrame([{"seed": 1, "mix_seed": None}]), style) is None
    assert validate_mixing(pd.DataFrame([{"seed": 1}, {"seed": 2, "mix_seed": 7, "mix_layer": 3}]), style) == \
        ([0, 7], [6, 3])
    bad = [([{"seed": 1, "mix_seed": 2}], "row 0: 'mix_seed' given without 'mix_layer'"),
           ([{"seed": 1}, {"seed": 1, "mix_layer": 2}], "row 1: 'mix_layer' given without 'mix_seed'"),
           ([{"seed": 1, "mix_seed": 2, "mix_layer": 6}], "row 0: 'mix_layer' must be in 1..5, got 6"),
           ([{"seed": 1, "mix_seed": 2, "mix_layer": 0}], "row 0: 'mix_layer' must be in 1..5, got 0"),
           ([{"seed": 1}, {"seed": 1, "mix_seed": -3, "mix_layer": 1}], "row 1: 'mix_seed' must be in 0.."),
           ([{"seed": 1, "mix_seed": 2.5, "mix_layer": 1}], "row 0: 'mix_seed' must be an integer"),
           ([{"seed": 1, "mix_seed": 2, "mix_layer": 1, "direction": 0, "alpha": 1}], "either mixes styles"),
           ]
    for rows, fragment in bad:
        with pytest.raises(MlflowException) as err:
            validate_mixing(pd.DataFrame(rows), style)
        assert err.value.get_http_status_code() == 400 and fragment in err.value.message, (rows, err.value.message)
    dcgan = SimpleNamespace(variant="dcgan", family="noise-to-image")
    with pytest.raises(MlflowException, match="row 0: 'mix_seed'/'mix_layer' given, but dcgan .* no style layers"):
        validate_mixing(pd.DataFrame([{"seed": 1, "mix_seed": 2, "mix_layer": 1}]), dcgan)
