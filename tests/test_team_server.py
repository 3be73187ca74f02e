"""Team setup, for real: a throwaway PostgreSQL cluster, `mlflow server` on it with proxied
artifacts, and `dvc repro` of the tiny pipeline with ``tracking.uri`` pointing at that server.

Needs the PostgreSQL server binaries (``apt-get install postgresql``) and the ``psycopg2``
driver (``pip install -e '.[test]'``); skipped with that message where they are missing.
Run alone with ``pytest -m team``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import make_project, run, subprocess_env, tiny_params

pytestmark = [pytest.mark.e2e, pytest.mark.team]

BIN = Path(sys.executable).parent
MODEL = "gan-generator"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path | None:
    """The folder with initdb, pg_ctl and postgres: on PATH, else the newest Debian/Ubuntu install."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    candidates += [Path(p) for p in sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)]  # RHEL/Fedora
    for d in candidates:
        if all((d / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


@dataclass(frozen=True)
class Postgres:
    port: int
    psql: str

    @property
    def uri(self) -> str:
        # The driver is named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, not psycopg2.
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/mlflow"

    def query(self, sql: str, database: str = "mlflow") -> list[list[str]]:
        """Rows of ``sql`` through psql (not through MLflow), each a list of strings."""
        out = subprocess.run([self.psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
                              "-X", "-v", "ON_ERROR_STOP=1", "-tA", "-F", "\t", "-c", sql],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "PGCONNECT_TIMEOUT": "10"})
        assert out.returncode == 0, f"psql failed: {out.stderr}"
        return [line.split("\t") for line in out.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster on 127.0.0.1 in a temporary folder (trust auth, user ``postgres``,
    database ``mlflow``), stopped and deleted afterwards even when a test fails."""
    bindir = _pg_bindir()
    psql = shutil.which("psql") or (str(bindir / "psql") if bindir and (bindir / "psql").is_file() else None)
    if bindir is None or psql is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) not found: "
                    "install them with `apt-get install postgresql` (or put their bin folder on PATH)")
    pytest.importorskip("psycopg2", reason="MLflow needs a PostgreSQL driver: pip install -e '.[test]' "
                        "(psycopg2-binary)")
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the `postgres` account
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as "
                        "(`apt-get install postgresql` creates it)")
        if not shutil.which("runuser"):
            pytest.skip("running as root without `runuser` to start PostgreSQL as the `postgres` user")
        as_user = ["runuser", "-u", "postgres", "--"]
    # As root, in /tmp: the `postgres` account must reach the folder (root's own TMPDIR may be closed to it).
    base = Path(tempfile.mkdtemp(prefix="gans-pg-", dir="/tmp" if owner is not None else None))
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data, port = base / "data", _free_port()

    def pg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=timeout, cwd=base)

    try:
        out = pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-sync")
        assert out.returncode == 0, f"initdb failed:\n{out.stdout}\n{out.stderr}"
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off"
        out = pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-o", opts, "-w",
                 "-t", "60", "start")
        log = (base / "server.log").read_text() if (base / "server.log").is_file() else ""
        assert out.returncode == 0, f"pg_ctl start failed:\n{out.stdout}\n{out.stderr}\n{log[-3000:]}"
        server = Postgres(port=port, psql=psql)
        server.query("CREATE DATABASE mlflow", database="postgres")
        yield server
    finally:
        if (data / "postmaster.pid").exists():  # also after a start that timed out
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "60", "stop")
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class MlflowServer:
    url: str
    artifacts: Path
    proc: subprocess.Popen
    log: Path

    def wait_ready(self, timeout: float = 180) -> None:
        """Until /health answers (the first start migrates the empty database)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited ({self.proc.returncode}):\n{self.log.read_text()[-5000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not answer in {timeout} s:\n{self.log.read_text()[-5000:]}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server`` on the PostgreSQL store, serving artifacts from a local folder. It is
    started, not waited for: it takes 10-25 s to import, which the project set-up overlaps."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", postgres.uri,
           "--artifacts-destination", str(home / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    with (home / "server.log").open("w") as log:
        # Its own process group: `mlflow server` starts uvicorn and a job runner, and all must go at the end.
        proc = subprocess.Popen(cmd, cwd=home, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield MlflowServer(url=f"http://127.0.0.1:{port}", artifacts=home / "artifacts", proc=proc,
                           log=home / "server.log")
    finally:
        for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 30)):  # a throwaway: no long goodbyes
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(scope="module")
def team_repo(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project after `dvc repro` with ``tracking.uri`` set to the team server."""
    params = tiny_params({"tracking": {"uri": mlflow_server.url}, "register": {"exports": False}})
    repo = make_project(tmp_path_factory.mktemp("team-project"), params)
    mlflow_server.wait_ready()
    proc = run(["dvc", "repro"], repo)
    # Tracking failures are warnings in the stages (training goes on): here they must not happen.
    assert "warning: MLflow" not in proc.stderr and "could not log" not in proc.stderr, proc.stderr[-5000:]
    return repo


@pytest.fixture(scope="module")
def client(mlflow_server: MlflowServer, team_repo: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)


def _training_run(client):
    exp = client.get_experiment_by_name("gans")
    assert exp is not None, "experiment 'gans' is missing on the team server"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return exp, runs[0]


def test_summary_links_the_run_and_the_version_on_the_server(client, team_repo: Path,
                                                            mlflow_server: MlflowServer) -> None:
    exp, run_ = _training_run(client)
    registered = json.loads((team_repo / "metrics/register.json").read_text())
    out = run(["gans", "summary"], team_repo).stdout
    base = mlflow_server.url.rstrip("/")
    assert f"MLflow run: {base}/#/experiments/{exp.experiment_id}/runs/{run_.info.run_id}" in out, out
    assert f"model version: {base}/#/models/{MODEL}/versions/{registered['version']}" in out, out
    assert requests.get(base, timeout=30).status_code == 200  # the UI those links open


def test_run_metrics_on_the_team_server(client, team_repo: Path) -> None:
    exp, run_ = _training_run(client)
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location  # proxied by the server
    train = json.loads((team_repo / "metrics/train.json").read_text())
    ev = json.loads((team_repo / "metrics/eval.json").read_text())
    assert run_.info.run_id == train["run_id"] and run_.info.status == "FINISHED"
    assert run_.data.params["model.variant"] == "dcgan" and run_.data.tags["variant"] == "dcgan"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=team_repo, capture_output=True, text=True).stdout.strip()
    assert run_.data.tags["mlflow.source.git.commit"] == head and run_.data.tags["mlflow.source.name"] == "gans train"
    inputs = {i.dataset.name: i.dataset.digest for i in run_.inputs.dataset_inputs}
    source = run_.data.tags["data_source"]
    assert inputs == {f"{source}-train": train["data_hash"], f"{source}-holdout": train["data_hash"]}, inputs
    assert [m.step for m in client.get_metric_history(run_.info.run_id, "loss_d")] == list(range(5, 41, 5))
    assert [m.step for m in client.get_metric_history(run_.info.run_id, "fid")] == [20, 40]
    for key in ("fid", "is", "kid", "precision", "recall"):
        assert run_.data.metrics[f"eval_{key}"] == pytest.approx(ev[key]), key
    assert run_.data.metrics["train_img_per_s"] > 0


def test_artifacts_go_through_the_server(client, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    artifacts = mlflow_server.artifacts
    _, run_ = _training_run(client)
    rid = run_.info.run_id
    listed = {d: {Path(f.path).name for f in client.list_artifacts(rid, d)}
              for d in ("metrics", "plots", "samples", "config")}
    assert listed["metrics"] >= {"train.json", "eval.json"} and listed["plots"] >= {"train.csv"}, listed
    assert listed["samples"] >= {"grid.png"} and "params.yaml" in listed["config"], listed
    assert any(f.path.startswith("images") for f in client.list_artifacts(rid)), "no sample-grid image series"
    local = Path(client.download_artifacts(rid, "samples/grid.png", str(tmp_path)))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The bytes live under --artifacts-destination, not in the project.
    assert list(artifacts.rglob("grid.png")) and list(artifacts.rglob("generator.pt"))


def test_champion_is_registered_and_loads(client, mlflow_server: MlflowServer, team_repo: Path,
                                          tmp_path: Path) -> None:
    import mlflow
    import pandas as pd

    _, run_ = _training_run(client)
    mv = client.get_model_version_by_alias(MODEL, "champion")
    assert mv.version == "1" and mv.run_id == run_.info.run_id
    assert client.get_model_version_by_alias(MODEL, "challenger").version == "1"
    assert mv.tags["variant"] == "dcgan" and mv.tags["dvc_stage_hash"] != "none"
    # models:/NAME@alias resolves through MLflow's global registry URI, whatever registry_uri says
    # (mlflow 3.17): go through the version's download URI, which the tracking URI resolves.
    source = client.get_model_version_download_uri(MODEL, mv.version)
    assert source.startswith("mlflow-artifacts:"), source
    local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp_path),
                                                tracking_uri=mlflow_server.url)
    model = mlflow.pyfunc.load_model(local)
    out = model.predict(pd.DataFrame({"seed": [0, 0]}))
    assert list(out.columns) == ["png"] and out["png"][0] == out["png"][1]
    reg = json.loads((team_repo / "metrics/register.json").read_text())
    assert reg["champion"] is True and reg["version"] == 1


def test_records_live_in_postgresql(postgres: Postgres, client) -> None:
    _, run_ = _training_run(client)
    rid = run_.info.run_id
    rows = postgres.query("SELECT r.run_uuid, r.status FROM runs r JOIN experiments e "
                          "ON r.experiment_id = e.experiment_id WHERE e.name = 'gans'")
    assert rows == [[rid, "FINISHED"]]
    n_loss = postgres.query(f"SELECT count(*) FROM metrics WHERE run_uuid = '{rid}' AND key = 'loss_d'")
    assert n_loss == [["8"]]
    aliases = postgres.query(f"SELECT alias, version FROM registered_model_aliases WHERE name = '{MODEL}' "
                             "ORDER BY alias")
    assert aliases == [["challenger", "1"], ["champion", "1"]]


UNITS = Path(__file__).resolve().parents[1] / "docs/team"
RUN_DEPLOYMENT = r"""
import json, sys
from prefect.deployments import run_deployment

run = run_deployment(sys.argv[1], timeout=900)
print(json.dumps({"state": run.state.type.value, "id": str(run.id)}))
"""


def _team_env(**overrides: str) -> dict[str, str]:
    """docs/team/team.env (what the systemd units read), with ``overrides``."""
    env = {}
    for line in (UNITS / "team.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return {**env, **overrides}


def _exec_start(unit: str, env: dict[str, str], instance: str = "") -> list[str]:
    """The unit's ExecStart as systemd expands it: ${VAR} from the environment file, %i the instance."""
    import re
    import shlex

    line = next(ln for ln in (UNITS / unit).read_text().splitlines() if ln.startswith("ExecStart="))
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line[len("ExecStart="):].replace("%i", instance))
    return shlex.split(line)


def _serve(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=subprocess_env(**env), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_health(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url}: the server exited ({proc.returncode}):\n{log.read_text()[-4000:]}"
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s:\n{log.read_text()[-4000:]}")


def test_the_documented_units_run_a_worker_driven_flow_against_both_servers(postgres: Postgres,
                                                                           tmp_path: Path) -> None:
    """docs/team: the MLflow (PostgreSQL, basic-auth) and Prefect (auth string) servers and a worker, started
    with their units' own ExecStart lines and environment file; a pool deployment run by the worker trains and
    registers on the team's MLflow server, whose records live in PostgreSQL."""
    if not (BIN.parent.parent / ".venv/bin/mlflow").is_file():
        pytest.skip("the units run ${GANS_HOME}/.venv/bin/...: needs the project's own .venv")
    postgres.query("CREATE DATABASE team", database="postgres")
    mlflow_port, prefect_port = _free_port(), _free_port()
    env = _team_env(GANS_HOME=str(BIN.parent.parent), HOST="127.0.0.1", MLFLOW_PORT=str(mlflow_port),
                    MLFLOW_BACKEND=postgres.uri.rsplit("/", 1)[0] + "/team", PGPASSWORD="",
                    MLFLOW_ARTIFACTS=str(tmp_path / "artifacts"), PREFECT_PORT=str(prefect_port),
                    PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api")
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    procs = [_serve(_exec_start("gans-mlflow.service", env), tmp_path / "srv", env, tmp_path / "mlflow.log"),
             _serve(_exec_start("gans-prefect.service", env), tmp_path / "srv", env, tmp_path / "prefect.log")]
    try:
        repo = make_project(tmp_path / "project", tiny_params({"train": {"steps": 10, "eval_every": 0},
                                                               "tracking": {"uri": mlflow_url}, "register": {"exports": False}}))
        _wait_health(f"{mlflow_url}/health", procs[0], tmp_path / "mlflow.log")
        _wait_health(f"{env['PREFECT_API_URL']}/health", procs[1], tmp_path / "prefect.log")
        assert requests.post(f"{env['PREFECT_API_URL']}/flows/filter", json={}, timeout=10).status_code == 401
        assert requests.get(f"{mlflow_url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                            timeout=10).status_code == 401
        run(["prefect", "work-pool", "create", "team", "--type", "process"], repo, **env)
        run(["gans", "deploy", "--pool", "team", "--name", "nightly"], repo, **env)
        procs.append(_serve(_exec_start("gans-worker@.service", env, "team"), tmp_path / "runs", env,
                            tmp_path / "worker.log"))
        done = subprocess.run([sys.executable, "-c", RUN_DEPLOYMENT, "gan-pipeline/nightly"], cwd=tmp_path,
                              env=subprocess_env(**env), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{done.stderr[-3000:]}\n{(tmp_path / 'worker.log').read_text()[-4000:]}"
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["state"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    assert postgres.query("SELECT name FROM registered_models", database="team") == [["gan-generator"]]
    tags = dict(postgres.query("SELECT key, value FROM tags WHERE key LIKE 'prefect.%'", database="team"))
    assert tags["prefect.flow_run_id"] == result["id"]
