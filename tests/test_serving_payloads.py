"""Serving payloads against real model servers started by `gans serve`: every row of the "Serving payloads"
table in docs/bad-inputs.md, a million-row body refused unread, and fuzzed payloads that never get a 5xx.

One registry and one server per artifact kind (a class-conditional generator, an unconditional one, a two-way
translator, a semi-supervised classifier, a CoGAN pair generator) for the whole module: a scoring server serves one model, and each start costs seconds."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.io import encode_png

from conftest import ROOT, serve_model, tiny_params
from gans.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from gans.data import load_dataset
from gans.families import build_trainer
from gans.io import file_hash, save_torch
from pipeline.params import params_from_dict
from pipeline.registry import register_generator
from pipeline.serving import EXACT_FLOAT, MAX_SEED

pytestmark = pytest.mark.e2e

MAX_ROWS = 4  # serve.max_rows when serving; the models are registered with the default (64)
NUM_CLASSES = 10
KINDS = {"generator": ("cgan", "digits", "noise-to-image"), "unconditional": ("dcgan", "digits", "noise-to-image"),
         "translator": ("cyclegan", "digits-mnist5k", "translation"),
         "classifier": ("improvedgan", "digits", "semi-supervised"), "pair": ("cogan", "mnist5k-negatives", "coupled")}


def _png(width: int, height: int, channels: int = 1) -> str:
    image = torch.zeros(channels, height, width, dtype=torch.uint8)
    return base64.b64encode(encode_png(image).numpy().tobytes()).decode()


GOOD = {"generator": {"dataframe_records": [{"seed": 5, "label": 2}]},
        "unconditional": {"dataframe_records": [{"seed": 5}]},
        "translator": {"dataframe_records": [{"image": _png(16, 16), "direction": "a2b"}]},
        "classifier": {"dataframe_records": [{"image": _png(16, 16)}]},
        "pair": {"dataframe_records": [{"seed": 5}]}}


def _register(root: Path, kind: str) -> str:
    """A freshly built (untrained) artifact of ``kind``, registered the way the register stage does it."""
    variant, source, family = KINDS[kind]
    data, _ = load_dataset(DataConfig(source=source, resolution=16, max_images=40))
    model = ModelConfig(variant=variant, width=4, overrides={"g_blocks": 1}) if kind == "translator" else \
        ModelConfig(variant=variant, width=4, z_dim=8)
    trainer = build_trainer(model=model, train=TrainConfig(batch_size=8, steps=1, eval_every=0),
                            augment=AugmentConfig(), data=data, checkpoint_dir=root / kind)
    trainer.setup()
    path = root / kind / "generator.pt"
    save_torch(trainer.export(), path)
    name = f"payload-{kind}"
    params = params_from_dict(tiny_params({"register": {"model_name": name}}))
    metrics = {"variant": variant, "family": family, "evaluator_id": "payloads", "extractor": "domain",
               "num_samples": 10, "fid": 1.0, "error": 0.5, "generator_hash": file_hash(path)}
    if kind == "translator":
        metrics["directions"] = ["a2b", "b2a"]
    register_generator(params, generator_path=path, eval_metrics=metrics, train_metrics={},
                       data_meta={"source": source, "hash": source})
    return f"models:/{name}@champion"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory):
    """{kind: base URL}: both models registered in one project, then served at once by `gans serve`."""
    import mlflow

    root = tmp_path_factory.mktemp("payloads")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        models = {kind: _register(root, kind) for kind in KINDS}
        mlflow.set_tracking_uri(None)  # registering pointed this process (and its environment) at the project
        mlflow.set_registry_uri(None)
    # serve.max_rows as it is when serving, not as it was at registration, limits rows and bytes.
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params({"serve": {"max_rows": MAX_ROWS}}), sort_keys=False))
    with ThreadPoolExecutor(len(models)) as pool:
        futures = {kind: pool.submit(serve_model, root, "--model", uri) for kind, uri in models.items()}
    started = {kind: f.result() for kind, f in futures.items() if f.exception() is None}
    try:
        for f in futures.values():
            f.result()  # a server that did not start fails the module, after the others are stopped
        yield {kind: url for kind, (_, url) in started.items()}
    finally:
        for proc, _ in started.values():
            proc.terminate()
            proc.wait(timeout=30)


def _post(url: str, body: bytes | object, headers: dict[str, str] | None = None) -> requests.Response:
    data = body if isinstance(body, (bytes, bytearray)) or hasattr(body, "__next__") else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if headers is None else headers
    return requests.post(f"{url}/invocations", data=data, headers=headers, timeout=120)


def _still_serving(servers: dict[str, str], kind: str) -> None:
    resp = _post(servers[kind], GOOD[kind])
    assert resp.status_code == 200 and len(resp.json()["predictions"]) == 1, resp.text[:300]


def _message(resp: requests.Response) -> str:
    """An error's ``message`` (JSON), else the body as text."""
    if resp.headers.get("content-type", "").startswith("application/json"):
        payload = resp.json()
        if isinstance(payload, dict) and "message" in payload:
            return payload["message"]
    return resp.text


# The table ---------------------------------------------------------------------------------------------

ROW = re.compile(r"\| (S\d+) \| `(.+)` \| (\d{3}) \| `(.+)` \|")
PAYLOAD = re.compile(r"(generator|unconditional|translator|classifier|pair)(?: \(([^)]*)\))?: (.*)")


def _table() -> list[tuple[str, str, int, str]]:
    section = (ROOT / "docs" / "bad-inputs.md").read_text().split("\n## Serving payloads\n", 1)[1]
    return [(m[1], m[2], int(m[3]), m[4]) for m in map(ROW.fullmatch, section.splitlines()) if m]


def _request(payload: str) -> tuple[str, bytes, dict[str, str]]:
    """(kind, body, headers) for a payload cell: ``KIND[ (TYPE)]: BODY`` with ``<png WxH[ rgb]>`` and
    ``[ITEM × N]`` expanded."""
    m = PAYLOAD.fullmatch(payload)
    assert m, payload
    kind, content_type, body = m[1], m[2] or "application/json", m[3]
    body = re.sub(r"<png (\d+)x(\d+)( rgb)?>", lambda p: _png(int(p[1]), int(p[2]), 3 if p[3] else 1), body)
    body = re.sub(r"\[([^\[\]]+?) × (\d+)\]", lambda r: "[" + ", ".join([r[1]] * int(r[2])) + "]", body)
    headers = {} if content_type == "no Content-Type" else {"Content-Type": content_type}
    return kind, body.encode(), headers


def test_the_table_covers_every_kind_and_the_required_cases() -> None:
    rows = _table()
    assert len(rows) >= 15 and [r[0] for r in rows] == [f"S{i}" for i in range(1, len(rows) + 1)]
    assert {_request(r[1])[0] for r in rows} == set(KINDS)
    assert {413, 415, 400, 200} <= {r[2] for r in rows}


def test_every_payload_in_the_table_gets_its_status_and_message(servers: dict[str, str]) -> None:
    failures = []
    for number, payload, status, sees in _table():
        kind, body, headers = _request(payload)
        resp = _post(servers[kind], body, headers)
        text, at = _message(resp), 0
        for fragment in sees.split("…"):
            at = text.find(fragment, at)
            if at < 0:
                break
            at += len(fragment)
        if resp.status_code != status or at < 0:
            failures.append(f"{number}: got {resp.status_code} {text[:400]!r}; want {status} {sees!r}")
        _still_serving(servers, kind)
    assert not failures, "\n".join(failures)


# Size ------------------------------------------------------------------------------------------------

def test_a_million_rows_get_a_413_before_the_body_is_read(servers: dict[str, str]) -> None:
    url = servers["generator"]
    body = ('{"dataframe_records": [' + ", ".join(['{"seed": 0, "label": 1}'] * 1_000_000) + "]}").encode()
    start = time.perf_counter()
    resp = _post(url, body)
    elapsed = time.perf_counter() - start
    assert resp.status_code == 413, resp.text[:300]
    assert f"the request body is {len(body)} bytes" in resp.json()["message"]
    assert elapsed < 5, elapsed  # parsing it took 2 s here; refused unread, it takes the upload's time
    _still_serving(servers, "generator")
    # Chunked, without a Content-Length: refused once more bytes than the limit have come.
    resp = _post(url, (body[i:i + 65536] for i in range(0, len(body), 65536)))
    assert resp.status_code == 413 and "this server takes at most 32768 bytes" in resp.json()["message"]
    _still_serving(servers, "generator")
    # A small chunked body reaches the model whole.
    good = json.dumps({"dataframe_records": [{"seed": 1, "label": 1}, {"seed": 2, "label": 2}]}).encode()
    resp = _post(url, iter([good[:7], good[7:30], good[30:]]))
    assert resp.status_code == 200 and len(resp.json()["predictions"]) == 2, resp.text[:300]


# Fuzz ------------------------------------------------------------------------------------------------

VALUES = st.one_of(st.integers(0, NUM_CLASSES + 1), st.integers(-2**65, 2**65), st.floats(), st.booleans(),
                   st.none(), st.text(max_size=3), st.lists(st.integers(0, 3), max_size=2))
ANY_ROW = st.fixed_dictionaries({}, optional={"seed": VALUES, "label": VALUES, "extra": VALUES})
GOOD_ROW = st.fixed_dictionaries({"seed": st.one_of(st.integers(0, MAX_SEED), st.just(3.0)),
                                  "label": st.integers(0, NUM_CLASSES - 1)})
ROWS = st.one_of(st.lists(ANY_ROW, max_size=MAX_ROWS + 2), st.lists(GOOD_ROW, min_size=1, max_size=MAX_ROWS + 1))


def _acceptable(rows: list[dict]) -> bool:
    """Whether a generate request of these rows must get 200: 1..max_rows rows, each with an integer seed and
    label in range (a float only where it holds the integer exactly, and no integer from 2**53 on in a column
    that holds a float, since pandas reads such a column as floats)."""
    if not 1 <= len(rows) <= MAX_ROWS or any(set(row) - {"seed", "label"} for row in rows):
        return False  # too few or too many rows, or a column the model does not take
    for name, high in (("seed", MAX_SEED), ("label", NUM_CLASSES - 1)):
        column = [row.get(name) for row in rows]
        has_float = any(isinstance(v, float) for v in column)
        for v in column:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return False
            if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
                return False
            if (isinstance(v, float) or has_float) and abs(v) >= EXACT_FLOAT:
                return False
            if not 0 <= v <= high:
                return False
    return True


def _envelope(form: str, rows: list[dict]) -> dict:
    if form == "dataframe_records":
        return {form: rows}
    columns = sorted({key for row in rows for key in row})
    return {form: {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}}


@settings(max_examples=30, deadline=None)
@given(rows=ROWS, form=st.sampled_from(["dataframe_records", "dataframe_split"]),
       junk=st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=24)))  # a body that is not a payload
def test_fuzzed_payloads_get_a_200_or_a_json_4xx_and_the_server_keeps_serving(
        servers: dict[str, str], rows: list[dict], form: str, junk: bytes | None) -> None:
    url = servers["generator"]
    resp = _post(url, junk if junk is not None else _envelope(form, rows))
    assert resp.status_code < 500, resp.text[:500]
    if resp.status_code == 200:
        assert junk is None and _acceptable(rows), (rows, resp.text[:300])
        pngs = [base64.b64decode(p["png"]) for p in resp.json()["predictions"]]
        assert len(pngs) == len(rows) and all(Image.open(io.BytesIO(p)).size == (16, 16) for p in pngs)
    else:
        assert 400 <= resp.status_code < 500 and not (junk is None and _acceptable(rows)), (rows, resp.text[:300])
        error = resp.json()
        assert isinstance(error["message"], str) and error["message"], resp.text[:300]
    _still_serving(servers, "generator")
