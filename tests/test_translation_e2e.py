"""The translation family end to end: every preset through a real `dvc repro` in a git repository, the
registry, and a real model server answering image rows."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import yaml
from PIL import Image

from conftest import invoke_rows, make_project, model_files, png_base64, run, serve_model, tiny_params
from gans.export import run_exported

pytestmark = pytest.mark.e2e

SMALL = {"train": {"steps": 20, "batch_size": 16, "checkpoint_every": 10, "log_every": 5, "sample_every": 10,
                   "eval_every": 10, "eval_samples": 30},
         "evaluate": {"num_samples": 40, "evaluator_epochs": 2, "batch_size": 100, "kid_subset_size": 20}}


def _project(path: Path, source: str, variant: str) -> Path:
    params = tiny_params({**SMALL, "data": {"source": source, "max_images": 300},
                          "model": {"variant": variant, "width": 8}})
    params["model"]["z_dim"] = 64  # the family has no latent: z_dim stays at its default
    return make_project(path, params)


def _switch(repo: Path, variant: str) -> str:
    """Set model.variant in params.yaml and reproduce; return dvc's output."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"]["variant"] = variant
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return run(["dvc", "repro"], repo).stdout


def _json(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pix2Pix on the bundled edges -> digits pairs, reproduced by DVC."""
    repo = _project(tmp_path_factory.mktemp("paired"), "mnist5k-edges", "pix2pix")
    run(["dvc", "repro"], repo)
    return repo


def test_pix2pix_through_dvc_writes_every_contract_file(paired: Path) -> None:
    train, ev, reg = _json(paired, "train"), _json(paired, "eval"), _json(paired, "register")
    assert train["steps"] == 20 and train["variant"] == "pix2pix" and train["family"] == "translation"
    assert train["img_per_s"] > 0 and train["best_step"] in (10, 20) and train["best_fid"] > 0
    assert ev["family"] == "translation" and ev["artifact"] == "translate" and ev["directions"] == ["a2b"]
    for key in ("fid", "kid", "label_preservation", "psnr", "ssim", "l1", "fid_a2b", "psnr_a2b", "extractor",
                "evaluator_id", "num_samples", "num_real"):
        assert key in ev, key
    assert ev["primary_metric"] == "fid" and ev["higher_is_better"] is False
    assert 0 <= ev["label_preservation"] <= 1 and 0 <= ev["ssim"] <= 1 and ev["psnr"] > 0
    assert ev["num_samples"] == ev["num_real"] == 30 and "cycle_error" not in ev  # one-way: no cycle
    grid = Image.open(paired / "samples/grid.png")
    assert grid.size == (3 * 18 + 2, 8 * 18 + 2)  # input | output | target over 8 holdout images
    assert (paired / "models/generator.pt").is_file() and (paired / "models/evaluator.pt").is_file()
    assert reg["champion"] and reg["metric"] == "fid"
    # the explore stage ran and said why it had nothing to do: a translator has no latent
    assert _json(paired, "explore") == {"variant": "pix2pix", "family": "translation", "skipped": (
        "pix2pix is a translation model; latent directions need a generator that draws images from a latent "
        "(a noise-to-image variant)")}
    assert [p.name for p in (paired / "samples/directions").iterdir()] == ["skipped.txt"]
    assert "Data and pipelines are up to date" in run(["dvc", "status"], paired).stdout


def test_registered_version_says_its_family_direction_and_metric(paired: Path) -> None:
    import mlflow

    uri = f"sqlite:///{paired}/mlflow.db"
    client = mlflow.MlflowClient(uri, uri)
    mv = client.get_model_version_by_alias("gan-generator", "champion")
    assert (mv.tags["family"], mv.tags["variant"], mv.tags["directions"]) == ("translation", "pix2pix", "a2b")
    assert mv.tags["metric"] == "fid" and mv.tags["higher_is_better"] == "false"
    assert float(mv.tags["fid"]) == pytest.approx(_json(paired, "eval")["fid"])
    assert float(mv.tags["label_preservation"]) == pytest.approx(_json(paired, "eval")["label_preservation"])
    run_ = client.get_run(mv.run_id)
    assert run_.data.tags["family"] == "translation" and run_.data.tags["component.generator"].startswith("unet")
    assert [m.step for m in client.get_metric_history(mv.run_id, "l1_a2b")] == [5, 10, 15, 20]


def test_sample_and_summary_commands_on_a_translator(paired: Path) -> None:
    run(["gans", "sample", "--checkpoint", "models/generator.pt", "--count", "4", "--out", "t.png"], paired)
    assert Image.open(paired / "t.png").size == (3 * 18 + 2, 4 * 18 + 2)
    bad = run(["gans", "sample", "--checkpoint", "models/generator.pt", "--direction", "b2a"], paired, check=False)
    assert bad.returncode == 2 and "--direction: got 'b2a'; this model translates a2b" in bad.stderr
    summary = run(["gans", "summary"], paired).stdout
    assert "label preservation" in summary and "PSNR" in summary and '"image": "<base64 PNG>"' in summary


def _serve(repo: Path, model: str):
    return serve_model(repo, "--model", model)



def _holdout(repo: Path, part: str) -> torch.Tensor:
    return torch.load(repo / "data/prepared/holdout.pt", weights_only=True)["parts"][part]["images"]



def test_served_pix2pix_translates_pngs_and_refuses_bad_images(paired: Path) -> None:
    proc, url = _serve(paired, "models:/gan-generator/1")
    try:
        edges = _holdout(paired, "a")
        resp = invoke_rows(url, [{"image": png_base64(edges[0])}, {"image": png_base64(edges[1])}, {"image": png_base64(edges[0])}])
        assert resp.status_code == 200, resp.text
        pngs = [base64.b64decode(r["png"]) for r in resp.json()["predictions"]]
        assert all(Image.open(io.BytesIO(p)).size == (16, 16) for p in pngs)
        assert pngs[0] == pngs[2] and pngs[0] != pngs[1]  # the same image, the same translation
        big = torch.zeros(1, 20, 20, dtype=torch.uint8)
        bad = [([{"image": png_base64(big)}], "is 20x20 pixels; this model translates 16x16 images"),
               ([{"image": base64.b64encode(b"not a png").decode()}], "not a readable image"),
               ([{"image": "@@@"}], "not valid base64"),
               ([{"image": png_base64(edges[0]), "direction": "b2a"}], "'direction' must be one of a2b, got 'b2a'"),
               ([{"image": png_base64(edges[0])}] * 65, "at most 64")]
        for rows, fragment in bad:
            r = invoke_rows(url, rows)
            assert r.status_code == 400 and fragment in r.text, (fragment, r.status_code, r.text[:300])
            assert invoke_rows(url, [{"image": png_base64(edges[2])}]).status_code == 200  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cyclegan(paired: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CycleGAN on the same paired data (it does not use the pairing), in a copy of the pix2pix project:
    DVC reruns only what depends on model.variant."""
    repo = tmp_path_factory.mktemp("cyclegan") / "repo"
    shutil.copytree(paired, repo)
    out = _switch(repo, "cyclegan")
    for stage in ("prepare", "augment", "evaluator"):
        assert f"Stage '{stage}' didn't change, skipping" in out, out
    return repo


def test_cyclegan_through_dvc_reports_both_directions_and_registers_among_translators(cyclegan: Path) -> None:
    ev, reg = _json(cyclegan, "eval"), _json(cyclegan, "register")
    assert ev["variant"] == "cyclegan" and ev["directions"] == ["a2b", "b2a"]
    for key in ("fid_a2b", "fid_b2a", "label_preservation_a2b", "label_preservation_b2a", "cycle_error_a2b",
                "cycle_error_b2a", "psnr_b2a"):
        assert key in ev, key
    assert ev["fid"] == pytest.approx((ev["fid_a2b"] + ev["fid_b2a"]) / 2)
    # Version 2 never competes with pix2pix's version 1: a mean FID over two directions is another number.
    assert reg["version"] == 2 and not reg["champion"] and reg["champion_version"] == 1
    assert "not comparable" in reg["reason"] and "a2b,b2a" in reg["reason"]
    grid = Image.open(cyclegan / "samples/grid.png")
    assert grid.size == (6 * 18 + 2, 8 * 18 + 2)  # a | G_ab(a) | b, b | G_ba(b) | a


def test_served_cyclegan_takes_a_direction_per_row(cyclegan: Path) -> None:
    proc, url = _serve(cyclegan, "models:/gan-generator/2")
    try:
        a, b = _holdout(cyclegan, "a")[0], _holdout(cyclegan, "b")[0]
        resp = invoke_rows(url, [{"image": png_base64(a), "direction": "a2b"}, {"image": png_base64(b), "direction": "b2a"}])
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["predictions"]) == 2
        missing = invoke_rows(url, [{"image": png_base64(a)}])
        assert missing.status_code == 400, missing.text
        unknown = invoke_rows(url, [{"image": png_base64(a), "direction": "sideways"}])
        assert unknown.status_code == 400 and "must be one of a2b, b2a" in unknown.text
        described = requests.get(f"{url}/model", timeout=30).json()
        assert described["kind"] == "translate" and described["directions"] == ["a2b", "b2a"]
        assert [c["name"] for c in described["inputs"]] == ["image", "direction"] and described["max_rows"] == 64
        # each direction's ONNX file, in ONNX Runtime, gives the image the server gives
        local = model_files(cyclegan, "models:/gan-generator/2")
        served = resp.json()["predictions"]
        for i, (direction, image) in enumerate((("a2b", a), ("b2a", b))):
            _, pixels = run_exported(local / f"artifacts/generator-{direction}.onnx", "onnx", {"source": image[None]})
            got = torch.from_numpy(np.array(Image.open(io.BytesIO(base64.b64decode(served[i]["png"])))))
            assert (pixels[0, 0].int() - got.int()).abs().max() <= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_unpaired_presets_through_dvc_on_digits_and_mnist(tmp_path: Path) -> None:
    """DualGAN, then DiscoGAN in the same project: DVC reruns train, evaluate and register only."""
    repo = _project(tmp_path / "unpaired", "digits-mnist5k", "dualgan")
    run(["dvc", "repro"], repo)
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["layout"] == "unpaired" and meta["parts"]["a"]["train_count"] == 270
    for variant in ("dualgan", "discogan"):
        if variant != "dualgan":
            assert "Stage 'evaluator' didn't change, skipping" in _switch(repo, variant)
        ev, reg = _json(repo, "eval"), _json(repo, "register")
        assert ev["variant"] == variant and ev["directions"] == ["a2b", "b2a"]
        assert {"cycle_error", "label_preservation_a2b", "label_preservation_b2a"} <= set(ev)
        assert "psnr" not in ev  # unpaired: no ground truth to compare with
        assert reg["version"] == (1 if variant == "dualgan" else 2)
        assert reg["champion"] == (variant == "dualgan" or float(ev["fid"]) < _dualgan_fid(repo)), reg["reason"]


def _dualgan_fid(repo: Path) -> float:
    import mlflow

    uri = f"sqlite:///{repo}/mlflow.db"
    return float(mlflow.MlflowClient(uri, uri).get_model_version("gan-generator", "1").tags["fid"])
