"""The super-resolution family end to end: SRGAN through a real `dvc repro` in a git repository (pixel phase,
then GAN phases), the registry with its ONNX export, and a real model server upscaling PNG rows."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from conftest import invoke_rows, make_project, model_files, png_base64, run, serve_model, tiny_params
from gans.export import run_exported

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def srgan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SRGAN x4 (8x8 -> 32x32) on mnist5k, reproduced by DVC."""
    params = tiny_params({
        "data": {"source": "mnist5k", "resolution": 32, "scale": 4, "max_images": 300},
        "model": {"variant": "srgan", "width": 8, "overrides": {"g_blocks": 2, "pretrain_steps": 10}},
        "train": {"steps": 20, "batch_size": 16, "checkpoint_every": 10, "log_every": 5, "sample_every": 10,
                  "eval_every": 10, "eval_samples": 30},
        "evaluate": {"num_samples": 40, "evaluator_epochs": 2, "batch_size": 100, "kid_subset_size": 20}})
    params["model"]["z_dim"] = 64  # the family has no latent: z_dim stays at its default
    repo = make_project(tmp_path_factory.mktemp("srgan"), params)
    run(["dvc", "repro"], repo)
    return repo


def _json(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def test_srgan_through_dvc_reports_y_psnr_beside_bicubic_and_registers(srgan: Path) -> None:
    meta = json.loads((srgan / "data/prepared/meta.json").read_text())
    assert meta["layout"] == "superres" and meta["parts"]["lr"]["train_count"] == meta["parts"]["hr"]["train_count"]
    train, ev, reg = _json(srgan, "train"), _json(srgan, "eval"), _json(srgan, "register")
    assert train["steps"] == 20 and train["family"] == "superres" and train["best_step"] in (10, 20)
    assert ev["directions"] == ["x4"] and ev["scale"] == 4 and ev["lr_resolution"] == 8 and ev["resolution"] == 32
    for key in ("psnr", "ssim", "fid", "kid", "label_preservation", "psnr_bicubic", "ssim_bicubic", "fid_bicubic",
                "label_preservation_bicubic", "psnr_gain", "label_accuracy_real", "fidelity_note"):
        assert key in ev, key
    assert "Y channel" in ev["fidelity_note"] and "border of `scale` pixels" in ev["fidelity_note"]
    assert ev["psnr_gain"] == pytest.approx(ev["psnr"] - ev["psnr_bicubic"]) and ev["num_samples"] == 30
    assert reg["champion"] and reg["metric"] == "fid"
    grid = Image.open(srgan / "samples/grid.png")
    assert grid.size == (4 * 34 + 2, 8 * 34 + 2)  # input | bicubic | model | original over 8 held-out pairs
    history = (srgan / "plots/train.csv").read_text().splitlines()
    assert history[0].startswith("step,loss_d,loss_g") and history[1].split(",")[1] == ""  # no D before step 10
    assert history[-1].split(",")[1] != ""
    summary = run(["gans", "summary"], srgan).stdout
    assert "bicubic PSNR (Y)" in summary and '"direction": "x4"' in summary




def test_served_srgan_upscales_pngs_and_refuses_wrong_sizes(srgan: Path) -> None:
    proc, url = serve_model(srgan, "--model", "models:/gan-generator/1")
    try:
        lr = torch.load(srgan / "data/prepared/holdout.pt", weights_only=True)["parts"]["lr"]["images"]
        resp = invoke_rows(url, [{"image": png_base64(lr[0])}, {"image": png_base64(lr[1]), "direction": "x4"}])
        assert resp.status_code == 200, resp.text
        served = [base64.b64decode(r["png"]) for r in resp.json()["predictions"]]
        assert [Image.open(io.BytesIO(p)).size for p in served] == [(32, 32), (32, 32)]
        hr = torch.zeros(1, 32, 32, dtype=torch.uint8)
        bad = [([{"image": png_base64(hr)}], "is 32x32 pixels; this model translates 8x8 images"),
               ([{"image": base64.b64encode(b"\x89PNG broken").decode()}], "not a readable image"),
               ([{"image": png_base64(lr[0]), "direction": "x2"}], "'direction' must be one of x4, got 'x2'")]
        for rows, fragment in bad:
            r = invoke_rows(url, rows)
            assert r.status_code == 400 and fragment in r.text, (fragment, r.status_code, r.text[:300])
            assert invoke_rows(url, [{"image": png_base64(lr[2])}]).status_code == 200  # still serving
        described = requests.get(f"{url}/model", timeout=30).json()
        assert (described["family"], described["scale"], described["resolution"], described["output_resolution"]) == \
            ("superres", 4, 8, 32)
        assert '"direction": "x4"' in described["example_request"]
        # the registered ONNX file, in ONNX Runtime, upscales as the server does
        _, pixels = run_exported(model_files(srgan, "models:/gan-generator/1") / "artifacts/generator-x4.onnx", "onnx",
                                 {"source": lr[:1]})
        got = torch.from_numpy(np.array(Image.open(io.BytesIO(served[0]))))
        assert pixels.shape == (1, 1, 32, 32) and (pixels[0, 0].int() - got.int()).abs().max() <= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
