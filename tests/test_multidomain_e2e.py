"""The multi-domain family end to end: StarGAN on the bundled five-style digits through a real `dvc repro`,
the registry with its ONNX export, and a real model server translating an image to a named domain."""

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
def stargan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = tiny_params({
        "data": {"source": "mnist5k-styles", "resolution": 16, "max_images": 300},
        "model": {"variant": "stargan", "width": 8, "overrides": {"g_blocks": 1, "n_critic": 2}},
        "train": {"steps": 10, "batch_size": 16, "checkpoint_every": 5, "log_every": 5, "sample_every": 5,
                  "eval_every": 5, "eval_samples": 30},
        "evaluate": {"num_samples": 40, "evaluator_epochs": 2, "batch_size": 100, "kid_subset_size": 20}})
    params["model"]["z_dim"] = 64  # the family has no latent: z_dim stays at its default
    repo = make_project(tmp_path_factory.mktemp("stargan"), params)
    run(["dvc", "repro"], repo)
    return repo


def _json(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def test_stargan_through_dvc_reports_every_domain_and_registers(stargan: Path) -> None:
    evaluator, train, ev, reg = (_json(stargan, n) for n in ("evaluator", "train", "eval", "register"))
    assert set(evaluator["parts"]) == {"images", "attributes"}  # the digit and the domain classifiers
    assert train["family"] == "multidomain" and train["steps"] == 10 and train["best_step"] in (5, 10)
    styles = ["original", "inverted", "outlined", "thick", "thin"]
    assert ev["domains"] == styles and ev["exclusive"] is True and ev["primary_metric"] == "fid"
    for key in ("fid", "target_accuracy", "label_preservation", "reconstruction_error", "protocol_note",
                *(f"target_accuracy_{s}" for s in styles), *(f"fid_{s}" for s in styles)):
        assert key in ev, key
    assert reg["champion"] and reg["metric"] == "fid"
    assert Image.open(stargan / "samples/grid.png").size == (6 * 18 + 2, 8 * 18 + 2)  # input | five domains
    summary = run(["gans", "summary"], stargan).stdout
    assert "target-domain accuracy" in summary and '"domain": "original"' in summary




def test_served_stargan_translates_to_a_named_domain_and_refuses_unknown_ones(stargan: Path) -> None:
    proc, url = serve_model(stargan, "--model", "models:/gan-generator/1")
    try:
        x = torch.load(stargan / "data/prepared/holdout.pt", weights_only=True)["parts"]["images"]["images"]
        resp = invoke_rows(url, [{"image": png_base64(x[0]), "domain": "inverted"}, {"image": png_base64(x[0]), "domain": "01000"},
                             {"image": png_base64(x[0]), "domain": "thin"}])
        assert resp.status_code == 200, resp.text
        pngs = [base64.b64decode(r["png"]) for r in resp.json()["predictions"]]
        assert pngs[0] == pngs[1] and pngs[0] != pngs[2]  # a name and its vector are the same target
        bad = [([{"image": png_base64(x[0]), "domain": "sideways"}],
                "'domain' names no domain this model knows ('sideways'); known: original, inverted, outlined, thick, thin"),
               ([{"image": png_base64(x[0])}], "Model is missing inputs ['domain']"),
               ([{"image": png_base64(x[0]), "domain": "thick+thin"}], "must name exactly one domain"),
               ([{"image": png_base64(torch.zeros(1, 8, 8, dtype=torch.uint8)), "domain": "thin"}], "is 8x8 pixels")]
        for rows, fragment in bad:
            r = invoke_rows(url, rows)
            assert r.status_code == 400 and fragment in r.text, (fragment, r.status_code, r.text[:300])
            assert invoke_rows(url, [{"image": png_base64(x[1]), "domain": "outlined"}]).status_code == 200  # still serving
        described = requests.get(f"{url}/model", timeout=30).json()
        assert described["domains"][:2] == ["original", "inverted"] and described["target_column"] == "domain"
        assert [c["name"] for c in described["inputs"]] == ["image", "domain"]
        assert '"domain": "original"' in described["example_request"]
        # the registered ONNX file takes the target vector as its second input and gives the served image
        target = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]])
        _, pixels = run_exported(model_files(stargan, "models:/gan-generator/1") / "artifacts/generator.onnx", "onnx",
                                 {"source": x[:1], "target": target})
        got = torch.from_numpy(np.array(Image.open(io.BytesIO(pngs[0]))))
        assert (pixels[0, 0].int() - got.int()).abs().max() <= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
