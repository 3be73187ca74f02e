"""The pipeline stages. Each reads its own params section and the files earlier
stages wrote, calls into ``gans``, and writes its outputs atomically. DVC runs
them through the CLI; the Prefect flow calls them as tasks."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import torch

from gans.config import AugmentConfig, build_config, to_dict
from gans.data import ImageSet, load_source, split_holdout
from gans.evaluation import (accuracy, classifier_from_payload, classifier_payload, cluster_purity, extract,
                             generative_metrics, train_classifier)
from gans.io import atomic_write, load_torch, save_json, save_torch
from gans.sampling import generate, grid_seeds_labels, image_grid, png_bytes
from gans.trainer import Trainer, load_generator, resolve_device
from gans.variants import resolve_variant
from pipeline import paths
from pipeline.params import Params


class StageError(RuntimeError):
    """A stage cannot run: a missing input, or an input of the wrong kind."""


def _require_file(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise StageError(f"{path} is missing: run the '{stage}' stage first (dvc repro {stage})")
    return path


def _load_set(path: Path, stage: str) -> ImageSet:
    return ImageSet.from_dict(load_torch(_require_file(path, stage)))


def _read_json(path: Path, stage: str) -> dict[str, Any]:
    return json.loads(_require_file(path, stage).read_text())


# ---------------------------------------------------------------- prepare


def prepare(params: Params) -> dict[str, Any]:
    """Load ``data.source``, resize, split; write data/prepared/{train,holdout}.pt and meta.json."""
    cfg = params.data
    data = load_source(cfg)
    train, holdout = split_holdout(data, cfg.holdout_fraction, cfg.seed)
    meta = {
        "source": cfg.source, "count": len(data), "train_count": len(train), "holdout_count": len(holdout),
        "channels": int(data.images.shape[1]), "resolution": cfg.resolution,
        "classes": list(data.classes), "labelled": data.labels is not None, "hash": data.content_hash(),
    }
    save_torch(train.to_dict(), paths.PREPARED / "train.pt")
    save_torch(holdout.to_dict(), paths.PREPARED / "holdout.pt")
    save_json(meta, paths.PREPARED / "meta.json")
    return meta


# ---------------------------------------------------------------- augment


def augment(params: Params) -> dict[str, Any]:
    """Apply static augmentation and write the online augmentation spec for the trainer."""
    cfg = params.augment
    train = _load_set(paths.PREPARED / "train.pt", "prepare")
    meta = _read_json(paths.PREPARED / "meta.json", "prepare")
    images, labels = train.images, train.labels
    if "xflip" in cfg.static:
        images = torch.cat([images, images.flip(-1)])
        labels = None if labels is None else torch.cat([labels, labels])
    out = ImageSet(images, labels, train.classes)
    save_torch(out.to_dict(), paths.AUGMENTED / "train.pt")
    save_json(to_dict(cfg), paths.AUGMENTED / "spec.json")
    meta = {**meta, "augmented_count": len(out), "static": list(cfg.static)}
    save_json(meta, paths.AUGMENTED / "meta.json")
    return meta


# ---------------------------------------------------------------- evaluator


def evaluator(params: Params) -> dict[str, Any]:
    """Train the domain classifier on the training split; score it on the holdout."""
    cfg = params.evaluate
    train = _load_set(paths.PREPARED / "train.pt", "prepare")
    holdout = _load_set(paths.PREPARED / "holdout.pt", "prepare")
    if train.labels is None:
        raise StageError("evaluate.features: 'domain' needs a labelled data.source (class folders, or labels in "
                         "the npz); this source has no labels")
    device = resolve_device(params.train.device)
    model = train_classifier(train, epochs=cfg.evaluator_epochs, seed=cfg.seed, device=device)
    acc = accuracy(model, holdout, device=device)
    payload = classifier_payload(model, train.classes, acc)
    save_torch(payload, paths.EVALUATOR)
    result = {"holdout_accuracy": acc, "id": payload["id"], "epochs": cfg.evaluator_epochs,
              "holdout_count": len(holdout)}
    save_json(result, paths.EVALUATOR_METRICS)
    return result


# ---------------------------------------------------------------- train


def _write_plot(history: list[dict[str, float]], path: Path) -> None:
    keys = ["step", "loss_d", "loss_g", "d_real", "d_fake", "ada_p"]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            for row in history:
                writer.writerow({k: (int(row[k]) if k == "step" else row.get(k, "")) for k in keys})

    atomic_write(path, write)


def _tracking_run(params: Params, run_id: str | None, meta: dict[str, Any]):
    """(run_id, reporter) or (None, None) when the tracking store cannot be reached."""
    from pipeline import tracking

    variant = resolve_variant(params.model)
    tags = {"variant": variant.name, "data_source": meta["source"], "data_hash": meta["hash"],
            "git_commit": tracking.git_commit(), **{f"component.{k}": v for k, v in variant.components().items()}}
    try:
        run_id = tracking.start_or_resume_run(params.tracking, run_id, run_name=variant.name, tags=tags)
        reporter = tracking.MlflowReporter(run_id)
        sections = {k: v for k, v in params.flat().items() if k.split(".")[0] in ("model", "train", "augment", "data")}
        tracking.log_params_once(reporter.client, run_id, sections)
        return run_id, reporter
    except Exception as err:
        print(f"warning: MLflow store {params.tracking.uri!r} unreachable ({type(err).__name__}: {err}); "
              "training goes on without tracking", file=sys.stderr)
        return None, None


def train(params: Params) -> dict[str, Any]:
    """Train the generator (resuming from models/checkpoints/); write generator.pt, train.json, plots."""
    data = _load_set(paths.AUGMENTED / "train.pt", "augment")
    meta = _read_json(paths.AUGMENTED / "meta.json", "augment")
    aug_cfg = build_config(AugmentConfig, _read_json(paths.AUGMENTED / "spec.json", "augment"), "augment")
    trainer = Trainer(model=params.model, train=params.train, augment=aug_cfg, data=data,
                      checkpoint_dir=paths.CHECKPOINTS, data_hash=meta["hash"])
    run_id, reporter = _tracking_run(params, trainer.checkpoint_extra().get("run_id"), meta)
    if reporter is not None:
        trainer.reporter, trainer.extra["run_id"] = reporter, run_id
    result = trainer.fit()
    save_torch(trainer.generator_payload(), paths.GENERATOR)
    _write_plot(result.history, paths.TRAIN_PLOT)
    metrics = {"steps": result.steps, "resumed_from": result.resumed_from, "ada_p": result.ada_p,
               "img_per_s": result.img_per_s, "seconds": result.seconds, "variant": result.variant,
               "run_id": run_id, "data_hash": meta["hash"], "device": str(trainer.device)}
    save_json(metrics, paths.TRAIN_METRICS)
    if reporter is not None:
        reporter._guard("finishing the run", _finish_train_run, reporter, metrics)
    return metrics


def _finish_train_run(reporter, metrics: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    client, run_id = reporter.client, reporter.run_id
    client.log_batch(run_id, metrics=[
        Metric(f"train_{k}", float(metrics[k]), 0, metrics["steps"])
        for k in ("img_per_s", "seconds", "ada_p")])
    client.log_artifact(run_id, str(paths.TRAIN_METRICS), "metrics")
    client.log_artifact(run_id, str(paths.TRAIN_PLOT), "plots")
    for name in ("params.yaml", "dvc.lock"):
        if Path(name).is_file():
            client.log_artifact(run_id, name, "config")


# ---------------------------------------------------------------- evaluate


def evaluate(params: Params) -> dict[str, Any]:
    """Score the EMA generator against the holdout with the domain evaluator; write eval.json and the grid."""
    cfg = params.evaluate
    device = resolve_device(params.train.device)
    generator, gpayload = load_generator(_require_file(paths.GENERATOR, "train"), device)
    epayload = load_torch(_require_file(paths.EVALUATOR, "evaluator"), map_location=device)
    classifier = classifier_from_payload(epayload, device)
    holdout = _load_set(paths.PREPARED / "holdout.pt", "prepare")
    num_classes = gpayload["spec"]["num_classes"]
    seeds = list(range(cfg.seed * 10_000_000, cfg.seed * 10_000_000 + cfg.num_samples))
    labels = [i % num_classes for i in range(cfg.num_samples)] if num_classes else None
    fake = generate(generator, seeds, labels, z_dim=gpayload["spec"]["z_dim"], device=device,
                    batch_size=cfg.batch_size)
    real_f = extract(classifier, holdout.images, batch_size=cfg.batch_size, device=device, desc="real features")
    fake_f = extract(classifier, fake, batch_size=cfg.batch_size, device=device, desc="fake features")
    metrics = generative_metrics(real_f, fake_f, kid_subset_size=cfg.kid_subset_size)
    if num_classes:
        predicted = fake_f.logits.argmax(1)
        if gpayload["spec"]["conditioning"] == "infogan":
            metrics["cluster_purity"] = cluster_purity(torch.tensor(labels), predicted)
        else:
            metrics["conditional_accuracy"] = float((predicted == torch.tensor(labels)).double().mean())
    metrics.update({"extractor": f"domain:{epayload['id']}", "evaluator_id": epayload["id"],
                    "num_samples": cfg.num_samples, "num_real": len(holdout),
                    "variant": gpayload["variant"]["name"], "step": gpayload["step"]})
    grid_seeds, grid_labels = grid_seeds_labels(num_classes)
    grid = image_grid(generate(generator, grid_seeds, grid_labels, z_dim=gpayload["spec"]["z_dim"], device=device))
    atomic_write(paths.GRID, lambda tmp: tmp.write_bytes(png_bytes(grid)))
    save_json(metrics, paths.EVAL_METRICS)
    _log_eval(params, metrics)
    return metrics


def _log_eval(params: Params, metrics: dict[str, Any]) -> None:
    """Add the evaluation to the training run; a tracking failure is a warning here."""
    from pipeline import tracking

    run_id = _read_json(paths.TRAIN_METRICS, "train").get("run_id") if paths.TRAIN_METRICS.is_file() else None
    if not run_id:
        return
    try:
        import mlflow

        tracking.configure(params.tracking)
        client = mlflow.MlflowClient()
        numbers = {f"eval_{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, 0, int(metrics["step"]))
                                          for k, v in numbers.items()])
        client.set_tag(run_id, "extractor", metrics["extractor"])
        client.log_artifact(run_id, str(paths.EVAL_METRICS), "metrics")
        client.log_artifact(run_id, str(paths.GRID), "samples")
    except Exception as err:
        print(f"warning: could not log the evaluation to MLflow ({type(err).__name__}: {err})", file=sys.stderr)


# ---------------------------------------------------------------- register


def register(params: Params) -> dict[str, Any]:
    """Register the generator as a new model version; move ``champion`` if it is better."""
    from pipeline.registry import register_generator

    eval_metrics = _read_json(paths.EVAL_METRICS, "evaluate")
    train_metrics = _read_json(paths.TRAIN_METRICS, "train")
    meta = _read_json(paths.AUGMENTED / "meta.json", "augment")
    _require_file(paths.GENERATOR, "train")
    result = register_generator(params, generator_path=paths.GENERATOR, eval_metrics=eval_metrics,
                                train_metrics=train_metrics, data_meta=meta)
    save_json(result, paths.REGISTER_METRICS)
    return result


STAGES = {"prepare": prepare, "augment": augment, "evaluator": evaluator, "train": train,
          "evaluate": evaluate, "register": register}
