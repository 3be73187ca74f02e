"""End to end: a real `dvc repro` in a git repo, the MLflow registry, a real model server."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import yaml
from PIL import Image
from torchvision.io import encode_png

from conftest import make_project, model_files, run, serve_model, subprocess_env, tail, tiny_params
from gans.export import run_exported
from gans.families import load_artifact
from gans.latent import renderer, sefa_directions
from gans.sampling import latents_for_seeds

pytestmark = pytest.mark.e2e


def test_dvc_repro_writes_every_output(tiny_repo: Path) -> None:
    train = json.loads((tiny_repo / "metrics/train.json").read_text())
    assert train["steps"] == 40 and train["resumed_from"] is None
    assert train["variant"] == "dcgan" and train["img_per_s"] > 0
    assert 0.0 <= train["ada_p"] < 1.0
    ev = json.loads((tiny_repo / "metrics/eval.json").read_text())
    for key in ("fid", "is", "kid", "precision", "recall", "extractor", "num_samples"):
        assert key in ev, key
    assert ev["extractor"].startswith("domain:") and ev["num_samples"] == 200
    assert ev["fid"] > 0 and 1.0 <= ev["is"] <= 10.0
    # the truncation trade-off at params.yaml's psi values: psi 1 is the main score, the others score the same
    # seeds drawn nearer the mean latent, as eval.json rows, plots/truncation.csv and MLflow metrics
    assert [r["psi"] for r in ev["truncation"]] == [1.0, 0.75, 0.5, 0.25]
    assert {k: ev["truncation"][0][k] for k in ("fid", "precision", "recall")} == \
        {k: ev[k] for k in ("fid", "precision", "recall")}
    assert len({r["fid"] for r in ev["truncation"]}) == 4 and all(0 <= r["recall"] <= 1 for r in ev["truncation"])
    lines = (tiny_repo / "plots/truncation.csv").read_text().splitlines()
    assert lines[0] == "psi,fid,precision,recall" and [float(x.split(",")[1]) for x in lines[1:]] == \
        [r["fid"] for r in ev["truncation"]]
    grid = Image.open(tiny_repo / "samples/grid.png")
    assert grid.size == (8 * 18 + 2, 8 * 18 + 2)
    assert (tiny_repo / "models/generator.pt").stat().st_size > 0
    assert (tiny_repo / "models/evaluator.pt").stat().st_size > 0
    assert sorted(p.name for p in (tiny_repo / "models/checkpoints").glob("ckpt-*.pt")) == [
        "ckpt-00000030.pt", "ckpt-00000040.pt"]
    rows = (tiny_repo / "plots/train.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss_d,loss_g") and len(rows) == 1 + 40 // 5
    probe = [dict(zip(rows[0].split(","), r.split(","))) for r in rows[1:]]  # the overfitting probe, every log
    assert all(-1 <= float(r["sign_val"]) <= 1 and float(r["r_v"]) == float(r["r_v"]) for r in probe)
    assert (tiny_repo / "dvc.lock").is_file()
    # Periodic FID every 20 steps; the best generator by FID is kept beside the last checkpoints.
    assert train["best_step"] in (20, 40) and train["best_fid"] > 0
    best = torch.load(tiny_repo / "models/checkpoints/best.pt", weights_only=True)
    assert best["fid"] == pytest.approx(train["best_fid"]) and best["step"] == train["best_step"]
    fid_rows = [r.split(",") for r in (tiny_repo / "plots/fid.csv").read_text().splitlines()]
    assert fid_rows[0] == ["step", "fid"] and [int(r[0]) for r in fid_rows[1:]] == [20, 40]
    assert min(float(r[1]) for r in fid_rows[1:]) == pytest.approx(train["best_fid"])


def test_dvc_repro_again_changes_nothing(tiny_repo: Path) -> None:
    out = run(["dvc", "status"], tiny_repo).stdout
    assert "changed" not in out and "modified" not in out, out


def test_outputs_round_trip_through_a_dvc_remote_and_a_clone_reruns_nothing(tiny_repo: Path, tmp_path: Path) -> None:
    """A local-folder remote is real DVC: push after the run, pull in a fresh clone (which has no checkpoints
    and no MLflow store), and `dvc repro` there runs no stage."""
    origin = tmp_path / "origin"
    shutil.copytree(tiny_repo, origin, ignore=shutil.ignore_patterns("mlflow.db*", "mlartifacts"))
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "a run and its remote"], origin)
    assert "pushed" in run(["dvc", "push"], origin).stdout
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "models/generator.pt").exists() and not (clone / "models/checkpoints").exists()
    run(["dvc", "pull"], clone)
    cached = ["models/generator.pt", "models/evaluator.pt", "samples/grid.png", "data/prepared", "data/augmented",
              "models/directions.pt", "samples/directions"]
    for name in cached:
        files = sorted(p.relative_to(origin) for p in [origin / name, *(origin / name).rglob("*")] if p.is_file())
        assert files, name
        for f in files:
            assert (clone / f).read_bytes() == (origin / f).read_bytes(), f
    assert "up to date" in run(["dvc", "status"], clone).stdout
    before = (clone / "models/generator.pt").stat().st_mtime_ns
    out = run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in out and out.count("didn't change, skipping") == 7, out
    assert (clone / "models/generator.pt").stat().st_mtime_ns == before


def test_training_on_into_the_same_run_explores_and_registers_again(tiny_repo: Path, tmp_path: Path) -> None:
    """More steps resume the training run: evaluate, explore and register run again on the new generator and
    log into the same MLflow run, and the new version is logged (MLflow links a run's metrics to the logged
    model and refuses two points of one key at the same time and step, which a rerun must never write)."""
    import mlflow

    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo, repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["steps"] = 45
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    out = run(["dvc", "repro"], repo).stdout
    for stage in ("train", "evaluate", "explore", "register"):
        assert f"Running stage '{stage}'" in out, out
    uri = f"sqlite:///{repo}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id = json.loads((repo / "metrics/train.json").read_text())["run_id"]
    assert run_id == json.loads((tiny_repo / "metrics/train.json").read_text())["run_id"]
    history = client.get_metric_history(run_id, "explore_random_pixel_change")
    assert sorted(m.step for m in history) == [40, 45], history
    assert json.loads((repo / "metrics/register.json").read_text())["version"] == 2


def test_registered_champion_with_tags(tiny_repo: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tiny_repo}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version_by_alias("gan-generator", "champion")
    ev = json.loads((tiny_repo / "metrics/eval.json").read_text())
    assert mv.tags["variant"] == "dcgan" and mv.tags["data_source"] == "digits"
    assert mv.tags["evaluator_id"] == ev["evaluator_id"]
    assert float(mv.tags["fid"]) == pytest.approx(ev["fid"])
    assert len(mv.tags["git_commit"]) == 40 and mv.tags["dvc_stage_hash"] != "none"
    assert mv.description.startswith("dcgan (noise-to-image) trained on digits") and f"fid {ev['fid']:.4g}" in \
        mv.description and "chosen by fid (lower is better)" in mv.description, mv.description
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        info = mlflow.models.get_model_info(f"models:/gan-generator/{mv.version}")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert info.saved_input_example_info is not None and info.signature.inputs.input_names() == ["seed", "label", "truncation", "direction", "alpha", "mix_seed", "mix_layer", "image"]
    # the version carries its ONNX export and the sample grid; its description and metadata say so
    assert "generator.onnx (ONNX opset 18" in mv.tags["export"] and mv.tags["export"] in mv.description
    assert info.metadata["gans"]["variant"] == "dcgan" and info.metadata["gans"]["exports"] == mv.tags["export"]
    files = model_files(tiny_repo, f"models:/gan-generator/{mv.version}")
    assert (files / "artifacts/grid.png").read_bytes() == (tiny_repo / "samples/grid.png").read_bytes()
    run_ = client.get_run(mv.run_id)
    assert run_.data.params["model.variant"] == "dcgan"
    # MLflow's own conventions: the system tags its UI shows, the data as dataset inputs (searchable)
    head = run(["git", "rev-parse", "HEAD"], tiny_repo).stdout.strip()
    tags = run_.data.tags
    assert tags["mlflow.source.git.commit"] == head and tags["mlflow.source.name"] == "gans train"
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    meta = json.loads((tiny_repo / "data/prepared/meta.json").read_text())
    inputs = {i.dataset.name: (i.dataset.digest, {t.key: t.value for t in i.tags}["mlflow.data.context"],
                               json.loads(i.dataset.profile)["count"]) for i in run_.inputs.dataset_inputs}
    assert inputs == {"digits-train": (meta["hash"], "training", meta["train_count"]),
                      "digits-holdout": (meta["hash"], "eval", meta["holdout_count"])}, inputs
    found = client.search_runs([run_.info.experiment_id], filter_string=f"dataset.digest = '{meta['hash']}'")
    assert [r.info.run_id for r in found] == [mv.run_id]
    assert run_.data.tags["component.loss"] == "non-saturating"
    history = client.get_metric_history(mv.run_id, "loss_d")
    assert [m.step for m in history] == list(range(5, 41, 5))
    assert [m.step for m in client.get_metric_history(mv.run_id, "fid")] == [20, 40]
    assert "eval_fid" in run_.data.metrics
    # the explore stage's results, on the same run; the version ships its encoder (image -> latent)
    explored = json.loads((tiny_repo / "metrics/explore.json").read_text())
    assert run_.data.metrics["explore_sefa_beats_random"] == explored["beats_random"]["sefa"]
    assert run_.data.metrics["explore_inversion_optimised_psnr"] == pytest.approx(
        explored["inversion"]["optimised"]["psnr"])
    assert {"sefa.png", "inversion.png"} <= {Path(a.path).name for a in client.list_artifacts(mv.run_id,
                                                                                             "samples/directions")}
    assert (files / "artifacts/directions.pt").read_bytes() == (tiny_repo / "models/directions.pt").read_bytes()
    assert json.loads((tiny_repo / "metrics/register.json").read_text())["champion"] is True


@dataclass(frozen=True)
class Served:
    url: str
    log: Path  # the server's output, whose tail a failing request shows


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc, url = serve_model(tiny_repo, log=log)
    yield Served(url, log)
    proc.terminate()
    proc.wait(timeout=30)


def _invoke(url: str, payload: object) -> requests.Response:
    return requests.post(f"{url}/invocations", json=payload, timeout=60)


def test_served_generator_answers_with_pngs(server: Served) -> None:
    resp = _invoke(server.url, {"dataframe_records": [{"seed": 0}, {"seed": 1}, {"seed": 0}]})
    assert resp.status_code == 200, f"{resp.text}\n{tail(server.log)}"
    pngs = [base64.b64decode(row["png"]) for row in resp.json()["predictions"]]
    images = [Image.open(io.BytesIO(p)) for p in pngs]
    assert all(img.size == (16, 16) for img in images)
    assert pngs[0] == pngs[2] and pngs[0] != pngs[1]

def test_served_generator_edits_along_its_sefa_directions(server: Served, tiny_repo: Path) -> None:
    """seed + direction + alpha: the seed's latent moved along the generator's SeFa direction, the same image
    as the generator file gives for that latent; alpha 0 (or no edit) is the seed's own image."""
    rows = [{"seed": 5}, {"seed": 5, "direction": 0, "alpha": 3}, {"seed": 5, "direction": 0, "alpha": 0},
            {"seed": 5, "direction": 2, "alpha": -2.5}]
    resp = _invoke(server.url, {"dataframe_records": rows})
    assert resp.status_code == 200, f"{resp.text}\n{tail(server.log)}"
    pngs = [base64.b64decode(row["png"]) for row in resp.json()["predictions"]]
    assert pngs[0] == pngs[2] and pngs[1] != pngs[0] and pngs[3] not in (pngs[0], pngs[1])
    artifact = load_artifact(tiny_repo / "models/generator.pt")
    d, _ = sefa_directions(artifact.generator, artifact.z_dim, 3)
    z = latents_for_seeds([5], artifact.z_dim) + 3 * d[0]
    expected = renderer(artifact.generator, torch.device("cpu"))(z, None)[0, 0]
    served = torch.from_numpy(np.array(Image.open(io.BytesIO(pngs[1]))))
    assert (served.int() - expected.int()).abs().max() <= 1
    info = requests.get(f"{server.url}/model", timeout=30).json()
    assert "'direction' (0..9) and 'alpha' (-10..10)" in info["edit"], info


def test_served_generator_truncates_towards_the_mean_latent(server: Served, tiny_repo: Path) -> None:
    """truncation psi: the seed's latent scaled by psi, per row; psi 0 is one image whatever the seed, psi 1 (or
    no truncation) the seed's own; the description says so."""
    rows = [{"seed": 1, "truncation": 0}, {"seed": 2, "truncation": 0.0}, {"seed": 1}, {"seed": 1, "truncation": 1},
            {"seed": 1, "truncation": 0.5}]
    resp = _invoke(server.url, {"dataframe_records": rows})
    assert resp.status_code == 200, f"{resp.text}\n{tail(server.log)}"
    pngs = [base64.b64decode(row["png"]) for row in resp.json()["predictions"]]
    assert pngs[0] == pngs[1] and pngs[2] == pngs[3] and pngs[4] not in (pngs[0], pngs[2])
    artifact = load_artifact(tiny_repo / "models/generator.pt")
    expected = renderer(artifact.generator, torch.device("cpu"))(0.5 * latents_for_seeds([1], artifact.z_dim), None)
    served = torch.from_numpy(np.array(Image.open(io.BytesIO(pngs[4]))))
    assert (served.int() - expected[0, 0].int()).abs().max() <= 1
    info = requests.get(f"{server.url}/model", timeout=30).json()
    assert "optional 'truncation' psi in 0..1" in info["truncation"], info


def test_served_generator_inverts_an_image_to_its_latent(server: Served, tiny_repo: Path) -> None:
    """image -> latent: the latent of a drawn image, found by the shipped encoder and refined, draws an image
    closer to it than the neighbouring seed's; the answered png is what the answered latent draws."""
    drawn = _invoke(server.url, {"dataframe_records": [{"seed": 7}, {"seed": 8}]}).json()["predictions"]
    resp = _invoke(server.url, {"dataframe_records": [{"image": drawn[0]["png"]}]})
    assert resp.status_code == 200, f"{resp.text}\n{tail(server.log)}"
    answer = resp.json()["predictions"][0]
    artifact = load_artifact(tiny_repo / "models/generator.pt")
    assert len(answer["latent"]) == artifact.z_dim

    def pixels(b64: str) -> torch.Tensor:
        return torch.from_numpy(np.array(Image.open(io.BytesIO(base64.b64decode(b64))))).float()

    target = pixels(drawn[0]["png"])
    assert (pixels(answer["png"]) - target).abs().mean() < (pixels(drawn[1]["png"]) - target).abs().mean()
    redrawn = renderer(artifact.generator, torch.device("cpu"))(torch.tensor([answer["latent"]]), None)[0, 0]
    assert (redrawn.float() - pixels(answer["png"])).abs().max() <= 1
    info = requests.get(f"{server.url}/model", timeout=30).json()
    assert "steps of gradient descent" in info["invert"], info


def test_served_model_describes_itself_and_its_onnx_export_gives_the_same_images(server: Served,
                                                                                  tiny_repo: Path) -> None:
    described = requests.get(f"{server.url}/model", timeout=30)
    assert described.status_code == 200, described.text
    info = described.json()
    assert info["family"] == "noise-to-image" and info["variant"] == "dcgan" and info["kind"] == "generate"
    assert [c["name"] for c in info["inputs"]] == ["seed", "label", "truncation", "direction", "alpha", "mix_seed", "mix_layer", "image"]
    assert info["max_rows"] == 64
    assert info["version"] == "1" and "torch.Generator().manual_seed(s)" in info["latent"]
    assert info["example_request"] == '{"dataframe_records": [{"seed": 0}]}' and "generator.onnx" in info["exports"]
    # the seed-to-latent recipe it states, through the registered ONNX file in ONNX Runtime: the served images
    seeds = [0, 1, 99]
    resp = _invoke(server.url, {"dataframe_records": [{"seed": s} for s in seeds]})
    served = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(base64.b64decode(row["png"])))))
                          for row in resp.json()["predictions"]])
    onnx_file = model_files(tiny_repo, "models:/gan-generator/1") / "artifacts/generator.onnx"
    _, pixels = run_exported(onnx_file, "onnx", {"z": latents_for_seeds(seeds, info["z_dim"])})
    assert (pixels[:, 0].int() - served.int()).abs().max() <= 1 and (pixels[:, 0] == served).float().mean() > 0.99


@pytest.mark.parametrize("payload, fragment", [
    ({"dataframe_records": [{"seed": -1}]}, "row 0: 'seed' must be in 0..9223372036854775807, got -1"),
    ({"dataframe_records": [{"seed": i} for i in range(65)]}, "the request has 65 rows; at most 64 per request"),
    ({"dataframe_records": [{"seed": 0}, {"seed": "abc"}]}, "row 1: 'seed' must be an integer, got str 'abc'"),
    ({"nonsense": 1}, "The input must be a JSON dictionary with exactly one of the input fields"),
    ({"dataframe_records": [{"seed": 0, "direction": 10, "alpha": 1}]},
     "row 0: 'direction' must be in 0..9 (the generator's top SeFa directions), got 10"),
    ({"dataframe_records": [{"seed": 0}, {"seed": 0, "direction": 1, "alpha": 11}]},
     "row 1: 'alpha' must be in -10..10, got 11"),
    ({"dataframe_records": [{"seed": 0, "direction": 1}]}, "row 0: 'direction' given without 'alpha'"),
    ({"dataframe_records": [{"seed": 0, "direction": 1, "alpha": "big"}]},
     "row 0: 'alpha' must be a finite number, got str 'big'"),
    ({"dataframe_records": [{"seed": 0}, {"seed": 1, "truncation": 1.5}]},
     "row 1: 'truncation' must be in 0..1 (1: the seed's own latent, 0: the mean latent), got 1.5"),
    ({"dataframe_records": [{"image": "aGVsbG8=", "truncation": 0.5}]},
     "row 0: 'truncation' given in a request that inverts images"),
    ({"dataframe_records": [{"image": "aGVsbG8="}]}, "row 0: 'image' is not a readable image"),
    ({"dataframe_records": [{"image": base64.b64encode(encode_png(torch.zeros(1, 8, 8, dtype=torch.uint8))
                                                       .numpy().tobytes()).decode()}]},
     "row 0: 'image' is 8x8; this generator draws and inverts 16x16 images"),
    ({"dataframe_records": [{"seed": 1}, {"image": "aGVsbG8="}]}, "row 0: 'seed' given in a request that inverts"),
], ids=["negative-seed", "too-many-rows", "string-seed", "no-input-field", "direction-out-of-range",
        "alpha-out-of-range", "direction-without-alpha", "string-alpha", "truncation-out-of-range",
        "truncation-with-invert", "invert-not-an-image", "invert-wrong-size",
        "invert-and-seed"])
def test_bad_requests_get_errors_and_server_keeps_serving(server: Served, payload: object, fragment: str) -> None:
    resp = _invoke(server.url, payload)
    assert resp.status_code == 400, (resp.status_code, resp.text, tail(server.log))
    message = resp.json()["message"]
    assert fragment in message, message
    again = _invoke(server.url, {"dataframe_records": [{"seed": 3}]})
    assert again.status_code == 200, (again.status_code, again.text, tail(server.log))


def test_killed_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "resume", tiny_params({"train": {"steps": 3000, "checkpoint_every": 20}}))
    for stage in ("prepare", "augment", "evaluator"):
        run(["gans", stage], repo)
    ckpts, log, timeout = repo / "models/checkpoints", tmp_path / "train.log", 120
    with log.open("w") as out:
        proc = subprocess.Popen(["gans", "train"], cwd=repo, env=subprocess_env(), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + timeout
        while not list(ckpts.glob("ckpt-*.pt")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        exited = proc.poll()
        proc.kill()
    finally:
        proc.wait()
    saved = sorted(int(p.stem.split("-")[1]) for p in ckpts.glob("ckpt-*.pt"))
    state = f"exited with status {exited}" if exited is not None else f"still running after {timeout} s"
    assert saved, f"no checkpoint appeared in {ckpts} (training {state}):\n{tail(log)}"
    assert exited is None, f"training {state} before it could be killed:\n{tail(log)}"
    last = saved[-1]
    target = last + 20
    run(["gans", "train", "-S", f"train.steps={target}"], repo)
    metrics = json.loads((repo / "metrics/train.json").read_text())
    assert metrics["resumed_from"] == last and metrics["steps"] == target
    # The MLflow run continues: one run, marked resumed, with losses before and after the kill.
    import mlflow

    uri = f"sqlite:///{repo}/mlflow.db"
    client = mlflow.MlflowClient(uri, uri)
    run_ = client.get_run(metrics["run_id"])
    assert run_.data.tags.get("resumed") == "true"
    steps = [m.step for m in client.get_metric_history(metrics["run_id"], "loss_d")]
    assert min(steps) <= last < max(steps) == target
    assert len(client.search_runs([run_.info.experiment_id])) == 1
    # A rerun after completion trains nothing more.
    run(["gans", "train", "-S", f"train.steps={target}"], repo)
    again = json.loads((repo / "metrics/train.json").read_text())
    assert again["steps"] == target and again["resumed_from"] == target


def test_sample_summary_and_variants_commands(tiny_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"  # these commands write (samples, local.png): in a copy, not in the shared project
    shutil.copytree(tiny_repo, repo, symlinks=True)
    run(["gans", "sample", "--count", "6", "--per-row", "3", "--out", "samples/champion.png"], repo)
    assert Image.open(repo / "samples/champion.png").size == (3 * 18 + 2, 2 * 18 + 2)
    run(["gans", "sample", "--checkpoint", "models/generator.pt", "--count", "4", "--truncation", "0", "--out",
         "local.png"], repo)
    local = torch.from_numpy(np.array(Image.open(repo / "local.png").convert("L")))
    assert local.shape == (18 + 2, 4 * 18 + 2)
    tiles = [local[2:18, 2 + 18 * i:18 + 18 * i] for i in range(4)]  # psi 0: every seed draws the mean image
    assert all(torch.equal(t, tiles[0]) for t in tiles) and tiles[0].float().std() > 0
    summary = run(["gans", "summary"], repo).stdout
    assert "FID" in summary and "mlflow ui --backend-store-uri sqlite:///mlflow.db" in summary and "gans serve" in summary
    assert "dcgan" in run(["gans", "variants"], repo).stdout
    missing = run(["gans", "evaluate", "--params", "nope.yaml"], repo, check=False)
    assert missing.returncode == 2 and "error: params file 'nope.yaml' not found" in missing.stderr
