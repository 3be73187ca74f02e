"""The pipeline as a Prefect flow: the same stages as tasks, in DVC's order.

In a DVC project (a ``.dvc`` folder and ``dvc.yaml`` here) each task runs its
stage through DVC (``dvc repro --single-item STAGE``): DVC decides whether the
stage reruns, skips it when nothing it depends on changed, and records the
run in ``dvc.lock``; the task returns what the stage wrote (its metrics file).
With ``-S`` overrides (or a ``--params`` file other than the project's
params.yaml) DVC would not see the change, so the tasks run the stage
functions in this process and the flow logs that ``dvc.lock`` does not record
the run (``dvc exp run -S ...`` is the way to get lineage with overrides).
Outside a DVC project the tasks always run in process.

Tasks pass file paths implicitly (each stage reads what the previous wrote),
never models. Registration retries, since a tracking server may be briefly
unreachable. The flow publishes a markdown artifact with the metrics table.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from gans.config import ConfigError
from pipeline import dvcrun, paths
from pipeline.params import load_params, record_prepare_params
from pipeline.files import read_json
from pipeline.stages import STAGES, StageError
from pipeline import tracking
from pipeline.tracking import ServiceUnavailable, probe, ui_links

# What each stage writes that the flow hands on as the stage's result.
RESULT_FILES = {
    "prepare": paths.PREPARED / "meta.json", "augment": paths.AUGMENTED / "meta.json",
    "evaluator": paths.EVALUATOR_METRICS, "train": paths.TRAIN_METRICS, "evaluate": paths.EVAL_METRICS,
    "explore": paths.EXPLORE_METRICS, "register": paths.REGISTER_METRICS,
}
SKIPPED = ("didn't change, skipping", "is cached - skipping run")


def dvc_mode(params_file: str, overrides: list[str], root: Path | None = None) -> tuple[bool, str]:
    """(run the stages through DVC?, why). Only a DVC project's own params.yaml, without overrides,
    is what DVC sees; anything else runs in process."""
    root = (root or Path.cwd()).resolve()
    if not dvcrun.is_dvc_project(root):
        return False, "not a DVC project (no .dvc and dvc.yaml here): stages run in process"
    if Path(params_file).resolve() != root / "params.yaml":
        return False, (f"--params {params_file} is not the project's params.yaml, which DVC reads: stages run in "
                       "process and dvc.lock does not record this run")
    if overrides:
        return False, ("-S overrides are not in params.yaml, so DVC would not see them: stages run in process "
                       "and dvc.lock does not record this run (for lineage with overrides use "
                       "`dvc exp run -S ...` or `gans sweep`)")
    return True, ("stages run through DVC (dvc repro --single-item): unchanged stages are skipped and dvc.lock "
                  "records the run")


def repro_stage(name: str) -> dict[str, Any]:
    """``dvc repro --single-item NAME``, its output printed to the log; the stage's result file, read back."""
    skipped = False
    try:
        for line in dvcrun.stream("repro", "--single-item", name):
            print(line)
            skipped = skipped or any(marker in line for marker in SKIPPED)
    except dvcrun.DvcFailed as err:
        raise StageError(str(err)) from None
    print(f"stage {name}: {'unchanged, skipped by DVC' if skipped else 'ran'}")
    result_file = RESULT_FILES[name]
    if not result_file.is_file():
        raise StageError(f"dvc repro --single-item {name} succeeded but {result_file} is missing")
    return read_json(result_file, name)


def _run_stage(name: str, params_file: str, overrides: list[str], via_dvc: bool) -> dict[str, Any]:
    if via_dvc:
        return repro_stage(name)
    params = load_params(params_file, overrides)
    result = STAGES[name](params)
    if name == "prepare":  # what `gans prepare` records too: the data.* params data/prepared/ was made with
        record_prepare_params(params)
    return result


@task(name="prepare")
def prepare_task(params_file: str, overrides: list[str], via_dvc: bool = False) -> dict[str, Any]:
    return _run_stage("prepare", params_file, overrides, via_dvc)


@task(name="augment")
def augment_task(params_file: str, overrides: list[str], via_dvc: bool = False) -> dict[str, Any]:
    return _run_stage("augment", params_file, overrides, via_dvc)


@task(name="evaluator")
def evaluator_task(params_file: str, overrides: list[str], via_dvc: bool = False) -> dict[str, Any]:
    return _run_stage("evaluator", params_file, overrides, via_dvc)


@task(name="train")
def train_task(params_file: str, overrides: list[str], via_dvc: bool = False) -> dict[str, Any]:
    return _run_stage("train", params_file, overrides, via_dvc)


@task(name="evaluate")
def evaluate_task(params_file: str, overrides: list[str], via_dvc: bool = False) -> dict[str, Any]:
    return _run_stage("evaluate", params_file, overrides, via_dvc)


@task(name="explore")
def explore_task(params_file: str, overrides: list[str], via_dvc: bool = False) -> dict[str, Any]:
    return _run_stage("explore", params_file, overrides, via_dvc)


@task(name="push", retries=2, retry_delay_seconds=10)
def push_task() -> str:
    """``dvc push`` to the project's default remote, so that another machine can ``dvc pull`` this run's
    outputs (a worker's run is not confined to the worker). Returns the remote's name and what moved."""
    remote = dvcrun.default_remote(Path.cwd())
    lines = []
    try:
        for line in dvcrun.stream("push"):
            print(line)
            lines.append(line)
    except dvcrun.DvcFailed as err:
        raise StageError(f"the run's outputs are intact here, but pushing them failed: {err}") from None
    moved = next((ln.strip() for ln in reversed(lines) if "pushed" in ln or "up to date" in ln), "done")
    return f"{remote} ({moved})"


@task(name="register", retries=2, retry_delay_seconds=10)
def register_task(params_file: str, overrides: list[str], via_dvc: bool = False) -> dict[str, Any]:
    return _run_stage("register", params_file, overrides, via_dvc)


def metrics_markdown(train: dict[str, Any], evaluation: dict[str, Any], registered: dict[str, Any],
                     links: list[tuple[str, str]] = (), explored: dict[str, Any] | None = None) -> str:
    """The run summary: what trained, its family's metrics, what it was evaluated on, the registry's verdict."""
    from gans.families import family_named

    family = family_named(evaluation.get("family", "noise-to-image"))
    rows = [("variant", f"{train['variant']} ({family.name})"), ("steps", train["steps"]),
            ("img/s", f"{train['img_per_s']:.0f}"), ("ADA p", f"{train['ada_p']:.3f}")]
    rows += [(m.label, f"{evaluation[m.key]:{m.fmt}}") for m in family.headline
             if isinstance(evaluation.get(m.key), (int, float))]
    rows += [
        ("features", (f"{evaluation['extractor']} ({evaluation['num_samples']} generated, "
                      f"{evaluation['num_real']} real)")),
        ("model version", f"{registered['model_name']} v{registered['version']}"),
        ("champion", "yes" if registered["champion"] else f"no: {registered['reason']}"),
    ]
    rows += explore_rows(explored or {})
    rows += [(what, f"[{url}]({url})") for what, url in links]  # on a tracking server
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (f"# GAN pipeline run\n\n| metric | value |\n| --- | --- |\n{table}\n\n"
            f"Sample grid: `{paths.GRID.resolve()}`\n")


def explore_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The explore stage's lines of the run summary: directions that beat random ones, the inversion."""
    if not report:
        return []
    if "skipped" in report:
        return [("latent tools", f"skipped: {report['skipped']}")]
    n = len(report["methods"]["random"])
    rows = [("directions beating random", ", ".join(f"{m} {k}/{n}" for m, k in report["beats_random"].items()))]
    inv = report.get("inversion") or {}
    if "optimised" in inv:
        r = inv["optimised"]
        kept = f", labels kept {r['label_preservation']:.3f}" if "label_preservation" in r else ""
        rows.append(("holdout inversion", f"PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}{kept} ({inv['images']} images)"))
    return rows


@contextmanager
def flow_run_environment() -> Iterator[None]:
    """This flow run's id and UI address in the environment while the stages run (in this process or as DVC's
    subprocesses), so that the MLflow run the train stage makes carries them as tags; restored afterwards."""
    from prefect.runtime import flow_run

    values = {tracking.FLOW_RUN_ENV: flow_run.id, tracking.FLOW_RUN_URL_ENV: flow_run.ui_url}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items() if v})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@flow(name="gan-pipeline", log_prints=True)
def gan_pipeline(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """prepare -> augment -> evaluator -> train -> evaluate -> explore -> register (through DVC in a DVC
    project)."""
    o = list(overrides or [])
    via_dvc, why = dvc_mode(params_file, o)
    if via_dvc or not (Path.cwd() / ".dvc").is_dir():
        get_run_logger().info(why)
    else:
        get_run_logger().warning(why)
    repaired = dvcrun.repair_lock(Path.cwd()) if via_dvc else None
    if repaired:
        get_run_logger().warning(repaired)
    with flow_run_environment():
        prepare_task(params_file, o, via_dvc)
        augment_task(params_file, o, via_dvc)
        evaluator_task(params_file, o, via_dvc)
        trained = train_task(params_file, o, via_dvc)
        evaluation = evaluate_task(params_file, o, via_dvc)
        explored = explore_task(params_file, o, via_dvc)
        registered = register_task(params_file, o, via_dvc)
    pushed = push_task() if via_dvc and dvcrun.default_remote(Path.cwd()) else None
    lineage = "dvc.lock (stages run through DVC)" if via_dvc else why
    links = ui_links(tracking.resolve_uri(load_params(params_file, o).tracking.uri), trained.get("run_id"),
                     registered["model_name"], registered["version"])
    markdown = metrics_markdown(trained, evaluation, registered, links, explored) + f"\nLineage: {lineage}\n"
    if pushed:
        markdown += f"\nOutputs pushed to the DVC remote: {pushed}\n"
    create_markdown_artifact(key="gan-pipeline-summary", markdown=markdown,
                             description="metrics of the latest pipeline run")
    return {"train": trained, "evaluate": evaluation, "explore": explored, "register": registered}


@flow(name="gan-experiment", log_prints=True)
def gan_experiment(name: str, config: list[str], parent_run_id: str) -> dict[str, Any]:
    """One configuration of ``gans sweep --pool``, run by a worker in its clone of the sweep's commit:
    ``dvc exp run -n NAME -S ...`` (its MLflow runs nested under the sweep's parent run), then ``dvc exp push
    origin NAME``, which brings the experiment back to the repository the sweep runs in (and its outputs to
    the default DVC remote, when one is set)."""
    from pipeline.sweep import dvc_override

    root = Path.cwd()
    args = ["exp", "run", "-n", name]
    for text in config:
        args += ["-S", dvc_override(text)]
    # --force: an unfinished attempt of an earlier sweep (a lost worker) may have left a ref of this name
    push = ["exp", "push", "--force", *([] if dvcrun.default_remote(root) else ["--no-cache"]), "origin", name]
    with flow_run_environment():
        for cmd, env in ((args, {tracking.PARENT_RUN_ENV: parent_run_id}), (push, {})):
            try:
                for line in dvcrun.stream(*cmd, cwd=root, **env):
                    print(line)
            except dvcrun.DvcFailed as err:
                raise StageError(str(err)) from None
    return {"name": name, "config": config}


class PrefectUnavailable(ServiceUnavailable):
    """The Prefect API that PREFECT_API_URL names cannot be reached."""


def api_url() -> str | None:
    """The Prefect API this process talks to: PREFECT_API_URL (environment or profile), or None when
    Prefect starts a temporary local server."""
    from prefect.settings import get_current_settings

    return os.environ.get("PREFECT_API_URL") or get_current_settings().api.url or None


def check_api(hint: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line naming the URL, when the configured Prefect server is down (Prefect
    itself retries and then raises a traceback deep in its engine)."""
    url = api_url()
    if not url:
        return
    probe(url, PrefectUnavailable(f"Prefect server {url} (PREFECT_API_URL) is unreachable ({{why}}); {hint}"), timeout)
    import requests
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    auth_string = api.auth_string.get_secret_value() if api.auth_string else None
    key = api.key.get_secret_value() if api.key else None
    auth = tuple(auth_string.split(":", 1)) if auth_string and ":" in auth_string else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        status = requests.post(url.rstrip("/") + "/flows/filter", json={"limit": 1}, auth=auth, headers=headers,
                               timeout=timeout).status_code
    except requests.RequestException:
        return  # it answered /health; Prefect's own errors take it from here
    if status in (401, 403):
        sent = "the credentials in PREFECT_API_AUTH_STRING" if auth else "a request without credentials"
        raise PrefectUnavailable(f"Prefect server {url} refused {sent} (HTTP {status}): set PREFECT_API_AUTH_STRING="
                                 "USER:PASSWORD, the server's PREFECT_SERVER_API_AUTH_STRING (in the environment or "
                                 "a Prefect profile)")


@contextmanager
def prefect_api(hint: str) -> Iterator[None]:
    """Check the Prefect API first, and turn Prefect's own 'cannot reach the API' failures (a server that
    stops mid-run) into :class:`PrefectUnavailable`."""
    import httpx

    check_api(hint)
    try:
        yield
    except (httpx.TransportError, RuntimeError) as err:
        url = api_url()
        lost = isinstance(err, httpx.TransportError) or str(err).startswith("Failed to reach API")
        if not (url and lost):
            raise
        raise PrefectUnavailable(f"Prefect server {url} (PREFECT_API_URL) stopped answering "
                                 f"({type(err).__name__}); {hint}") from None


def run_pipeline(params_file: str, overrides: list[str]) -> dict[str, Any]:
    """The flow, called from the CLI: a server named by PREFECT_API_URL that is down is one clear error."""
    hint = "start it (prefect server start), or unset PREFECT_API_URL to run on a temporary local server"
    with prefect_api(hint):
        return gan_pipeline(params_file=params_file, overrides=overrides)


def pinned_source(root: Path) -> tuple[str, str]:
    """(where a worker clones the project from, the commit it checks out): the ``origin`` remote if there is
    one, else this folder (for workers on this machine or with the project at the same path), and HEAD.
    Refused when tracked files have uncommitted changes: the worker would run the commit, not them."""
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        raise ConfigError(f"deploy --pool: {root} is not a git repository with a commit; a worker clones the "
                          "project at a commit (git init, git add -A, git commit)")
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.split("\n")
    dirty = [line[3:] for line in dirty if line.strip()]
    if dirty:
        raise ConfigError(f"deploy --pool: uncommitted changes to {', '.join(dirty[:5])}"
                          f"{' ...' if len(dirty) > 5 else ''}; a worker runs the committed project, so commit "
                          "(or stash) them first")
    origin = git("remote", "get-url", "origin")
    return (origin.stdout.strip() if origin.returncode == 0 else str(root)), head.stdout.strip()


def require_shared_tracking(uri: str, option: str) -> None:
    """A worker runs in its own clone: a relative sqlite store there is not the one this project reads."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        raise ConfigError(f"tracking.uri: {uri} is relative to the project folder, and with {option} every "
                          "worker would track into its own clone; use the team's tracking server (http://...) or "
                          "an absolute sqlite:////path on a file system the workers share")


def require_pool(pool: str) -> None:
    """ConfigError naming the command that creates it, when the work pool ``pool`` does not exist."""
    import asyncio

    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    async def exists() -> bool:
        async with get_client() as client:
            try:
                await client.read_work_pool(pool)
                return True
            except ObjectNotFound:
                return False

    if not asyncio.run(exists()):
        raise ConfigError(f"--pool {pool}: no such work pool on {api_url()}; create it with "
                          f"`prefect work-pool create {pool} --type process`")


# Crash detection for runs on a pool. A worker that dies with its machine (or is killed with SIGKILL) leaves
# its flow run "Running" for ever: nothing is left to report the end. Every flow run sends a heartbeat event
# every HEARTBEAT seconds (Prefect's flows.heartbeat_frequency, set in each deployment's environment); one
# automation per server marks a gans flow run Crashed when SILENCE seconds pass with no heartbeat and no final
# state, which is what a sweep or a user waiting on it reads.
HEARTBEAT_DEFAULT = 60
HEARTBEAT_MIN = 30  # Prefect refuses less
CRASH_AUTOMATION = "gans: mark unresponsive flow runs crashed"
FLOW_NAMES = ("gan-pipeline", "gan-experiment")


def silence_limit(heartbeat: int) -> int:
    """Seconds without a heartbeat after which a run counts as lost: two missed beats and a margin."""
    return 2 * heartbeat + 10


def heartbeat_env(heartbeat: int) -> dict[str, str]:
    """The flow-run environment that makes a run send a heartbeat every ``heartbeat`` seconds."""
    if not HEARTBEAT_MIN <= heartbeat < 24 * 3600:
        raise ConfigError(f"--heartbeat: got {heartbeat}; expected seconds between {HEARTBEAT_MIN} (Prefect's "
                          "minimum) and a day")
    return {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat)}


def ensure_crash_detection(heartbeat: int) -> str:
    """Create, or update to this ``heartbeat``, the server's automation that marks a gans flow run Crashed when
    it has sent no heartbeat (and reached no final state) for ``silence_limit(heartbeat)`` seconds. One per
    server, found by name; the latest deployment's heartbeat sets its window. Returns its id."""
    import asyncio
    from datetime import timedelta

    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    silence = silence_limit(heartbeat)
    automation = AutomationCore(
        name=CRASH_AUTOMATION,
        description=(f"A flow run of {' or '.join(FLOW_NAMES)} that sent no heartbeat for {silence} s (it sends one "
                     f"every {heartbeat} s) lost its worker: mark it Crashed. Made by `gans deploy --pool` and "
                     "`gans sweep --pool`."),
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in
                                                    ("Completed", "Failed", "Cancelled", "Crashed"))},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({"prefect.resource.role": "flow",
                                                 "prefect.resource.name": list(FLOW_NAMES)}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=silence)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {silence} s: its worker or machine was lost")])

    async def upsert() -> str:
        async with get_client() as client:
            existing = await client.read_automations_by_name(CRASH_AUTOMATION)
            if existing:
                await client.update_automation(existing[0].id, automation)
                return str(existing[0].id)
            return str(await client.create_automation(automation))

    return asyncio.run(upsert())


def deploy_to_pool(*, name: str, pool: str, cron: str | None, interval: float | None, params_file: str,
                   overrides: list[str], root: Path, workdir: str | None = None,
                   heartbeat: int = HEARTBEAT_DEFAULT) -> tuple[str, str, str]:
    """A deployment of the flow on the work pool ``pool``, its source pinned to this project's git commit
    (a worker clones it there, whatever folder or machine it runs on) and its params to the committed
    ``params_file`` plus ``overrides``. ``workdir``: the folder on the worker's machine where runs clone the
    project and keep their outputs and checkpoints between runs (Prefect's process worker otherwise uses a
    temporary folder per run). Runs send a heartbeat every ``heartbeat`` s, and the server's crash-detection
    automation is made or updated to match. Returns (deployment id, source, commit)."""
    from prefect.runner.storage import GitRepository

    params_path = Path(params_file).resolve()
    if not params_path.is_relative_to(root):
        raise ConfigError(f"--params {params_file}: outside the project {root}; a worker reads it from the commit")
    source, commit = pinned_source(root)
    env = heartbeat_env(heartbeat)

    hint = "start it (prefect server start) and deploy again"
    with prefect_api(hint):
        require_pool(pool)
        ensure_crash_detection(heartbeat)
        remote_flow = gan_pipeline.from_source(source=GitRepository(url=source, commit_sha=commit),
                                               entrypoint="pipeline/flows.py:gan_pipeline")
        deployment_id = remote_flow.deploy(
            name=name, work_pool_name=pool, cron=cron, interval=interval, build=False, push=False,
            parameters={"params_file": str(params_path.relative_to(root)), "overrides": overrides},
            version=commit[:12], description=f"gans pipeline at {commit[:12]} of {source}", print_next_steps=False,
            job_variables={"env": env, **({"working_dir": workdir} if workdir else {})})
    return str(deployment_id), source, commit


def serve_deployment(*, name: str, cron: str | None, interval: float | None, params_file: str,
                     overrides: list[str]) -> None:
    """Serve a scheduled deployment of the flow (blocks; needs PREFECT_API_URL of a Prefect server)."""
    hint = "start it (prefect server start) and serve the deployment again"
    with prefect_api(hint):
        gan_pipeline.serve(name=name, cron=cron, interval=interval,
                           parameters={"params_file": params_file, "overrides": overrides})
