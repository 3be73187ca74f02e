"""Scheduled retraining on a real Prefect server: deploy, read the schedule back, run once."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import subprocess_env

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited:\n{proc.stdout.read() if proc.stdout else ''}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} did not answer in {timeout} s")


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    port = _free_port()
    home = tmp_path_factory.mktemp("prefect-home")
    env = subprocess_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        _wait(f"{api}/health", proc, "prefect server", timeout=180)
        yield api, home
    finally:
        proc.terminate()
        proc.wait(timeout=60)


CHECK = r"""
import asyncio, json, sys
from prefect import get_client
from prefect.deployments import run_deployment

async def schedules():
    async with get_client() as client:
        d = await client.read_deployment_by_name("gan-pipeline/nightly")
        return [s.schedule.cron for s in d.schedules], d.parameters

crons, parameters = asyncio.run(schedules())
run = run_deployment("gan-pipeline/nightly", timeout=600)
print(json.dumps({"crons": crons, "parameters": parameters, "state": run.state.type.value}))
"""


def test_deploy_schedules_the_flow_and_a_triggered_run_registers(prefect_api, tiny_repo: Path, tmp_path: Path) -> None:
    api, home = prefect_api
    repo = tmp_path / "project"
    shutil.copytree(tiny_repo, repo, ignore=shutil.ignore_patterns(".git", ".dvc", "mlflow.db*", "mlartifacts"))
    shutil.rmtree(repo / "models/checkpoints")
    env = subprocess_env(PREFECT_API_URL=api, PREFECT_HOME=str(home))
    served = subprocess.Popen(["gans", "deploy", "--cron", "0 3 * * *", "--name", "nightly", "-S", "train.steps=12",
                               "-S", "train.eval_every=0"], cwd=repo, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            found = requests.post(f"{api}/deployments/filter", json={}, timeout=5).json()
            if any(d["name"] == "nightly" for d in found):
                break
            assert served.poll() is None, served.stdout.read()
            time.sleep(1)
        out = subprocess.run([sys.executable, "-c", CHECK], cwd=repo, env=env, capture_output=True, text=True,
                             timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        served.terminate()
        served.wait(timeout=60)
    assert result["crons"] == ["0 3 * * *"]
    assert result["parameters"]["overrides"] == ["train.steps=12", "train.eval_every=0"]
    assert result["state"] == "COMPLETED"
    train = json.loads((repo / "metrics/train.json").read_text())
    registered = json.loads((repo / "metrics/register.json").read_text())
    assert train["steps"] == 12 and registered["version"] == 1 and registered["champion"]
