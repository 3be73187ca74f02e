"""The stages in process: what prepare, augment and evaluator write for each data layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_params
from gans.data import Dataset
from gans.io import load_torch
from pipeline import stages
from pipeline.files import StageError
from pipeline.params import params_from_dict


def _params(**sections):
    raw = tiny_params(sections)
    if sections.get("model", {}).get("variant", "dcgan") in ("pix2pix", "cyclegan", "dualgan", "discogan"):
        raw["model"]["z_dim"] = 64
    return params_from_dict(raw)


def test_an_image_set_keeps_its_meta_and_evaluator_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    params = _params(data={"max_images": 100}, evaluate={"evaluator_epochs": 1})
    meta = stages.prepare(params)
    assert meta["layout"] == "images" and (meta["count"], meta["train_count"], meta["holdout_count"]) == (100, 90, 10)
    assert meta["classes"] == [str(i) for i in range(10)] and meta["channels"] == 1 and len(meta["hash"]) == 16
    stages.augment(params)
    result = stages.evaluator(params)
    payload = load_torch("models/evaluator.pt")
    assert "parts" not in payload and payload["id"] == result["id"] and "state_dict" in payload


def test_paired_data_is_split_and_flipped_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    params = _params(data={"source": "mnist5k-edges", "max_images": 100}, model={"variant": "pix2pix"},
                     augment={"static": ["xflip"]}, evaluate={"evaluator_epochs": 1})
    meta = stages.prepare(params)
    assert meta["layout"] == "paired" and meta["parts"]["a"]["train_count"] == meta["parts"]["b"]["train_count"] == 90
    assert stages.augment(params)["augmented_count"] == 360
    train = Dataset.from_dict(load_torch("data/augmented/train.pt"))
    a, b = train.parts["a"], train.parts["b"]
    assert torch.equal(a.images[90:], a.images[:90].flip(-1)) and torch.equal(b.images[90:], b.images[:90].flip(-1))
    result = stages.evaluator(params)
    assert set(result["parts"]) == {"a", "b"} and set(load_torch("models/evaluator.pt")["parts"]) == {"a", "b"}
    assert result["id"] == load_torch("models/evaluator.pt")["id"]
    assert stages.device_of(params) == torch.device("cpu")


def _unpaired_folder(root: Path) -> None:
    for name in ("trainA", "trainB"):
        (root / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.full((16, 16), 20 * i if name == "trainA" else 255 - 20 * i, np.uint8)).save(
                root / name / f"{i}.png")


def test_unlabelled_domains_need_inception_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _unpaired_folder(tmp_path / "horses")
    monkeypatch.chdir(tmp_path)
    source = {"source": "unpaired:horses", "resolution": 16, "holdout_fraction": 0.25}
    params = _params(data=source, model={"variant": "cyclegan"})
    stages.prepare(params)
    with pytest.raises(StageError, match=r"'domain' needs a labelled data.source \(domain a, b has none\).*"
                                         r"evaluate.features: inception"):
        stages.evaluator(params)
    inception = _params(data=source, model={"variant": "cyclegan"}, evaluate={"features": "inception"})
    result = stages.evaluator(inception)
    assert result["parts"] == {} and result["holdout_accuracy"] is None
    from pipeline.scoring import periodic_score

    assert periodic_score(inception, torch.device("cpu")) is None  # no classifiers, no periodic FID
    assert json.loads(Path("metrics/evaluator.json").read_text())["id"] == "none"


@pytest.mark.parametrize("every", [0.5, 0])
def test_training_runs_log_system_metrics_unless_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             every: float) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    params = _params(data={"max_images": 100}, tracking={"uri": uri, "system_metrics_every": every},
                     train={"steps": 30, "eval_every": 0, "sample_every": 1000, "checkpoint_every": 30})
    stages.prepare(params)
    stages.augment(params)
    # at least a few sampling intervals of training: the monitor's first sample comes after one interval
    monkeypatch.setattr(stages.Trainer, "fit", _slow(stages.Trainer.fit, seconds=2.0))
    run_id = stages.train(params)["run_id"]
    metrics = mlflow.MlflowClient(uri).get_run(run_id).data.metrics
    system = sorted(k for k in metrics if k.startswith("system/"))
    if every:
        assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system
    else:
        assert system == []
    mlflow.set_tracking_uri(None)


def _slow(fit, seconds: float):
    import time

    def slow_fit(self):
        result = fit(self)
        time.sleep(seconds)
        return result
    return slow_fit
