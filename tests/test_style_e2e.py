"""The style-based family end to end: StyleGAN2 (its lazy R1 and path-length phases, style mixing) on the bundled
digits through a real `dvc repro` in a git repository (FID and the truncation sweep, the explore stage on its
mapping network), registered (with its ONNX file, which registration checks against PyTorch), `gans sample` with truncation and style mixing, and a real
model server answering seeds with and without the latent-control columns, and refusing bad ones. StackGAN-v2
the same way: registered and served with labelled rows."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import pytest
import requests
import torch
from torchvision.io import decode_png

from conftest import invoke_rows, make_project, run, serve_model, tiny_params
from gans.families import load_artifact

pytestmark = pytest.mark.e2e


def _reproduced(tmp_path_factory: pytest.TempPathFactory, model: dict, steps: int) -> Path:
    """A project of the tiny params with ``model``, through `dvc repro` (checkpoints and evaluations twice)."""
    every = steps // 2
    params = tiny_params({"model": {"width": 8, "z_dim": 16, **model},
                          "train": {"steps": steps, "batch_size": 16, "checkpoint_every": every, "sample_every": every,
                                    "eval_every": every, "eval_samples": 30},
                          "evaluate": {"num_samples": 40, "evaluator_epochs": 2, "batch_size": 100,
                                       "kid_subset_size": 20, "truncation": [1.0, 0.5]}})
    repo = make_project(tmp_path_factory.mktemp(model["variant"]), params)
    run(["dvc", "repro"], repo)
    return repo


@pytest.fixture(scope="module")
def stylegan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _reproduced(tmp_path_factory, {"variant": "stylegan2", "overrides": {"r1_every": 4, "pl_every": 2}}, 20)


def _json(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def _png(text: str) -> torch.Tensor:
    return decode_png(torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8))


def test_stylegan2_through_dvc_trains_its_four_phases_and_reports_the_truncation_sweep(stylegan: Path) -> None:
    train, ev, reg = _json(stylegan, "train"), _json(stylegan, "eval"), _json(stylegan, "register")
    assert train["family"] == "progressive-style" and train["steps"] == 20 and train["best_fid"] > 0
    assert ev["family"] == "progressive-style" and ev["artifact"] == "generate" and ev["fid"] > 0
    assert [row["psi"] for row in ev["truncation"]] == [1.0, 0.5]
    with (stylegan / "plots" / "truncation.csv").open() as f:
        assert [float(r["psi"]) for r in csv.DictReader(f)] == [1.0, 0.5]
    assert reg["champion"] and reg["metric"] == "fid"
    assert "sefa" in _json(stylegan, "explore")["beats_random"]  # the explore stage ran on the mapping network
    assert (stylegan / "models" / "generator.pt").is_file()
    out = run(["gans", "sample", "--count", "4", "--mix-seed", "7", "--mix-layer", "2", "--truncation", "0.7",
               "--out", "mixed.png"], stylegan)
    assert (stylegan / "mixed.png").stat().st_size > 0 and "wrote 4 samples" in out.stdout
    refused = run(["gans", "sample", "--mix-seed", "7", "--mix-layer", "6"], stylegan, check=False)
    assert refused.returncode != 0 and "--mix-layer: got 6; stylegan2 has 6 style layers, so 1..5" in refused.stderr
    assert "Data and pipelines are up to date" in run(["dvc", "status"], stylegan).stdout


def test_served_stylegan2_answers_with_and_without_latent_controls_and_refuses_bad_rows(stylegan: Path) -> None:
    art = load_artifact(stylegan / "models/generator.pt")
    plain = art.generate([3, 4], None)
    mixed = art.generate([3, 4], None, mix_seeds=[9, 9], mix_layers=[2, 6])  # row 2: layer 6 of 6, no mixing
    proc, url = serve_model(stylegan, "--model", "models:/gan-generator/1")
    try:
        rows = invoke_rows(url, [{"seed": 3}, {"seed": 4}])
        assert rows.status_code == 200, rows.text
        got = [_png(r["png"]) for r in rows.json()["predictions"]]
        assert torch.equal(got[0], plain[0]) and torch.equal(got[1], plain[1])
        mean = invoke_rows(url, [{"seed": 3, "truncation": 0}, {"seed": 4, "truncation": 0}]).json()["predictions"]
        assert mean[0] == mean[1] and _png(mean[0]["png"]).shape == plain[0].shape  # psi 0: the mean w's image
        mix = invoke_rows(url, [{"seed": 3, "mix_seed": 9, "mix_layer": 2}, {"seed": 4}])
        assert mix.status_code == 200, mix.text
        got = [_png(r["png"]) for r in mix.json()["predictions"]]
        assert torch.equal(got[0], mixed[0]) and torch.equal(got[1], plain[1]) and not torch.equal(got[0], plain[0])
        bad = [([{"seed": 1, "mix_seed": 2}], "row 0: 'mix_seed' given without 'mix_layer'"),
               ([{"seed": 1, "mix_seed": 2, "mix_layer": 6}], "row 0: 'mix_layer' must be in 1..5, got 6"),
               ([{"seed": 1, "truncation": 2}], "row 0: 'truncation' must be in 0..1"),
               ([{"seed": 1, "mix_seed": 2, "mix_layer": 1, "direction": 0, "alpha": 1}], "either mixes styles"),
               ([{"seed": 1, "label": 2}], "this generator is unconditional")]
        for rows_, fragment in bad:
            r = invoke_rows(url, rows_)
            assert r.status_code == 400 and fragment in r.text, (fragment, r.status_code, r.text[:300])
            assert invoke_rows(url, [{"seed": 0}]).status_code == 200  # still serving
        described = requests.get(f"{url}/model", timeout=30).json()
        assert described["family"] == "progressive-style" and described["mix_layers"] == 6
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def stackgan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _reproduced(tmp_path_factory, {"variant": "stackgan", "overrides": {"ca_dim": 8}}, 12)


def test_stackgan_through_dvc_registers_and_serves_labelled_rows(stackgan: Path) -> None:
    train, ev, reg = _json(stackgan, "train"), _json(stackgan, "eval"), _json(stackgan, "register")
    assert train["family"] == "progressive-style" and train["variant"] == "stackgan" and train["steps"] == 12
    assert ev["fid"] > 0 and "conditional_accuracy" in ev and reg["champion"]
    art = load_artifact(stackgan / "models/generator.pt")
    expected = art.generate([3, 4], [1, 7])
    proc, url = serve_model(stackgan, "--model", "models:/gan-generator/1")
    try:
        r = invoke_rows(url, [{"seed": 3, "label": 1}, {"seed": 4, "label": 7}])
        assert r.status_code == 200, r.text
        got = [_png(p["png"]) for p in r.json()["predictions"]]
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        for rows_, fragment in (([{"seed": 1}], "label"),
                                ([{"seed": 1, "label": 2, "mix_seed": 2, "mix_layer": 1}], "mix")):
            bad = invoke_rows(url, rows_)
            assert bad.status_code == 400 and fragment in bad.text, (fragment, bad.status_code, bad.text[:300])
        described = requests.get(f"{url}/model", timeout=30).json()
        assert described["variant"] == "stackgan" and described["stage_resolutions"] == [4, 8, 16]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
