"""The pipeline stages. Each reads its own params section and the files earlier
stages wrote, calls into ``gans``, and writes its outputs atomically. DVC runs
them through the CLI; the Prefect flow calls them as tasks."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from gans.config import AugmentConfig, build_config, to_dict
from gans.data import ImageSet, load_source, split_holdout
from gans.evaluation import (DomainExtractor, Features, accuracy, cached_features, classifier_from_payload,
                             classifier_payload, cluster_accuracy, cluster_purity, frechet_distance,
                             generative_metrics, train_classifier)
from gans.io import atomic_write, load_torch, save_json, save_torch
from gans.sampling import generate, grid_seeds_labels, image_grid, png_bytes
from gans.trainer import Trainer, load_generator, resolve_device
from gans.variants import resolve_variant
from pipeline import paths
from pipeline.params import Params
from pipeline.paths import project_root


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


def _write_plot(history: list[dict[str, float]], path: Path,
                keys: tuple[str, ...] = ("step", "loss_d", "loss_g", "d_real", "d_fake", "ada_p")) -> None:

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
    """Train the generator (resuming from models/checkpoints/); write generator.pt, train.json, plots.

    Under ``torchrun`` every process runs this; rank 0 alone tracks the run in MLflow, evaluates and
    writes the outputs, while the other ranks train and then wait for it (``Trainer.close``)."""
    data = _load_set(paths.AUGMENTED / "train.pt", "augment")
    meta = _read_json(paths.AUGMENTED / "meta.json", "augment")
    aug_cfg = build_config(AugmentConfig, _read_json(paths.AUGMENTED / "spec.json", "augment"), "augment")
    trainer = Trainer(model=params.model, train=params.train, augment=aug_cfg, data=data,
                      checkpoint_dir=paths.CHECKPOINTS, data_hash=meta["hash"])
    run_id, reporter = None, None
    if trainer.is_main:
        run_id, reporter = _tracking_run(params, trainer.checkpoint_extra().get("run_id"), meta)
        if reporter is not None:
            trainer.reporter, trainer.extra["run_id"] = reporter, run_id
        if params.train.eval_every:
            trainer.evaluate_fn = periodic_fid(params, trainer.device)
    result = trainer.fit()
    metrics = {"steps": result.steps, "resumed_from": result.resumed_from, "ada_p": result.ada_p,
               "img_per_s": result.img_per_s, "seconds": result.seconds, "variant": result.variant,
               "run_id": run_id, "data_hash": meta["hash"], "device": str(trainer.device),
               "best_fid": result.best.get("fid"), "best_step": int(result.best["step"]) if result.best else None,
               "world_size": result.world_size}
    if result.replicas:  # under torchrun: each rank's step and weight digest (they must agree)
        metrics["replicas"] = result.replicas
    if trainer.is_main:
        save_torch(trainer.generator_payload(), paths.GENERATOR)
        _write_plot(result.history, paths.TRAIN_PLOT)
        _write_plot(result.evals, paths.FID_PLOT, ("step", "fid"))  # header only when train.eval_every is 0
        save_json(metrics, paths.TRAIN_METRICS)
        if reporter is not None:
            reporter.guard("finishing the run", _finish_train_run, reporter, metrics)
    trainer.close()  # the other ranks wait here for rank 0's files (on an error torchrun stops them all)
    return metrics


def _finish_train_run(reporter, metrics: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    client, run_id = reporter.client, reporter.run_id
    client.log_batch(run_id, metrics=[
        Metric(f"train_{k}", float(metrics[k]), 0, metrics["steps"])
        for k in ("img_per_s", "seconds", "ada_p")])
    client.log_artifact(run_id, str(paths.TRAIN_METRICS), "metrics")
    client.log_artifact(run_id, str(paths.TRAIN_PLOT), "plots")
    client.log_artifact(run_id, str(paths.FID_PLOT), "plots")
    for name in ("params.yaml", "dvc.lock"):
        if Path(name).is_file():
            client.log_artifact(run_id, name, "config")


# ---------------------------------------------------------------- evaluate


def _extractor(params: Params, domain: DomainExtractor, device: torch.device):
    """The feature extractor ``evaluate.features`` names, and its label for reports."""
    if params.evaluate.features == "inception":
        from gans.inception import InceptionExtractor, resolve_weights

        ext = InceptionExtractor(resolve_weights(params.evaluate.inception_weights), device)
        return ext, f"inception:{ext.id}"
    return domain, f"domain:{domain.id}"


def _check_extractor_inputs(params: Params) -> None:
    """Fail before any work when the Inception weights are missing or unreadable."""
    if params.evaluate.features == "inception":
        from gans.inception import check_weights, resolve_weights

        check_weights(resolve_weights(params.evaluate.inception_weights))


def _real_features(extractor, label: str, holdout: ImageSet, batch_size: int) -> Features:
    """Holdout features, cached by extractor id, data hash and count: a second evaluation reuses them."""
    data_hash = _read_json(paths.PREPARED / "meta.json", "prepare")["hash"]
    key = f"{label.replace(':', '-')}-{data_hash}-{len(holdout)}"
    return cached_features(extractor, holdout.images, cache_dir=project_root() / paths.REFERENCE_CACHE, key=key,
                           batch_size=batch_size)


def _eval_labels(spec: dict[str, Any], n: int) -> list[int] | None:
    k = spec["num_classes"]
    return [i % k for i in range(n)] if k else None


def _label_metrics(spec: dict[str, Any], labels: list[int], predicted: torch.Tensor, real: Features,
                   fake: Features, holdout: ImageSet) -> dict[str, Any]:
    """Conditional accuracy and per-class FID (class-conditional), or how well InfoGAN's categorical
    code picks the class: accuracy under the best code-to-class matching, and purity."""
    y = torch.tensor(labels)
    if spec["conditioning"] == "infogan":
        return {"cluster_accuracy": cluster_accuracy(y, predicted), "cluster_purity": cluster_purity(y, predicted)}
    out: dict[str, Any] = {"conditional_accuracy": float((predicted == y).double().mean())}
    if holdout.labels is not None:
        per_class = {}
        for c in range(spec["num_classes"]):
            r, f = real.features[holdout.labels == c], fake.features[y == c]
            if len(r) >= 2 and len(f) >= 2:
                per_class[str(c)] = frechet_distance(r, f)
        out["per_class_fid"] = per_class
    return out


def evaluate(params: Params) -> dict[str, Any]:
    """Score the EMA generator against the holdout; write eval.json and the sample grid."""
    cfg = params.evaluate
    device = resolve_device(params.train.device)
    _check_extractor_inputs(params)
    generator, gpayload = load_generator(_require_file(paths.GENERATOR, "train"), device)
    spec = gpayload["spec"]
    epayload = load_torch(_require_file(paths.EVALUATOR, "evaluator"), map_location=device)
    domain = DomainExtractor(classifier_from_payload(epayload, device), device)
    extractor, label = _extractor(params, domain, device)
    holdout = _load_set(paths.PREPARED / "holdout.pt", "prepare")
    seeds = list(range(cfg.seed * 10_000_000, cfg.seed * 10_000_000 + cfg.num_samples))
    labels = _eval_labels(spec, cfg.num_samples)
    fake = generate(generator, seeds, labels, z_dim=spec["z_dim"], device=device, batch_size=cfg.batch_size)
    real_f = _real_features(extractor, label, holdout, cfg.batch_size)
    fake_f = extractor.extract(fake, batch_size=cfg.batch_size, desc="generated features")
    metrics: dict[str, Any] = generative_metrics(real_f, fake_f, kid_subset_size=cfg.kid_subset_size)
    if labels is not None:
        domain_logits = fake_f.logits if extractor is domain else domain.extract(fake, batch_size=cfg.batch_size).logits
        metrics.update(_label_metrics(spec, labels, domain_logits.argmax(1), real_f, fake_f, holdout))
    metrics.update({"extractor": label, "evaluator_id": extractor.id, "num_samples": cfg.num_samples,
                    "num_real": len(holdout), "variant": gpayload["variant"]["name"], "step": gpayload["step"]})
    grid_seeds, grid_labels = grid_seeds_labels(spec["num_classes"])
    grid = image_grid(generate(generator, grid_seeds, grid_labels, z_dim=spec["z_dim"], device=device))
    atomic_write(paths.GRID, lambda tmp: tmp.write_bytes(png_bytes(grid)))
    save_json(metrics, paths.EVAL_METRICS)
    _log_eval(params, metrics)
    return metrics


def periodic_fid(params: Params, device: torch.device):
    """fn(G, spec) -> {"fid": ...} on ``train.eval_samples`` samples with the domain features, for the trainer."""
    epayload = load_torch(_require_file(paths.EVALUATOR, "evaluator"), map_location=device)
    domain = DomainExtractor(classifier_from_payload(epayload, device), device)
    holdout = _load_set(paths.PREPARED / "holdout.pt", "prepare")
    real = _real_features(domain, f"domain:{domain.id}", holdout, 250)
    n = params.train.eval_samples

    def fn(generator: torch.nn.Module, spec) -> dict[str, float]:
        fake = generate(generator, list(range(n)), _eval_labels(asdict(spec), n), z_dim=spec.z_dim, device=device)
        return {"fid": frechet_distance(real.features, domain.extract(fake, batch_size=250, desc="fid").features)}

    return fn


def _on_run(params: Params, run_id: str | None, what: str, fn: Callable[[Any], None]) -> None:
    """Call ``fn(client)`` to add to the tracking run ``run_id`` (nested under a sweep's parent run when
    there is one); a tracking failure is a warning naming ``what``, never a failed stage."""
    from pipeline import tracking

    if not run_id:
        return
    try:
        import mlflow

        tracking.configure(params.tracking)
        client = mlflow.MlflowClient()
        tracking.adopt_parent(client, run_id)
        fn(client)
    except Exception as err:  # noqa: BLE001 - tracking trouble never fails a stage whose outputs are written
        print(f"warning: could not log {what} to MLflow ({type(err).__name__}: {err})", file=sys.stderr)


def _log_eval(params: Params, metrics: dict[str, Any]) -> None:
    """Add the evaluation to the training run."""
    run_id = _read_json(paths.TRAIN_METRICS, "train").get("run_id") if paths.TRAIN_METRICS.is_file() else None

    def log(client) -> None:
        from mlflow.entities import Metric

        numbers = {f"eval_{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        client.log_batch(run_id, metrics=[Metric(k, v, 0, int(metrics["step"])) for k, v in numbers.items()])
        client.set_tag(run_id, "extractor", metrics["extractor"])
        client.log_artifact(run_id, str(paths.EVAL_METRICS), "metrics")
        client.log_artifact(run_id, str(paths.GRID), "samples")

    _on_run(params, run_id, "the evaluation", log)


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
    _log_lineage(params, result["run_id"])
    return result


def _log_lineage(params: Params, run_id: str | None) -> None:
    """Attach to the run what reproduces it: params.yaml, the params as resolved (with -S overrides),
    dvc.lock as of this stage (every stage before register) and metrics/*.json."""

    def log(client) -> None:
        for name in ("params.yaml", "dvc.lock"):
            if Path(name).is_file():
                client.log_artifact(run_id, name, "config")
        client.log_dict(run_id, params.to_dict(), "config/params.resolved.yaml")
        for path in sorted(paths.METRICS.glob("*.json")):
            client.log_artifact(run_id, str(path), "metrics")

    _on_run(params, run_id, "params, dvc.lock and metrics", log)


STAGES = {"prepare": prepare, "augment": augment, "evaluator": evaluator, "train": train,
          "evaluate": evaluate, "register": register}
