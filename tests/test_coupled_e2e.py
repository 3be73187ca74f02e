"""The coupled family end to end: CoGAN on the bundled digits/negatives pair through a real `dvc repro` in a
git repository (FID per domain, the pair agreement beside its chance level and the real pairs' agreement),
the champion by mean FID, `gans sample` and `gans export` per domain, and a real model server answering
seeds with a pair of PNGs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests
import torch
from torchvision.io import decode_png

from conftest import invoke_rows, make_project, run, serve_model, tiny_params
from gans.families import load_artifact

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cogan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = tiny_params({"model": {"variant": "cogan", "width": 8, "z_dim": 16},
                          "data": {"source": "mnist5k-negatives", "max_images": 300},
                          "train": {"steps": 20, "batch_size": 16, "checkpoint_every": 10, "sample_every": 10,
                                    "eval_every": 10, "eval_samples": 30},
                          "evaluate": {"num_samples": 40, "evaluator_epochs": 2, "batch_size": 100,
                                       "kid_subset_size": 20}})
    repo = make_project(tmp_path_factory.mktemp("cogan"), params)
    run(["dvc", "repro"], repo)
    return repo


def _json(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def test_cogan_through_dvc_reports_fid_per_domain_and_pair_agreement(cogan: Path) -> None:
    train, ev, reg = _json(cogan, "train"), _json(cogan, "eval"), _json(cogan, "register")
    assert train["family"] == "coupled" and train["steps"] == 20 and train["best_fid"] > 0
    assert ev["artifact"] == "pair" and ev["primary_metric"] == "fid" and ev["higher_is_better"] is False
    assert ev["fid"] == pytest.approx((ev["fid_a"] + ev["fid_b"]) / 2)
    for key in ("kid_a", "is_b", "precision_a", "recall_b", "pair_label_agreement", "pair_label_agreement_shuffled"):
        assert key in ev, key
    assert ev["pair_agreement_real"] == 1.0 and 0 <= ev["pair_agreement"] <= 1
    assert ev["pair_transform"].startswith("negative of domain a against domain b")
    assert reg["champion"] and reg["metric"] == "fid"
    assert _json(cogan, "explore")["skipped"].startswith("cogan is a coupled model that draws a pair of images")
    assert "pair agreement" in run(["gans", "summary"], cogan).stdout
    run(["gans", "sample", "--count", "6", "--per-row", "3", "--out", "pairs.png"], cogan)
    assert (cogan / "pairs.png").stat().st_size > 0
    refused = run(["gans", "export", "--checkpoint", "models/generator.pt"], cogan, check=False)
    assert refused.returncode != 0 and "--direction: cogan draws domains a and b; export one at a time" in refused.stderr
    run(["gans", "export", "--checkpoint", "models/generator.pt", "--direction", "b", "--out", "b.onnx"], cogan)
    assert (cogan / "b.onnx").stat().st_size > 0
    assert "Data and pipelines are up to date" in run(["dvc", "status"], cogan).stdout


def _png(text: str) -> torch.Tensor:
    return decode_png(torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8))


def test_served_cogan_answers_a_pair_per_seed_and_refuses_bad_rows(cogan: Path) -> None:
    a, b = load_artifact(cogan / "models/generator.pt").generate_pair([3, 4])
    proc, url = serve_model(cogan, "--model", "models:/gan-generator/1")
    try:
        resp = invoke_rows(url, [{"seed": 3}, {"seed": 4}])
        assert resp.status_code == 200, resp.text
        rows = resp.json()["predictions"]
        for i, row in enumerate(rows):
            assert torch.equal(_png(row["png_a"]), a[i]) and torch.equal(_png(row["png_b"]), b[i])
        mean = invoke_rows(url, [{"seed": 3, "truncation": 0}, {"seed": 4, "truncation": 0}]).json()["predictions"]
        assert mean[0] == mean[1] and mean[0]["png_a"] != rows[0]["png_a"]  # psi 0: the mean latent's pair
        bad = [([{"seed": 1, "label": 2}], "this generator is unconditional"),
               ([{"seed": 1, "truncation": -1}], "row 0: 'truncation' must be in 0..1"),
               ([{"seed": -1}], "row 0: 'seed'"),
               ([{"seed": 1, "image": "x"}], "unknown column 'image'")]
        for rows_, fragment in bad:
            r = invoke_rows(url, rows_)
            assert r.status_code == 400 and fragment in r.text, (fragment, r.status_code, r.text[:300])
            assert invoke_rows(url, [{"seed": 0}]).status_code == 200  # still serving
        described = requests.get(f"{url}/model", timeout=30).json()
        assert described["kind"] == "pair" and described["domains"] == ["a", "b"]
        assert json.loads(described["example_request"]) == {"dataframe_records": [{"seed": 0}]}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
