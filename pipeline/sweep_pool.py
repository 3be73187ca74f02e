"""``gans sweep --pool NAME``: the sweep's configurations as flow runs on a Prefect work pool.

The sweep deploys the ``gan-experiment`` flow on the pool, pinned to the sweep's git commit, and starts one
flow run per configuration; the pool's workers pick them up (one each, or up to their ``--limit``; the
pool's concurrency limit bounds the total). Each run clones the commit, runs ``dvc exp run -n NAME -S ...``
with its MLflow runs nested under the sweep's parent run, and pushes the experiment back to this
repository (``dvc exp push origin``), where the sweep reads its metrics as it does for local experiments.
A flow run that fails or crashes (a killed worker) is listed with its state and the tail of its log.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

DEPLOYMENT_FLOW = "gan-experiment"


def deploy_experiments(root: Path, pool: str, heartbeat: int) -> tuple[str, str]:
    """Deploy ``gan-experiment`` on ``pool`` at this repository's commit, its runs sending a heartbeat every
    ``heartbeat`` s (the server's crash detection made to match); (deployment name, commit)."""
    from prefect.runner.storage import GitRepository

    from pipeline.flows import ensure_crash_detection, gan_experiment, heartbeat_env, pinned_source, require_pool

    source, commit = pinned_source(root)
    env = heartbeat_env(heartbeat)
    require_pool(pool)
    ensure_crash_detection(heartbeat)
    name = f"sweep-{commit[:12]}"
    remote = gan_experiment.from_source(source=GitRepository(url=source, commit_sha=commit),
                                        entrypoint="pipeline/flows.py:gan_experiment")
    remote.deploy(name=name, work_pool_name=pool, build=False, push=False, version=commit[:12],
                  description=f"gans sweep configurations at {commit[:12]} of {source}", print_next_steps=False,
                  job_variables={"env": env})
    return f"{DEPLOYMENT_FLOW}/{name}", commit


def run_on_pool(root: Path, pool: str, configs: dict[str, list[str]], parent: str, log: TextIO, heartbeat: int,
                poll: float = 2.0) -> dict[str, list[str]]:
    """One flow run per configuration (``configs``: experiment name -> overrides), waited for; the error lines
    of every one that did not complete, by experiment name."""
    from prefect.deployments import run_deployment

    deployment, commit = deploy_experiments(root, pool, heartbeat)
    runs: dict[str, UUID] = {}
    for name, config in configs.items():
        flow_run = run_deployment(deployment, parameters={"name": name, "config": config, "parent_run_id": parent},
                                  timeout=0)
        runs[name] = flow_run.id
        print(f"submitted {name} to pool {pool} (flow run {flow_run.name})", file=log, flush=True)
    states = asyncio.run(_wait(runs, pool, log, poll))
    errors = {}
    for name, state in states.items():
        if state.type.value != "COMPLETED":
            errors[name] = [f"flow run {state.type.value.lower()}: {state.message or 'no message'}",
                            *asyncio.run(_log_tail(runs[name]))]
        if state.type.value == "CRASHED":
            errors[name] += [f"MLflow run {run_id} was left running by the lost worker: marked KILLED"
                             for run_id in close_lost_runs(parent, runs[name])]
    return errors


def close_lost_runs(parent: str, flow_run_id: UUID) -> list[str]:
    """End as KILLED the MLflow runs (in the experiment of ``parent``) that the crashed flow run ``flow_run_id``
    left RUNNING (its process died with its worker, so nothing else will); their ids. Found by their flow run
    tag alone, not by parent: that tag is unique to the lost flow run."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_run(parent).info.experiment_id
    lost = client.search_runs([experiment], f"tags.`prefect.flow_run_id` = '{flow_run_id}' and "
                                            "attributes.status = 'RUNNING'")
    for run in lost:
        client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in lost]


async def _wait(runs: dict[str, UUID], pool: str, log: TextIO, poll: float) -> dict[str, Any]:
    from prefect import get_client

    last: dict[str, str] = {}
    waiting_since, hinted = time.monotonic(), False
    async with get_client() as client:
        while True:
            states = {name: (await client.read_flow_run(run_id)).state for name, run_id in runs.items()}
            for name, state in states.items():
                if last.get(name) != state.type.value:
                    last[name] = state.type.value
                    print(f"{name}: {state.type.value.lower()}", file=log, flush=True)
            if all(state.is_final() for state in states.values()):
                return states
            if any(s.type.value != "SCHEDULED" for s in states.values()):
                waiting_since = time.monotonic()
            elif not hinted and time.monotonic() - waiting_since > 60:
                hinted = True
                print(f"no worker has picked up a run for 60 s: start one with `prefect worker start --pool {pool}`",
                      file=log, flush=True)
            await asyncio.sleep(poll)


async def _log_tail(run_id: UUID, lines: int = 4) -> list[str]:
    """The last error-looking lines of a flow run's log (else its last lines)."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    async with get_client() as client:
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                                      sort=LogSort.TIMESTAMP_DESC, limit=200)
    text = [ln.strip() for entry in reversed(logs) for ln in entry.message.splitlines() if ln.strip()]
    errors = [ln for ln in text if "error" in ln.lower() or "failed" in ln.lower()]
    return list(dict.fromkeys((errors or text)[-lines:]))
