"""Registration against a real MLflow store: never a promotion on a wrong basis, never a duplicate version."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import mlflow
import pytest

from gans.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from gans.data import load_source
from gans.families import build_trainer
from gans.io import file_hash, save_torch
from pipeline.params import params_from_dict
from pipeline.registry import RegistryError, _current_champion, check_evaluated, register_generator

NAME = "gan-generator"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a one-step generator, its evaluation and a sqlite store."""
    monkeypatch.chdir(tmp_path)
    data = load_source(DataConfig(source="digits", resolution=16, max_images=40))
    t = build_trainer(model=ModelConfig(z_dim=8, width=8), train=TrainConfig(batch_size=8, steps=1),
                      augment=AugmentConfig(), data=data, checkpoint_dir=tmp_path / "ckpt")
    t.fit()
    save_torch(t.export(), tmp_path / "generator.pt")
    return tmp_path


def _params(project: Path):
    return params_from_dict({"tracking": {"uri": f"sqlite:///{project}/store.db"}})


def _eval(project: Path, fid: float) -> dict:
    return {"variant": "dcgan", "evaluator_id": "e1", "extractor": "domain", "num_samples": 100, "fid": fid,
            "generator_hash": file_hash(project / "generator.pt")}


def _register(project: Path, fid: float) -> dict:
    return register_generator(_params(project), generator_path=project / "generator.pt", eval_metrics=_eval(project, fid),
                              train_metrics={}, data_meta={"source": "digits", "hash": "d1"})


def _client(project: Path) -> mlflow.MlflowClient:
    uri = f"sqlite:///{project}/store.db"
    return mlflow.MlflowClient(uri, uri)


def test_an_evaluation_of_other_weights_is_refused(project: Path) -> None:
    ev = _eval(project, 10.0)
    assert check_evaluated(ev, project / "generator.pt") == ev["generator_hash"]
    with pytest.raises(RegistryError, match="metrics/eval.json was computed for generator 0123, but .*generator.pt is "
                                            f"{ev['generator_hash']}: evaluate it first"):
        check_evaluated({**ev, "generator_hash": "0123"}, project / "generator.pt")
    with pytest.raises(RegistryError, match="a generator it does not name"):
        check_evaluated({k: v for k, v in ev.items() if k != "generator_hash"}, project / "generator.pt")


def test_a_champion_that_cannot_be_read_is_never_promoted_over(project: Path) -> None:
    """A locked store (another writer holding it past the timeout) must fail registration, not read as
    "no champion" and promote whatever comes."""
    first = _register(project, 10.0)
    assert first["champion"] and first["version"] == 1
    client = _client(project)
    holder = sqlite3.connect(project / "store.db", timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # nobody else can read or write the store now
    try:
        with pytest.raises(RegistryError, match=f"cannot read the champion of '{NAME}' .*champion is unchanged"):
            _current_champion(client, NAME)
    finally:
        holder.rollback()
        holder.close()
    assert _current_champion(client, NAME)[0] == "1"


def test_a_register_killed_after_logging_the_model_does_not_duplicate_it(project: Path) -> None:
    """The kill left a logged model (or, from an earlier release, a version without tags): the rerun
    reuses it instead of logging or registering the same generator again."""
    h = file_hash(project / "generator.pt")
    mlflow.set_tracking_uri(f"sqlite:///{project}/store.db")
    mlflow.set_registry_uri(f"sqlite:///{project}/store.db")
    exp = mlflow.set_experiment("gans")
    with mlflow.start_run() as run:  # what a killed register left behind: a logged model, no version
        mlflow.log_dict({}, "x.json")
        logged = mlflow.pyfunc.log_model(name="generator", python_model=str(ROOT / "pipeline/generator_model.py"),
                                         artifacts={"generator": str(project / "generator.pt")},
                                         tags={"generator_hash": h}, pip_requirements=["torch"])
    first = register_generator(_params(project), generator_path=project / "generator.pt",
                               eval_metrics=_eval(project, 10.0), train_metrics={"run_id": run.info.run_id},
                               data_meta={"source": "digits", "hash": "d1"})
    client = _client(project)
    models = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    assert [m.model_id for m in models] == [logged.model_id]
    (version,) = client.search_model_versions(f"name='{NAME}'")
    assert first["version"] == int(version.version) and version.tags["generator_hash"] == h
    # An untagged version of the same file (an earlier release killed between registering and tagging):
    client.delete_model_version_tag(NAME, version.version, "generator_hash")
    again = _register(project, 10.0)
    assert again["version"] == first["version"] and len(client.search_model_versions(f"name='{NAME}'")) == 1
    assert client.get_model_version(NAME, version.version).tags["generator_hash"] == h


def test_a_version_carries_its_onnx_export_and_sample_grid(project: Path) -> None:
    """The registered model holds, beside the generator file, its ONNX export (verified when made) and the
    evaluation's grid; its description and metadata say what they are."""
    import onnxruntime as ort
    from PIL import Image

    Image.new("L", (18, 18)).save(project / "grid.png")
    result = register_generator(_params(project), generator_path=project / "generator.pt",
                                eval_metrics=_eval(project, 10.0), train_metrics={},
                                data_meta={"source": "digits", "hash": "d1"}, grid_path=project / "grid.png")
    client = _client(project)
    mv = client.get_model_version(NAME, str(result["version"]))
    assert "generator.onnx (ONNX opset 18, max |runtime - PyTorch|" in mv.tags["export"]
    assert f"the model's artifacts hold {mv.tags['export']}" in mv.description
    mlflow.set_tracking_uri(f"sqlite:///{project}/store.db")
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{NAME}/{mv.version}"))
        info = mlflow.models.get_model_info(f"models:/{NAME}/{mv.version}")
    finally:
        mlflow.set_tracking_uri(None)
    assert sorted(p.name for p in (local / "artifacts").iterdir()) == ["generator.onnx", "generator.pt", "grid.png"]
    session = ort.InferenceSession(str(local / "artifacts/generator.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["z"]
    gans = info.metadata["gans"]
    assert gans["kind"] == "generate" and gans["variant"] == "dcgan" and gans["z_dim"] == 8
    assert gans["exports"] == mv.tags["export"]


def test_register_exports_false_ships_the_generator_file_alone(project: Path) -> None:
    params = params_from_dict({"tracking": {"uri": f"sqlite:///{project}/store.db"}, "register": {"exports": False}})
    result = register_generator(params, generator_path=project / "generator.pt", eval_metrics=_eval(project, 10.0),
                                train_metrics={}, data_meta={"source": "digits", "hash": "d1"})
    mv = _client(project).get_model_version(NAME, str(result["version"]))
    assert mv.tags.get("export", "") == "" and "outside Python" not in (mv.description or "")
    mlflow.set_tracking_uri(f"sqlite:///{project}/store.db")
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{NAME}/{mv.version}"))
    finally:
        mlflow.set_tracking_uri(None)
    assert sorted(p.name for p in (local / "artifacts").iterdir()) == ["generator.pt"]
    with pytest.raises(Exception, match="register.exports"):
        params_from_dict({"register": {"exports": "no"}})
