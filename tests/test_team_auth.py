"""The team servers with authentication on, as the README's recipe starts them: `mlflow server --app-name
basic-auth` (a sqlite store here; the PostgreSQL one is tests/test_team_server.py) and `prefect server` with
PREFECT_SERVER_API_AUTH_STRING. Unauthenticated requests are refused; the pipeline with credentials from the
environment works, and without them stops with a message naming the variables."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from scratch import free_port, make_project, run, stop_process, subprocess_env, tail, tiny_params

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
ADMIN_PASSWORD = "admin-password-for-tests"  # MLflow asks for at least 12 characters
PREFECT_AUTH = "admin:prefect-test-secret"


def _start(cmd: list[str], cwd: Path, log: Path, ready: str, env: dict[str, str], timeout: float = 180):
    with log.open("w") as out:  # a file, not a pipe nobody reads
        proc = subprocess.Popen(cmd, cwd=cwd, env=subprocess_env(**env), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{cmd[0]} exited with {proc.returncode}:\n{tail(log)}")
        try:
            if requests.get(ready, timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise AssertionError(f"{ready} did not answer in {timeout:.0f} s:\n{tail(log)}")


@pytest.fixture(scope="module")
def mlflow_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("mlflow-auth")
    uri = f"http://127.0.0.1:{free_port()}"
    proc = _start([str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--backend-store-uri",
                   f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "artifacts"),
                   "--host", "127.0.0.1", "--port", uri.rsplit(":", 1)[1]], home, home / "server.log",
                  f"{uri}/health", {"MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                                    "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key"})
    try:
        yield uri
    finally:
        stop_process(proc)


def test_mlflow_basic_auth_refuses_anonymous_clients_and_the_pipeline_runs_with_credentials(
        mlflow_auth: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow.server import get_app_client

    search = f"{mlflow_auth}/api/2.0/mlflow/experiments/search"
    assert requests.get(search, params={"max_results": 1}, timeout=10).status_code == 401
    admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    with pytest.MonkeyPatch.context() as mp:  # the README's way to add a user
        for k, v in admin.items():
            mp.setenv(k, v)
        get_app_client("basic-auth", tracking_uri=mlflow_auth).create_user("alice", "alice-password-123")
    alice = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "alice-password-123"}
    assert requests.get(search, params={"max_results": 1}, auth=("alice", "alice-password-123"),
                        timeout=10).status_code == 200

    repo = make_project(tmp_path / "project", tiny_params({"train": {"steps": 8, "eval_every": 0},
                                                           "tracking": {"uri": mlflow_auth}, "register": {"exports": False}}))
    for stage in ("prepare", "augment", "evaluator"):  # no tracking in these stages
        run(["gans", stage], repo)
    trained = run(["gans", "train"], repo)  # without credentials: trains, warns, no run
    assert "refused a request without credentials (HTTP 401)" in trained.stderr
    assert "MLFLOW_TRACKING_USERNAME" in trained.stderr
    assert json.loads((repo / "metrics/train.json").read_text())["run_id"] is None
    run(["gans", "evaluate"], repo)
    refused = run(["gans", "register"], repo, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "refused a request without credentials (HTTP 401)" in refused.stderr
    wrong = run(["gans", "register"], repo, check=False, MLFLOW_TRACKING_USERNAME="alice",
                MLFLOW_TRACKING_PASSWORD="not-her-password")
    assert wrong.returncode == 2 and "refused the credentials of user 'alice'" in wrong.stderr

    run(["gans", "train", "-S", "train.steps=10"], repo, **alice)  # resumes, now tracked
    assert json.loads((repo / "metrics/train.json").read_text())["run_id"]
    run(["gans", "evaluate"], repo, **alice)
    registered = run(["gans", "register"], repo, **alice)
    assert json.loads((repo / "metrics/register.json").read_text())["version"] == 1, registered.stdout
    with pytest.MonkeyPatch.context() as mp:
        for k, v in alice.items():
            mp.setenv(k, v)
        client = mlflow.MlflowClient(mlflow_auth, mlflow_auth)
        champion = client.get_model_version_by_alias("gan-generator", "champion")
        assert client.get_run(champion.run_id).data.tags["mlflow.user"]


@pytest.fixture(scope="module")
def prefect_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("prefect-auth")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    proc = _start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], home,
                  home / "server.log", f"{api}/health",
                  {"PREFECT_HOME": str(home), "PREFECT_SERVER_API_AUTH_STRING": PREFECT_AUTH,
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    try:
        yield api, home
    finally:
        stop_process(proc)


def test_prefect_server_auth_refuses_anonymous_clients_and_gans_names_the_setting(
        prefect_auth: tuple[str, Path], tmp_path: Path) -> None:
    api, home = prefect_auth
    assert requests.post(f"{api}/flows/filter", json={"limit": 1}, timeout=10).status_code == 401
    user, password = PREFECT_AUTH.split(":")
    assert requests.post(f"{api}/flows/filter", json={"limit": 1}, auth=(user, password), timeout=10).status_code == 200
    repo = tmp_path / "project"
    repo.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", repo)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "params"]):
        run(cmd, repo)  # deploy --pool pins a commit
    env = {"PREFECT_API_URL": api, "PREFECT_HOME": str(home)}
    shared = ["-S", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]  # what workers can share
    anonymous = run(["gans", "deploy", "--pool", "gpu", *shared], repo, check=False, **env)
    assert anonymous.returncode == 2 and "Traceback" not in anonymous.stderr
    assert "refused a request without credentials (HTTP 401)" in anonymous.stderr
    assert "PREFECT_API_AUTH_STRING" in anonymous.stderr
    wrong = run(["gans", "flow"], repo, check=False, PREFECT_API_AUTH_STRING="admin:wrong", **env)
    assert wrong.returncode == 2 and "refused the credentials in PREFECT_API_AUTH_STRING" in wrong.stderr
    # With the auth string the client gets through to the API (which then answers about the missing pool).
    authed = run(["gans", "deploy", "--pool", "gpu", *shared], repo, check=False, PREFECT_API_AUTH_STRING=PREFECT_AUTH,
                 **env)
    assert authed.returncode == 2 and "--pool gpu: no such work pool" in authed.stderr, authed.stderr
