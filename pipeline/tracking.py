"""MLflow: store resolution, runs, and a Reporter that streams training statistics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from pipeline.params import TrackingConfig
from pipeline.paths import project_root


def resolve_uri(uri: str, root: Path | None = None) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////abs/root/rel.db``; other URIs unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((root or project_root()) / uri[len(prefix):])
    return uri


class ServiceUnavailable(RuntimeError):
    """A server the command needs (the MLflow tracking server, the Prefect API) cannot be reached."""


class TrackingUnavailable(ServiceUnavailable):
    """The MLflow tracking server cannot be reached."""


class TrackingRefused(TrackingUnavailable):
    """The MLflow tracking server answers, but refuses this client's credentials (or their absence)."""


def probe(url: str, error: ServiceUnavailable, timeout: float = 5.0) -> None:
    """GET ``url``/health; when nothing answers, raise ``error`` with ``{why}`` in its message replaced by the
    reason. Any answer, an error status included, means the server is up (its own errors say more)."""
    import requests

    try:
        requests.get(url.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as err:
        raise type(error)(str(error).replace("{why}", type(err).__name__)) from None


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (instead of MLflow's minutes of retries) when an HTTP tracking server is down, or refuses
    this client (a server started with ``--app-name basic-auth``: credentials from the environment)."""
    if not uri.startswith(("http://", "https://")):
        return
    probe(uri, TrackingUnavailable(f"MLflow tracking server {uri} is unreachable ({{why}}); start it or point "
                                   "tracking.uri elsewhere, then rerun this stage"), timeout)
    import requests

    user, token = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_TOKEN")
    auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None
    headers = {"Authorization": f"Bearer {token}"} if token and not user else {}
    try:
        status = requests.get(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                              auth=auth, headers=headers, timeout=timeout).status_code
    except requests.RequestException:
        return  # it answered /health; MLflow's own retries and errors take it from here
    if status == 401:
        sent = f"the credentials of user {user!r}" if user else ("the token" if token else "a request without credentials")
        raise TrackingRefused(f"MLflow tracking server {uri} refused {sent} (HTTP 401): set MLFLOW_TRACKING_USERNAME "
                              "and MLFLOW_TRACKING_PASSWORD in the environment (never in params.yaml), then rerun "
                              "this stage")
    if status == 403:
        raise TrackingRefused(f"MLflow tracking server {uri}: user {user!r} may not read experiments (HTTP 403); ask "
                              "its admin for a permission, then rerun this stage")


def configure(cfg: TrackingConfig) -> str:
    """Point MLflow at the store and make sure the experiment exists; return its id."""
    import mlflow

    warnings.filterwarnings("ignore", module="mlflow")
    uri = resolve_uri(cfg.uri)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:") or uri.startswith("file:"):
        location = (project_root() / "mlartifacts").as_uri()
    try:
        return client.create_experiment(cfg.experiment, artifact_location=location)
    except Exception:  # created concurrently by another stage or process
        exp = client.get_experiment_by_name(cfg.experiment)
        if exp is None:
            raise
        return exp.experiment_id


def git_commit(root: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root or project_root(), capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def system_tags(stage: str) -> dict[str, str]:
    """MLflow's own run tags, which its UI ("Created by", "Source", the commit), search and lineage read: the
    stage that made the run, run by hand or by the CLI (LOCAL) or by a Prefect deployment's worker (JOB)."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        user = f"uid {os.getuid()}"
    tags = {"mlflow.source.name": f"gans {stage}", "mlflow.user": user,
            "mlflow.source.type": "JOB" if os.environ.get("PREFECT__FLOW_RUN_ID") else "LOCAL"}
    commit = git_commit()
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    flow_run = os.environ.get(FLOW_RUN_ENV) or os.environ.get("PREFECT__FLOW_RUN_ID")
    if flow_run:  # from the run in MLflow's UI to the flow run in Prefect's
        tags["prefect.flow_run_id"] = flow_run
        if os.environ.get(FLOW_RUN_URL_ENV):
            tags["prefect.flow_run_url"] = os.environ[FLOW_RUN_URL_ENV]
    return tags


# Set by the Prefect flow for its stages (in process, or through DVC as subprocesses), read by system_tags.
FLOW_RUN_ENV, FLOW_RUN_URL_ENV = "GANS_PREFECT_FLOW_RUN_ID", "GANS_PREFECT_FLOW_RUN_URL"


def dvc_remote() -> str | None:
    """The URL of the project's default DVC remote, or None."""
    try:
        from dvc.repo import Repo

        with Repo(str(project_root())) as repo:
            name = repo.config["core"].get("remote")
            return repo.config["remote"][name]["url"] if name else None
    except Exception:  # noqa: BLE001 - no DVC project, or a config DVC itself would refuse: no remote to name
        return None


def dataset_input(meta: dict[str, Any], split: str, context: str, remote: str | None = None) -> Any:
    """An MLflow dataset input for the prepared ``split`` ("train" or "holdout") that ``meta`` (meta.json)
    describes: named after data.source and the split, its digest the prepared data's content hash (both splits
    share it), its source the DVC-tracked file, its schema the image tensors, its profile the counts, the
    layout and the DVC remote. ``context`` is MLflow's input context ("training", "eval")."""
    import numpy as np
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.types import Schema, TensorSpec

    res = int(meta["resolution"])
    parts = {"image": meta} if meta["layout"] == "images" else meta["parts"]
    specs = [TensorSpec(np.dtype("uint8"), (-1, int(info["channels"]), res, res), name)
             for name, info in parts.items()]
    specs += [TensorSpec(np.dtype("int64"), (-1,), "label" if name == "image" else f"{name}_label")
              for name, info in parts.items() if info.get("labelled")]
    path = f"data/prepared/{split}.pt"
    profile = {"split": split, "count": meta[f"{split}_count"], "layout": meta["layout"], "dvc_path": path,
               **({"dvc_remote": remote} if remote else {})}
    if split == "train" and "known_labels" in meta:  # a labelled subset (semi-supervised variants)
        profile.update(labels_per_class=meta["labels_per_class"], labelled_count=len(meta["known_labels"]))
    if split == "train" and "augmented_count" in meta:
        profile.update(augmented_count=meta["augmented_count"], static_augment=meta.get("static", []))
    with warnings.catch_warnings():  # "did you mean a local path": a relative path is what DVC tracks
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(path)
    dataset = MetaDataset(source=source, name=f"{meta['source']}-{split}", digest=meta["hash"],
                          schema=Schema(specs))
    d = dataset.to_dict()  # a MetaDataset has no profile of its own: the entity carries ours
    entity = Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"], source=d["source"],
                     schema=d["schema"], profile=json.dumps(profile))
    return DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])


def system_metrics(cfg: TrackingConfig, run_id: str) -> Any | None:
    """MLflow's system metrics monitor (``system/cpu_utilization_percentage``, memory, disk, network and, with
    nvidia-ml-py installed, GPU utilisation and memory) sampling every ``tracking.system_metrics_every``
    seconds into ``run_id``, continuing the steps of a resumed run; None when that is 0. Stop it with
    ``.finish()``."""
    if not cfg.system_metrics_every:
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=cfg.system_metrics_every, resume_logging=True,
                                   tracking_uri=resolve_uri(cfg.uri))
    monitor.start()
    return monitor


def ui_links(uri: str, run_id: str | None, model_name: str | None = None,
             version: int | None = None) -> list[tuple[str, str]]:
    """[(what, URL)] of the training run and the model version in the MLflow UI of a tracking server (none
    for a local store, whose UI `mlflow ui` serves wherever it is started, or when the run cannot be read)."""
    if not uri.startswith(("http://", "https://")) or not run_id:
        return []
    import mlflow

    base = uri.rstrip("/")
    try:
        experiment = mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - a link is a convenience: without the run, no link
        return []
    links = [("MLflow run", f"{base}/#/experiments/{experiment}/runs/{run_id}")]
    if model_name and version is not None:
        links.append(("model version", f"{base}/#/models/{model_name}/versions/{version}"))
    return links


def dvc_stage_hash(stage: str, lock: Path = Path("dvc.lock")) -> str:
    """A short hash of ``stage``'s entry in dvc.lock (deps, params, outs), or 'none'."""
    import hashlib

    import yaml

    if not lock.is_file():
        return "none"
    entry = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage)
    if not entry:
        return "none"
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:12]


def start_or_resume_run(cfg: TrackingConfig, run_id: str | None, *, run_name: str | None,
                        tags: dict[str, str]) -> str:
    """An MLflow run id: ``run_id`` if it still exists, else a new run with ``tags``."""
    import mlflow

    exp_id = configure(cfg)
    client = mlflow.MlflowClient()
    if run_id:
        try:
            run = client.get_run(run_id)
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, "resumed", "true")
            adopt_parent(client, run_id)
            return run.info.run_id
        except Exception:
            pass
    name = os.environ.get("DVC_EXP_NAME") or run_name
    parent = os.environ.get(PARENT_RUN_ENV)
    # Born nested: a run that showed up for a moment without its parent would escape searches by parent.
    run = client.create_run(exp_id, run_name=name, tags={**tags, **({"mlflow.parentRunId": parent} if parent else {})})
    return run.info.run_id


PARENT_RUN_ENV = "GANS_PARENT_RUN_ID"


def adopt_parent(client: Any, run_id: str) -> None:
    """Nest ``run_id`` under the MLflow run that ``$GANS_PARENT_RUN_ID`` names (``gans sweep`` sets it for
    its experiments), unless the run already has a parent: a run restored from DVC's cache keeps its own."""
    parent = os.environ.get(PARENT_RUN_ENV)
    if not parent or parent == run_id:
        return
    if "mlflow.parentRunId" not in client.get_run(run_id).data.tags:
        client.set_tag(run_id, "mlflow.parentRunId", parent)


def log_params_once(client: Any, run_id: str, values: dict[str, str]) -> None:
    """Log params not yet on the run. A resumed run may change resumable keys (train.steps, ...):
    MLflow params are immutable, so the new value goes to a tag ``resumed_with.<key>``."""
    from mlflow.entities import Param

    logged = client.get_run(run_id).data.params
    new = [Param(k, v[:6000]) for k, v in values.items() if k not in logged]
    if new:
        client.log_batch(run_id, params=new)
    for key, value in values.items():
        if key in logged and logged[key] != value[:6000]:
            client.set_tag(run_id, f"resumed_with.{key}", value[:5000])


class MlflowReporter:
    """Streams scalars and sample grids of a training run to MLflow. Tracking problems
    never stop training: the first failure is reported and later calls are skipped."""

    def __init__(self, run_id: str) -> None:
        import mlflow

        self.client = mlflow.MlflowClient()
        self.run_id = run_id
        self.failed = False

    def guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, or None once tracking has failed (the first failure is a warning)."""
        if self.failed:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            self.failed = True
            print(f"warning: MLflow {what} failed ({type(err).__name__}: {err}); training goes on without tracking",
                  file=sys.stderr)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric
        import time

        ts = int(time.time() * 1000)
        metrics = [Metric(k, float(v), ts, step) for k, v in values.items()]
        self.guard("logging", self.client.log_batch, self.run_id, metrics=metrics)

    def series(self, key: str, points: list[tuple[int, float]]) -> None:
        from mlflow.entities import Metric
        import time

        ts = int(time.time() * 1000)
        metrics = [Metric(key, float(v), ts, step) for step, v in points]
        for start in range(0, len(metrics), 1000):  # MLflow's log_batch takes at most 1000 metrics
            self.guard("logging", self.client.log_batch, self.run_id, metrics=metrics[start:start + 1000])

    def image(self, step: int, grid: torch.Tensor) -> None:
        array = grid.permute(1, 2, 0).numpy()
        if array.shape[2] == 1:
            array = array[:, :, 0]
        self.guard("image logging", self.client.log_image, self.run_id, array, key="samples", step=step)
