"""Property-based tests: any override and any serving payload gets a result or a clear error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
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
    import yaml

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
