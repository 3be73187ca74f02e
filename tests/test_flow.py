"""The Prefect flow on a real (temporary, session-wide) Prefect server: in process, and through DVC."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_project, run, tiny_params


def _summaries() -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["gan-pipeline-summary"])))

    return sorted(asyncio.run(artifacts()), key=lambda a: a.created)  # oldest first (ids are not ordered)


def _no_mlflow_env(monkeypatch) -> None:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(var, "unset-by-test")  # monkeypatch restores the outer value afterwards
        monkeypatch.delenv(var)


def test_the_flow_goes_through_dvc_only_where_dvc_sees_the_params(tmp_path: Path) -> None:
    from pipeline.flows import dvc_mode

    (tmp_path / "params.yaml").write_text("{}")
    assert dvc_mode("params.yaml", [], tmp_path)[0] is False  # no .dvc, no dvc.yaml
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}")
    assert dvc_mode(str(tmp_path / "params.yaml"), [], tmp_path)[0] is True
    via_dvc, why = dvc_mode(str(tmp_path / "params.yaml"), ["train.steps=5"], tmp_path)
    assert via_dvc is False and "dvc.lock does not record this run" in why
    assert dvc_mode(str(tmp_path / "other.yaml"), [], tmp_path)[0] is False


@pytest.mark.e2e
def test_flow_runs_every_stage_and_publishes_a_summary(prefect_server, tmp_path: Path, monkeypatch) -> None:
    from pipeline.flows import gan_pipeline

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    monkeypatch.chdir(tmp_path)
    _no_mlflow_env(monkeypatch)
    state = gan_pipeline(params_file="params.yaml", overrides=["train.steps=20", "register.model_name=flow-gen"],
                         return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["train"]["steps"] == 20
    assert result["register"]["model_name"] == "flow-gen" and result["register"]["champion"]
    for out in ("metrics/eval.json", "samples/grid.png", "models/generator.pt"):
        assert (tmp_path / out).is_file(), out

    found = _summaries()
    assert found and "| FID |" in found[-1].data
    assert "| directions beating random | sefa " in found[-1].data and "| holdout inversion | PSNR " in found[-1].data


@pytest.mark.e2e
def test_flow_in_a_dvc_project_runs_stages_through_dvc_and_skips_unchanged(prefect_server, tmp_path: Path,
                                                                           monkeypatch) -> None:
    from pipeline.flows import gan_pipeline

    small = {"train": {"steps": 10, "eval_every": 0}, "evaluate": {"num_samples": 100, "evaluator_epochs": 1},
             "register": {"exports": False}}
    repo = make_project(tmp_path / "project", tiny_params(small))
    monkeypatch.chdir(repo)
    _no_mlflow_env(monkeypatch)
    t0 = time.monotonic()
    first = gan_pipeline(params_file="params.yaml", return_state=True)
    first_s = time.monotonic() - t0
    assert first.is_completed(), first
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "augment", "evaluator", "train", "evaluate", "explore", "register"}
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo).stdout
    result = first.result()
    assert result["train"] == json.loads((repo / "metrics/train.json").read_text())
    assert result["register"]["version"] == 1 and result["register"]["champion"]
    assert "Lineage: dvc.lock" in _summaries()[-1].data
    import mlflow  # the train stage's MLflow run (made in DVC's subprocess) names this flow run

    tags = mlflow.MlflowClient(f"sqlite:///{repo}/mlflow.db").get_run(result["train"]["run_id"]).data.tags
    assert tags["prefect.flow_run_id"] == str(first.state_details.flow_run_id)
    assert tags["prefect.flow_run_url"].endswith(str(first.state_details.flow_run_id))

    generator = repo / "models/generator.pt"
    before = (generator.stat().st_mtime_ns, (repo / "dvc.lock").read_text(), (repo / "metrics/train.json").read_text())
    t0 = time.monotonic()
    second = gan_pipeline(params_file="params.yaml", return_state=True)
    second_s = time.monotonic() - t0
    assert second.is_completed(), second
    # Nothing changed: DVC skipped every stage, so nothing was trained or registered again.
    assert (generator.stat().st_mtime_ns, (repo / "dvc.lock").read_text(),
            (repo / "metrics/train.json").read_text()) == before
    assert second.result()["register"]["version"] == 1
    print(f"flow through DVC: first run {first_s:.0f} s, second (all skipped) {second_s:.0f} s")
    assert second_s < first_s

    # A kill while DVC rewrote dvc.lock (it truncates, then writes) leaves it empty, and DVC itself then stops
    # on every command; the flow moves it aside, and nothing is trained or registered twice.
    (repo / "dvc.lock").write_text("")
    assert "required key not provided" in run(["dvc", "status"], repo, check=False).stderr
    # With a default DVC remote the flow also pushes the outputs, so that a run on a worker can be pulled.
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], repo)
    third = gan_pipeline(params_file="params.yaml", return_state=True)
    assert third.is_completed(), third
    assert len(list(repo.glob("dvc.lock.unreadable-*"))) == 1
    assert third.result()["register"]["version"] == 1
    assert "Outputs pushed to the DVC remote: store" in _summaries()[-1].data
    assert "Everything is up to date" in run(["dvc", "push"], repo).stdout
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo).stdout


def test_repair_lock_moves_only_a_lock_dvc_cannot_read_aside(tmp_path: Path) -> None:
    from pipeline.dvcrun import repair_lock

    assert repair_lock(tmp_path) is None  # none yet
    good = "schema: '2.0'\nstages:\n  prepare:\n    cmd: gans prepare\n"
    (tmp_path / "dvc.lock").write_text(good)
    assert repair_lock(tmp_path) is None and (tmp_path / "dvc.lock").read_text() == good
    for cut in ("", good[:30], good[:good.index("    cmd")]):
        (tmp_path / "dvc.lock").write_text(cut)
        message = repair_lock(tmp_path)
        assert message and "moved to dvc.lock.unreadable-" in message, cut
        assert ("empty" in message) == (cut == ""), message
        assert not (tmp_path / "dvc.lock").exists()
    assert sorted(p.read_text() for p in tmp_path.glob("dvc.lock.unreadable-*")) == sorted(
        ("", good[:30], good[:good.index("    cmd")]))  # each kept, none overwritten


def test_the_summary_shows_the_family_s_metrics() -> None:
    from pipeline.flows import metrics_markdown

    train = {"variant": "cyclegan", "steps": 10, "img_per_s": 20.0, "ada_p": 0.0}
    evaluation = {"family": "translation", "fid": 4.5, "label_preservation": 0.91, "cycle_error": 0.04,
                  "fid_a2b": 3.0, "fid_b2a": 6.0, "extractor": "domain:ab", "num_samples": 60, "num_real": 60}
    registered = {"model_name": "digits2mnist", "version": 3, "champion": False, "reason": "not comparable"}
    md = metrics_markdown(train, evaluation, registered)
    for row in ("| variant | cyclegan (translation) |", "| FID | 4.500 |", "| label preservation | 0.910 |",
                "| FID b2a | 6.000 |", "| champion | no: not comparable |"):
        assert row in md, row
    assert "| IS |" not in md  # a translator has no Inception Score
    skipped = metrics_markdown(train, evaluation, registered, explored={"skipped": "cyclegan is a translation model"})
    assert "| latent tools | skipped: cyclegan is a translation model |" in skipped
    assert "MLflow run" not in md  # a local store: no server to link to
    url = "http://mlflow.example.com:5000/#/models/digits2mnist/versions/3"
    assert f"| model version | [{url}]({url}) |" in metrics_markdown(train, evaluation, registered,
                                                                    [("model version", url)])
