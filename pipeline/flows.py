"""The pipeline as a Prefect flow: the same stage functions as tasks, in DVC's order.

Tasks pass file paths implicitly (each stage reads what the previous wrote),
never models. Registration retries, since a tracking server may be briefly
unreachable. The flow publishes a markdown artifact with the metrics table.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from pipeline import paths
from pipeline.params import load_params
from pipeline.stages import STAGES


def _run_stage(name: str, params_file: str, overrides: list[str]) -> dict[str, Any]:
    return STAGES[name](load_params(params_file, overrides))


@task(name="prepare")
def prepare_task(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return _run_stage("prepare", params_file, overrides)


@task(name="augment")
def augment_task(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return _run_stage("augment", params_file, overrides)


@task(name="evaluator")
def evaluator_task(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return _run_stage("evaluator", params_file, overrides)


@task(name="train")
def train_task(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return _run_stage("train", params_file, overrides)


@task(name="evaluate")
def evaluate_task(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return _run_stage("evaluate", params_file, overrides)


@task(name="register", retries=2, retry_delay_seconds=10)
def register_task(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return _run_stage("register", params_file, overrides)


def metrics_markdown(train: dict[str, Any], evaluation: dict[str, Any], registered: dict[str, Any]) -> str:
    rows = [
        ("variant", train["variant"]), ("steps", train["steps"]), ("img/s", f"{train['img_per_s']:.0f}"),
        ("ADA p", f"{train['ada_p']:.3f}"), ("FID", f"{evaluation['fid']:.3f}"), ("IS", f"{evaluation['is']:.3f}"),
        ("KID", f"{evaluation['kid']:.5f}"), ("precision", f"{evaluation['precision']:.3f}"),
        ("recall", f"{evaluation['recall']:.3f}"),
        ("features", f"{evaluation['extractor']} ({evaluation['num_samples']} generated, "
                     f"{evaluation['num_real']} real)"),
        ("model version", f"{registered['model_name']} v{registered['version']}"),
        ("champion", "yes" if registered["champion"] else f"no: {registered['reason']}"),
    ]
    if "conditional_accuracy" in evaluation:
        rows.insert(6, ("conditional accuracy", f"{evaluation['conditional_accuracy']:.3f}"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (f"# GAN pipeline run\n\n| metric | value |\n| --- | --- |\n{table}\n\n"
            f"Sample grid: `{paths.GRID.resolve()}`\n")


@flow(name="gan-pipeline", log_prints=True)
def gan_pipeline(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """prepare -> augment -> evaluator -> train -> evaluate -> register."""
    o = list(overrides or [])
    prepare_task(params_file, o)
    augment_task(params_file, o)
    evaluator_task(params_file, o)
    trained = train_task(params_file, o)
    evaluation = evaluate_task(params_file, o)
    registered = register_task(params_file, o)
    create_markdown_artifact(key="gan-pipeline-summary", markdown=metrics_markdown(trained, evaluation, registered),
                             description="metrics of the latest pipeline run")
    return {"train": trained, "evaluate": evaluation, "register": registered}


def serve_deployment(*, name: str, cron: str | None, interval: float | None, params_file: str,
                     overrides: list[str]) -> None:
    """Serve a scheduled deployment of the flow (blocks; needs PREFECT_API_URL of a Prefect server)."""
    gan_pipeline.serve(name=name, cron=cron, interval=interval,
                       parameters={"params_file": params_file, "overrides": overrides})
