"""The semi-supervised family end to end: ImprovedGAN from 5 labels per class through a real `dvc repro` in a
git repository (the labelled subset recorded by the prepare stage, the classifier's error beside the baseline
trained on the labelled images alone, the confusion matrix as a DVC plot and an MLflow artifact), the
champion by error, `gans sample` of its generator, and a real model server answering images with labels and
probabilities."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import pytest
import requests
import torch

from conftest import invoke_rows, make_project, model_files, png_base64, run, serve_model, tiny_params
from gans.export import run_exported
from gans.families import load_artifact

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def improvedgan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = tiny_params({"model": {"variant": "improvedgan", "width": 16, "z_dim": 16},
                          "train": {"steps": 30, "batch_size": 32, "checkpoint_every": 10, "sample_every": 15,
                                    "eval_every": 10}})
    params["data"]["labels_per_class"] = 5
    repo = make_project(tmp_path_factory.mktemp("improvedgan"), params)
    run(["dvc", "repro"], repo)
    return repo


def _json(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def test_improvedgan_through_dvc_reports_error_beside_the_baseline_and_registers(improvedgan: Path) -> None:
    meta = json.loads((improvedgan / "data/prepared/meta.json").read_text())
    assert meta["labels_per_class"] == 5 and len(meta["known_labels"]) == 50
    train, ev, reg = _json(improvedgan, "train"), _json(improvedgan, "eval"), _json(improvedgan, "register")
    assert train["family"] == "semi-supervised" and train["steps"] == 30 and 0 <= train["best_error"] <= 1
    assert ev["primary_metric"] == "error" and ev["higher_is_better"] is False and ev["known_labels"] == 50
    for key in ("error", "accuracy", "baseline_error", "error_reduction", "fid", "is", "kid"):
        assert key in ev, key
    assert ev["error"] == pytest.approx(1 - ev["accuracy"])
    matrix = torch.tensor(ev["confusion"])
    assert matrix.shape == (10, 10) and int(matrix.sum()) == ev["num_real"]
    assert float(matrix.diagonal().sum()) / ev["num_real"] == pytest.approx(ev["accuracy"])
    with open(improvedgan / "plots/confusion.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == ev["num_real"] and sum(r["actual"] == r["predicted"] for r in rows) == int(matrix.trace())
    assert reg["champion"] and reg["metric"] == "error"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{improvedgan / 'mlflow.db'}")
    names = [a.path for a in client.list_artifacts(train["run_id"], "metrics")]
    assert "metrics/confusion.json" in names
    assert _json(improvedgan, "explore")["skipped"].startswith("improvedgan is a semi-supervised model whose "
                                                                "artifact is a classifier")
    summary = run(["gans", "summary"], improvedgan).stdout
    assert "baseline error" in summary
    run(["gans", "sample", "--count", "4", "--out", "four.png"], improvedgan)
    assert (improvedgan / "four.png").stat().st_size > 0
    run(["gans", "export", "--checkpoint", "models/generator.pt", "--out", "classifier.onnx"], improvedgan)
    holdout = torch.load(improvedgan / "data/prepared/holdout.pt", weights_only=False)["images"][:4]
    _, probabilities = run_exported(improvedgan / "classifier.onnx", "onnx", {"image": holdout})
    want = load_artifact(improvedgan / "models/generator.pt").classify(holdout)
    assert float((probabilities - want).abs().max()) < 1e-4
    assert (model_files(improvedgan, "models:/gan-generator/1") / "artifacts/classifier.onnx").is_file()  # registered too
    assert "Data and pipelines are up to date" in run(["dvc", "status"], improvedgan).stdout


def test_served_classifier_answers_labels_and_probabilities_and_refuses_bad_rows(improvedgan: Path) -> None:
    holdout = torch.load(improvedgan / "data/prepared/holdout.pt", weights_only=False)
    images = holdout["images"][:3]
    expected = load_artifact(improvedgan / "models/generator.pt").classify(images)
    proc, url = serve_model(improvedgan, "--model", "models:/gan-generator/1")
    try:
        resp = invoke_rows(url, [{"image": png_base64(img)} for img in images])
        assert resp.status_code == 200, resp.text
        rows = resp.json()["predictions"]
        for row, want in zip(rows, expected):
            assert row["label"] == int(want.argmax()) and row["class"] == str(row["label"])
            assert sum(row["probabilities"]) == pytest.approx(1.0, abs=1e-6)
            assert row["probabilities"] == pytest.approx(want.tolist(), abs=1e-5)
        bad = [([{"image": "not base64!"}], "'image' is not valid base64"),
               ([{"image": png_base64(torch.zeros(1, 8, 8, dtype=torch.uint8))}], "this model classifies 16x16 images"),
               ([{"image": png_base64(images[0]), "seed": 3}], "unknown column 'seed'"),
               ([{"seed": 3}], "unknown column 'seed'")]
        for rows_, fragment in bad:
            r = invoke_rows(url, rows_)
            assert r.status_code == 400 and fragment in r.text, (fragment, r.status_code, r.text[:300])
            assert invoke_rows(url, [{"image": png_base64(images[0])}]).status_code == 200  # still serving
        described = requests.get(f"{url}/model", timeout=30).json()
        assert described["kind"] == "classify" and described["known_labels"] == 50
        assert "image" in described["example_request"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
