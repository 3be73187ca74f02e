"""The Prefect flow on a real (temporary, session-wide) Prefect server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import tiny_params

pytestmark = pytest.mark.e2e


def test_flow_runs_every_stage_and_publishes_a_summary(prefect_server, tmp_path: Path, monkeypatch) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from pipeline.flows import gan_pipeline

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(var, "unset-by-test")  # monkeypatch restores the outer value afterwards
        monkeypatch.delenv(var)
    state = gan_pipeline(params_file="params.yaml", overrides=["train.steps=20", "register.model_name=flow-gen"],
                         return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["train"]["steps"] == 20
    assert result["register"]["model_name"] == "flow-gen" and result["register"]["champion"]
    for out in ("metrics/eval.json", "samples/grid.png", "models/generator.pt"):
        assert (tmp_path / out).is_file(), out

    import asyncio

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["gan-pipeline-summary"])))

    found = asyncio.run(artifacts())
    assert found and "| FID |" in found[-1].data
