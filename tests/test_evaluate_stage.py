"""The evaluate stage: cached reference features, per-class numbers, the Inception path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_params
from pipeline import stages
from pipeline.params import params_from_dict

pytestmark = pytest.mark.e2e


@pytest.fixture()
def workspace(tiny_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(tiny_repo, ws, ignore=shutil.ignore_patterns(".git", ".dvc", "mlflow.db*", "mlartifacts", ".cache"))
    monkeypatch.chdir(ws)
    return ws


def test_reference_features_are_cached_and_reused(workspace: Path) -> None:
    params = params_from_dict(tiny_params())
    first = stages.evaluate(params)
    cached = list((workspace / ".cache/reference").glob("domain-*.pt"))
    assert len(cached) == 1 and first["evaluator_id"] in cached[0].name
    d = torch.load(cached[0], weights_only=True)
    torch.save({"features": d["features"] * 3, "logits": d["logits"]}, cached[0])  # a reused cache shows
    assert stages.evaluate(params)["fid"] != pytest.approx(first["fid"])
    cached[0].unlink()
    assert stages.evaluate(params)["fid"] == pytest.approx(first["fid"])


def test_conditional_generator_gets_accuracy_and_per_class_fid(workspace: Path) -> None:
    params = params_from_dict(tiny_params({"model": {"variant": "cgan"}, "train": {"eval_every": 0}}))
    shutil.rmtree(workspace / "models/checkpoints")
    stages.train(params)
    result = stages.evaluate(params)
    assert 0.0 <= result["conditional_accuracy"] <= 1.0
    # Classes with at least two holdout images get a per-class FID (the tiny holdout has 40 images).
    assert set(result["per_class_fid"]) <= {str(c) for c in range(10)} and len(result["per_class_fid"]) >= 5
    assert all(v > 0 for v in result["per_class_fid"].values())
    saved = json.loads((workspace / "metrics/eval.json").read_text())
    assert saved["per_class_fid"] == pytest.approx(result["per_class_fid"])


def test_inception_features_through_the_stage(workspace: Path, tmp_path: Path) -> None:
    from test_evaluation import _random_inception_weights

    from gans.inception import weights_id

    weights = tmp_path / "inception.pth"
    _random_inception_weights(weights)
    params = params_from_dict(tiny_params({"evaluate": {"features": "inception", "inception_weights": str(weights),
                                                        "num_samples": 20, "kid_subset_size": 10}}))
    result = stages.evaluate(params)
    assert result["extractor"] == f"inception:{weights_id(weights)}" and result["evaluator_id"] == weights_id(weights)
    assert result["num_samples"] == 20 and result["num_real"] == 40 and result["fid"] > 0
