"""Property-based tests: any override, any params file and any serving payload gets a result or a clear
error."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException

from gans.config import ConfigError
from pipeline.params import Params, load_params
from pipeline.serving import validate_rows

ROOT = Path(__file__).resolve().parents[1]
KEYS = [k for k in Params().flat() if not k.startswith("model.overrides")] + [
    "model.overrides.loss", "model.overrides.n_critic", "model.overrides.regularizers", "bogus.key", "train.nope"]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.text(max_size=5), max_size=3),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _yaml_text(value: object) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_override_validates_or_names_its_key(key: str, value: object) -> None:
    try:
        params = load_params(ROOT / "params.yaml", [f"{key}={_yaml_text(value)}"])
    except ConfigError as err:
        first = key.split(".")[0]
        assert first in str(err) or "KEY=VALUE" in str(err) or "YAML" in str(err), (key, value, str(err))
    else:
        assert isinstance(params, Params)


ROWS = st.lists(st.fixed_dictionaries({}, optional={
    "seed": st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=4), st.none()),
    "label": st.one_of(st.integers(-5, 20), st.floats(allow_nan=True), st.none()),
}), max_size=80)


@settings(max_examples=300, deadline=None)
@given(rows=ROWS, num_classes=st.sampled_from([0, 10]))
def test_any_payload_is_accepted_or_refused_with_a_400(rows: list[dict], num_classes: int) -> None:
    frame = pd.DataFrame(rows)
    try:
        seeds, labels = validate_rows(frame, num_classes=num_classes, max_rows=64)
    except MlflowException as err:
        assert err.get_http_status_code() == 400
    else:
        assert 1 <= len(seeds) <= 64 and all(0 <= s < 2**63 for s in seeds)
        assert (labels is None) == (num_classes == 0)
        if labels is not None:
            assert all(0 <= y < num_classes for y in labels)


# ---------------------------------------------------------------- whole params files

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
LEAVES = [k for k in Params().flat() if not k.startswith("model.overrides")] + ["model.overrides.lr_g",
                                                                                "model.overrides.reg_args.gp.weight"]
ODD_NUMBERS = st.sampled_from([float("inf"), float("-inf"), float("nan"), 2**63, -2**63 - 1, 2**64, 10**30,
                               -10**400, 10**400, 2**32, -1, 1e308, 5e-324])


def _with(raw: dict, key: str, value: object) -> dict:
    import copy

    out = copy.deepcopy(raw)
    node = out
    *sections, last = key.split(".")
    for part in sections:
        node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
    node[last] = value
    return out


@st.composite
def params_files(draw) -> tuple[str, bytes]:
    """Random bytes, or the project's params with: a duplicated key (a section, or a key inside one), odd
    numbers (non-finite, huge, negative) at any key, random YAML values, or random bytes spliced in."""
    kind = draw(st.sampled_from(["bytes", "duplicate", "numbers", "values", "splice"]))
    if kind == "bytes":
        return kind, draw(st.binary(max_size=300))
    raw = dict(BASE)
    if kind == "numbers":
        for key in draw(st.lists(st.sampled_from(LEAVES), min_size=1, max_size=3)):
            raw = _with(raw, key, draw(ODD_NUMBERS))
    elif kind == "values":
        raw = _with(raw, draw(st.sampled_from(LEAVES)), draw(VALUES))
    text = yaml.safe_dump(raw, sort_keys=False)
    if kind == "duplicate":
        key = draw(st.sampled_from(LEAVES))
        section, _, rest = key.partition(".")
        if draw(st.booleans()):
            text += f"{section}: {{}}\n"  # the section twice
        else:
            parts = rest.split(".")
            inner = f"{{{parts[-1]}: 1, {parts[-1]}: 2}}"
            for part in reversed(parts[:-1]):
                inner = f"{{{part}: {inner}}}"
            text = yaml.safe_dump({k: v for k, v in raw.items() if k != section}) + f"{section}: {inner}\n"
    data = text.encode()
    if kind == "splice":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return kind, data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=params_files())
def test_any_params_file_loads_or_is_one_config_error(case: tuple[str, bytes]) -> None:
    kind, content = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_bytes(content)
        try:
            params = load_params(path)
        except ConfigError as err:
            assert str(err)
            if kind == "duplicate":
                assert "duplicate key" in str(err), str(err)
        else:
            assert kind != "duplicate"
            assert isinstance(params, Params)
            assert all(v == v for v in _numbers(params.to_dict()))  # nothing non-finite got through
            for key in ("data", "train", "evaluate"):
                assert 0 <= params.to_dict()[key]["seed"] < 2**32


def _numbers(tree: object) -> list[float]:
    import math

    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _numbers(v)]
    if isinstance(tree, (list, tuple)):
        return [x for v in tree for x in _numbers(v)]
    if isinstance(tree, float):
        return [tree if math.isfinite(tree) else float("nan")]
    return []
