"""The PixelCNN family end to end: a class-conditional PixelCNN through a real `dvc repro` in a git
repository (bits per dimension beside the GANs' metrics, the explore stage skipped with its reason), the
registry's champion by bits/dim, `gans sample`, and a real model server drawing PNGs pixel by pixel."""

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

from conftest import invoke_rows, make_project, png_base64, run, serve_model, tiny_params
from gans.families import load_artifact

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cpixelcnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class-conditional PixelCNN on 16x16 digits, reproduced by DVC."""
    params = tiny_params({"model": {"variant": "cpixelcnn", "width": 16, "overrides": {"layers": 3}},
                          "train": {"steps": 30, "batch_size": 32, "checkpoint_every": 10, "sample_every": 15,
                                    "eval_every": 10}})
    params["model"]["z_dim"] = 64  # the family has no latent: z_dim stays at its default
    repo = make_project(tmp_path_factory.mktemp("cpixelcnn"), params)
    proc = run(["dvc", "repro"], repo)
    (repo.parent / "repro.log").write_text(proc.stdout + proc.stderr)  # beside the repo, not in it
    return repo


def _json(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def test_pixelcnn_through_dvc_reports_bits_per_dim_beside_fid_and_registers(cpixelcnn: Path) -> None:
    train, ev, reg = _json(cpixelcnn, "train"), _json(cpixelcnn, "eval"), _json(cpixelcnn, "register")
    assert train["family"] == "pixelcnn" and train["steps"] == 30 and train["best_step"] in (10, 20, 30)
    assert 0 < train["best_bits_per_dim"] < 8  # below a uniform guess over 256 values
    assert ev["primary_metric"] == "bits_per_dim" and ev["higher_is_better"] is False
    # the final EMA network on the same holdout as the periodic evaluation at step 30
    assert ev["step"] == 30 and 0 < ev["bits_per_dim"] < 8
    assert train["best_step"] != 30 or ev["bits_per_dim"] == pytest.approx(train["best_bits_per_dim"], rel=1e-2)
    for key in ("fid", "is", "kid", "precision", "recall", "conditional_accuracy", "sample_ms_per_image"):
        assert key in ev, key
    assert ev["num_samples"] == 200 and ev["sample_ms_per_image"] > 0
    assert reg["champion"] and reg["metric"] == "bits_per_dim"
    assert "encoder" not in (cpixelcnn.parent / "repro.log").read_text()  # no latent: no encoder to miss
    grid = Image.open(cpixelcnn / "samples/grid.png")
    assert grid.size == (8 * 18 + 2, 10 * 18 + 2)  # a row per class
    assert _json(cpixelcnn, "explore")["skipped"].startswith(
        "cpixelcnn is a pixelcnn model that draws images pixel by pixel, without a latent")
    summary = run(["gans", "summary"], cpixelcnn).stdout
    assert "bits/dim" in summary and "ms per sample" in summary
    # gans sample draws from the champion; gans export says why there is no single graph
    run(["gans", "sample", "--count", "4", "--label", "3", "--out", "four.png"], cpixelcnn)
    assert Image.open(cpixelcnn / "four.png").size == (4 * 18 + 2, 18 + 2)
    export = run(["gans", "export", "--checkpoint", "models/generator.pt"], cpixelcnn, check=False)
    assert export.returncode != 0 and "has no portable export" in export.stderr
    assert "Data and pipelines are up to date" in run(["dvc", "status"], cpixelcnn).stdout


def test_served_pixelcnn_draws_the_seeds_image_and_refuses_latent_rows(cpixelcnn: Path) -> None:
    proc, url = serve_model(cpixelcnn, "--model", "models:/gan-generator/1")
    try:
        resp = invoke_rows(url, [{"seed": 7, "label": 1}, {"seed": 8, "label": 2}])
        assert resp.status_code == 200, resp.text
        served = [base64.b64decode(r["png"]) for r in resp.json()["predictions"]]
        drawn = load_artifact(cpixelcnn / "models/generator.pt").generate([7, 8], [1, 2])
        for png, image in zip(served, drawn):
            got = torch.from_numpy(np.array(Image.open(io.BytesIO(png))))
            assert torch.equal(got, image[0])  # the seed fixes the image, whoever draws it
        blank = png_base64(torch.zeros(1, 16, 16, dtype=torch.uint8))
        bad = [([{"seed": 0, "label": 1, "direction": 0, "alpha": 1.0}], "'direction' given, but cpixelcnn (pixelcnn) "
                                                                        "has no latent to truncate, edit or invert"),
               ([{"seed": 0, "label": 1, "truncation": 0.5}], "'truncation' given, but cpixelcnn (pixelcnn) has no latent"),
               ([{"image": blank, "label": 0}], "'image' given, but cpixelcnn (pixelcnn) has no latent"),
               ([{"seed": 0}], "Model is missing inputs ['label']"),
               ([{"seed": 0, "label": 10}], "'label' must be in 0..9, got 10")]
        for rows, fragment in bad:
            r = invoke_rows(url, rows)
            assert r.status_code == 400 and fragment in r.text, (fragment, r.status_code, r.text[:300])
            assert invoke_rows(url, [{"seed": 1, "label": 0}]).status_code == 200  # still serving
        described = requests.get(f"{url}/model", timeout=30).json()
        assert described["family"] == "pixelcnn" and "pixel by pixel" in described["sampling"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
