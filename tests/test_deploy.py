"""Scheduled retraining on a real Prefect server: deploy, read the schedule back, run once."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from scratch import make_project, run, stop_process, subprocess_env, tail, tiny_params

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(done, proc: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    """Poll ``done()`` until it is true; fail naming ``what`` with the tail of ``log`` when ``proc`` exits
    first or ``timeout`` s pass."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with status {proc.returncode}:\n{tail(log)}")
        try:
            if done():
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what}: not after {timeout:.0f} s:\n{tail(log)}")


@dataclass(frozen=True)
class PrefectAPI:
    url: str
    home: Path
    log: Path  # the server's output


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    port = _free_port()
    home = tmp_path_factory.mktemp("prefect-home")
    log = home / "server.log"  # a file, not a pipe that nobody reads (a full pipe blocks the server)
    env = subprocess_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                                 "127.0.0.1", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"
    try:
        _wait_until(lambda: requests.get(f"{api}/health", timeout=2).status_code == 200, proc, log,
                    f"the prefect server answering {api}/health", timeout=180)
        yield PrefectAPI(api, home, log)
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


def test_deploy_schedules_the_flow_and_a_triggered_run_registers(prefect_api: PrefectAPI, tiny_repo: Path,
                                                                 tmp_path: Path) -> None:
    api = prefect_api.url
    repo = tmp_path / "project"
    shutil.copytree(tiny_repo, repo, ignore=shutil.ignore_patterns(".git", ".dvc", "mlflow.db*", "mlartifacts"))
    shutil.rmtree(repo / "models/checkpoints")
    env = subprocess_env(PREFECT_API_URL=api, PREFECT_HOME=str(prefect_api.home))
    log = tmp_path / "deploy.log"  # `gans deploy` serves (and runs the flow) until terminated: a file, not a pipe
    with log.open("w") as out:
        served = subprocess.Popen(["gans", "deploy", "--cron", "0 3 * * *", "--name", "nightly", "-S",
                                   "train.steps=12", "-S", "train.eval_every=0"], cwd=repo, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        def deployed() -> bool:
            found = requests.post(f"{api}/deployments/filter", json={}, timeout=5).json()
            return any(d["name"] == "nightly" for d in found)

        _wait_until(deployed, served, log, "the deployment 'nightly' registered with the prefect server", 120)
        try:
            out = subprocess.run([sys.executable, "-c", CHECK], cwd=repo, env=env, capture_output=True, text=True,
                                 timeout=900)
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"the triggered run did not end in 900 s:\n{tail(log)}\n{tail(prefect_api.log)}") \
                from err
        assert out.returncode == 0, f"{out.stderr[-3000:]}\n{tail(log)}\n{tail(prefect_api.log)}"
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        served.terminate()
        served.wait(timeout=60)
    assert result["crons"] == ["0 3 * * *"]
    assert result["parameters"]["overrides"] == ["train.steps=12", "train.eval_every=0"]
    assert result["state"] == "COMPLETED", f"the triggered run ended {result['state']}:\n{tail(log)}"
    train = json.loads((repo / "metrics/train.json").read_text())
    registered = json.loads((repo / "metrics/register.json").read_text())
    assert train["steps"] == 12 and registered["version"] == 1 and registered["champion"]


RUN_POOLED = r"""
import json, sys
from prefect.deployments import run_deployment

run = run_deployment(sys.argv[1], timeout=900)
print(json.dumps({"state": run.state.type.value, "id": str(run.id)}))
"""


def test_a_worker_runs_the_pool_deployment_at_its_pinned_commit(prefect_api: PrefectAPI, tmp_path: Path) -> None:
    """`gans deploy --pool` on a process pool; a real `prefect worker`, started in another folder, clones the
    project at the deployed commit (not a later one), runs the flow through DVC, and registers a version in the
    team's MLflow store whose run names the flow run."""
    import mlflow

    store = f"sqlite:///{tmp_path / 'team/mlflow.db'}"
    (tmp_path / "team").mkdir()
    repo = make_project(tmp_path / "project", tiny_params({"train": {"steps": 12, "eval_every": 0},
                                                           "tracking": {"uri": store}, "register": {"exports": False}}))
    extra = {"PREFECT_API_URL": prefect_api.url, "PREFECT_HOME": str(prefect_api.home)}
    env = subprocess_env(**extra)
    refused = run(["gans", "deploy", "--pool", "missing", "--name", "pooled"], repo, check=False, **extra)
    assert refused.returncode == 2 and "prefect work-pool create missing --type process" in refused.stderr
    run(["prefect", "work-pool", "create", "cpu", "--type", "process"], repo, **extra)
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text() + "\n")
    dirty = run(["gans", "deploy", "--pool", "cpu", "--name", "pooled"], repo, check=False, **extra)
    assert dirty.returncode == 2 and "uncommitted changes to params.yaml" in dirty.stderr
    run(["git", "checkout", "params.yaml"], repo)
    pinned = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    workdir = tmp_path / "runs"  # where the worker's runs keep their clone and outputs (it must exist there)
    workdir.mkdir()
    out = run(["gans", "deploy", "--pool", "cpu", "--name", "pooled", "--workdir", str(workdir)], repo,
              **extra).stdout
    assert pinned[:12] in out and "prefect worker start --pool cpu" in out
    (repo / "NEWER").write_text("a commit after the deployment\n")  # the worker must not run this one
    run(["git", "add", "NEWER"], repo)
    run(["git", "commit", "-qm", "later"], repo)

    (tmp_path / "worker").mkdir()
    log = tmp_path / "worker.log"
    with log.open("w") as f:  # started in a folder of its own
        worker = subprocess.Popen(["prefect", "worker", "start", "--pool", "cpu", "--limit", "1"],
                                  cwd=tmp_path / "worker",
                                  env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        done = subprocess.run([sys.executable, "-c", RUN_POOLED, "gan-pipeline/pooled"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=960)
    finally:
        stop_process(worker)
    assert done.returncode == 0, f"{done.stderr[-3000:]}\n{tail(log)}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["state"] == "COMPLETED", f"the worker's run ended {result['state']}:\n{tail(log)}"
    clones = [p.parent for p in workdir.rglob("dvc.yaml")]
    assert len(clones) == 1, clones
    assert run(["git", "rev-parse", "HEAD"], clones[0]).stdout.strip() == pinned
    assert not (clones[0] / "NEWER").exists()
    assert json.loads((clones[0] / "metrics/train.json").read_text())["steps"] == 12
    client = mlflow.MlflowClient(store, store)
    versions = client.search_model_versions("name='gan-generator'")
    assert len(versions) == 1
    assert client.get_run(versions[0].run_id).data.tags["prefect.flow_run_id"] == result["id"]


def _flow_run(api: str, run_id: str) -> dict:
    return requests.get(f"{api}/flow_runs/{run_id}", timeout=10).json()


def _running_flow_run(worker: subprocess.Popen) -> str | None:
    """The id of the flow run a worker's child process runs (Prefect passes it in the environment), if any."""
    for child in psutil.Process(worker.pid).children(recursive=True):
        try:
            run_id = child.environ().get("PREFECT__FLOW_RUN_ID")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if run_id:
            return run_id
    return None


def _kill_machine(worker: subprocess.Popen) -> None:
    """What a lost machine does to a worker: it and every process under it die at once (SIGKILL)."""
    procs = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    worker.wait()


def test_a_sweep_fans_out_over_a_pool_and_survives_a_killed_worker(prefect_api: PrefectAPI, tmp_path: Path) -> None:
    """`gans sweep --pool`: two configurations, two real workers, one of them killed with its flow run in
    the middle of a configuration. The lost run is reported crashed (its heartbeats stopped), its MLflow run is
    ended, the other configuration comes back as a DVC experiment and a nested MLflow run, and the same sweep
    again runs only the lost configuration."""
    import mlflow

    store = f"sqlite:///{tmp_path / 'team/mlflow.db'}"
    (tmp_path / "team").mkdir()
    # Sparse checkpoints and logs, and a long configuration only as long as the kill needs: the rerun trains
    # it in full (1,000 steps with the tiny project's every-10-steps checkpoints took minutes in CI).
    sparse = {"eval_every": 0, "checkpoint_every": 500, "log_every": 100, "sample_every": 1000}
    repo = make_project(tmp_path / "project", tiny_params({"train": sparse, "tracking": {"uri": store},
                                                           "register": {"exports": False}}))
    extra = {"PREFECT_API_URL": prefect_api.url, "PREFECT_HOME": str(prefect_api.home)}
    run(["prefect", "work-pool", "create", "sweeps", "--type", "process"], repo, **extra)
    workers, logs = [], []
    for i in range(2):
        (tmp_path / f"worker{i}").mkdir()
        logs.append(tmp_path / f"worker{i}.log")
        with logs[-1].open("w") as f:
            workers.append(subprocess.Popen(["prefect", "worker", "start", "--pool", "sweeps", "--limit", "1"],
                                            cwd=tmp_path / f"worker{i}", env=subprocess_env(**extra), stdout=f,
                                            stderr=subprocess.STDOUT, start_new_session=True))
    # The 400-step configuration trains long enough (~20 s in a worker; the kill lands seconds after it starts) to be
    # killed in the middle of training.
    sweep = ["gans", "sweep", "--pool", "sweeps", "--heartbeat", "30", "-S", "train.steps=6,400"]
    sweep_log = tmp_path / "sweep.log"
    client = mlflow.MlflowClient(store, store)
    lost: dict = {}

    def training_the_long_one() -> bool:
        experiment = client.get_experiment_by_name("gans")
        for i, worker in enumerate(workers):
            run_id = _running_flow_run(worker)
            if experiment is None or not run_id or \
                    "train.steps=400" not in _flow_run(prefect_api.url, run_id)["parameters"]["config"]:
                continue
            training = client.search_runs([experiment.experiment_id], f"tags.`prefect.flow_run_id` = '{run_id}' "
                                                                      "and attributes.status = 'RUNNING'")
            if training:
                lost.update(id=run_id, worker=i, mlflow=training[0].info.run_id)
                return True
        return False

    with sweep_log.open("w") as out:
        first = subprocess.Popen(sweep, cwd=repo, env=subprocess_env(**extra), stdout=out, stderr=out, text=True)
    try:
        _wait_until(training_the_long_one, first, sweep_log, "the 400-step configuration training", timeout=600)
        _kill_machine(workers[lost["worker"]])
        try:
            first.wait(timeout=300)  # the other configuration, and 70 s of silence, take less
        except subprocess.TimeoutExpired:
            raise AssertionError("the sweep did not end within 300 s of the worker's death (was its run never "
                                 f"marked crashed?):\n{tail(sweep_log)}") from None
        swept = sweep_log.read_text()
        again = run(sweep, repo, check=False, **extra)
    finally:
        for proc in (first, *workers):
            if proc.poll() is None:
                stop_process(proc)
    state = _flow_run(prefect_api.url, lost["id"])
    assert state["state_type"] == "CRASHED", state
    assert "no heartbeat for 70 s" in state["state"]["message"], state["state"]
    lost_name = state["parameters"]["name"]
    assert first.returncode == 1, swept[-4000:]
    assert f"{lost_name}: crashed" in swept and "flow run crashed: no heartbeat for 70 s" in swept, swept[-4000:]
    assert again.returncode == 0, f"{again.stdout[-3000:]}\n{again.stderr[-3000:]}\n{tail(logs[1 - lost['worker']])}"
    assert again.stderr.count("finished by an earlier sweep of this commit and grid, reused") == 1, again.stderr
    assert again.stderr.count("submitted ") == 1 and f"submitted {lost_name} " in again.stderr, again.stderr
    assert again.stdout.count("reused: finished by an earlier sweep") == 1, again.stdout
    exps = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).stdout.split()
    assert len(exps) == 2, exps
    experiment = client.get_experiment_by_name("gans").experiment_id
    parent = swept.split("MLflow: parent run ")[1].split()[0]
    nested = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    finished = [r for r in nested if r.info.status == "FINISHED"]
    assert len(finished) == 1 and all(r.data.tags.get("prefect.flow_run_id") for r in finished)
    # The lost flow run's MLflow run, killed in the middle of training, does not stay RUNNING for ever.
    assert client.get_run(lost["mlflow"]).info.status == "KILLED"
    assert f"MLflow run {lost['mlflow']} was left running by the lost worker: marked KILLED" in swept, swept[-4000:]
    rerun = again.stdout.split("MLflow: parent run ")[1].split()[0]
    redone = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{rerun}'")
    assert len(redone) == 1 and redone[0].info.status == "FINISHED"
    steps = {r.data.params.get("train.steps") for r in finished + redone}
    assert steps == {"6", "400"}, steps
