"""The pipeline stages. Each reads its own params section and the files earlier stages wrote, calls into
``gans`` (dispatching on the model's family through ``gans.families``), and writes its outputs atomically.
DVC runs them through the CLI; the Prefect flow calls them as tasks."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from gans import checkpoints
from gans.config import AugmentConfig, build_config, to_dict
from gans.data import Dataset, keep_labels, load_dataset, split_dataset
from gans.evaluation import accuracy, classifier_payload, train_classifier
from gans.families import recipe as family_recipe
from gans.io import atomic_write, file_hash, remove_stale_temporaries, save_json, save_torch
from gans.sampling import png_bytes
from gans.trainer import Trainer, check_trainable, resolve_device, training_fingerprint
from pipeline import paths
from pipeline.files import StageError, load_dataset_file, load_torch_file, read_json, require_file, require_torch_file
from pipeline.params import Params


def device_of(params: Params) -> torch.device:
    """The device of every stage that runs a network: ``train.device`` is its one home (dvc.yaml declares it
    for the evaluator, train and evaluate stages)."""
    return resolve_device(params.train.device)


# ---------------------------------------------------------------- prepare


def _data_meta(cfg, data_hash: str, train: Dataset, holdout: Dataset) -> dict[str, Any]:
    """meta.json: the source, layout, counts, shape, classes and content hash. The images layout keeps its
    fields at the top level; two-domain layouts describe each part under ``parts``."""
    meta: dict[str, Any] = {"source": cfg.source, "layout": train.layout, "resolution": cfg.resolution,
                            "hash": data_hash}
    if train.layout == "images":
        tr, ho = train.images, holdout.images
        meta = {**meta, "count": len(tr) + len(ho), "train_count": len(tr), "holdout_count": len(ho),
                "channels": int(tr.images.shape[1]), "classes": list(tr.classes), "labelled": tr.labels is not None}
        if tr.known is not None:  # which training images keep their label (rows of train.pt)
            meta.update(labels_per_class=cfg.labels_per_class, known_labels=tr.known.nonzero().flatten().tolist())
        return meta
    parts = train.describe()
    for name, info in parts.items():
        info["train_count"], info["holdout_count"] = info.pop("count"), len(holdout.parts[name])
    return {**meta, "parts": parts, "train_count": sum(len(s) for s in train.parts.values()),
            "holdout_count": sum(len(s) for s in holdout.parts.values()), "labelled": train.labelled}


def prepare(params: Params) -> dict[str, Any]:
    """Load ``data.source``, resize, split (or take the split it ships); write data/prepared/{train,holdout}.pt
    and meta.json."""
    cfg = params.data
    data, shipped = load_dataset(cfg)
    if shipped is None:
        data_hash = data.content_hash()
        train, holdout = split_dataset(data, cfg.holdout_fraction, cfg.seed)
    else:
        train, holdout = data, shipped
        data_hash = _hash_of(train.content_hash(), holdout.content_hash())
    if cfg.labels_per_class:
        if train.layout != "images":
            raise StageError(f"data.labels_per_class: {cfg.labels_per_class} keeps a labelled subset of one image set; "
                             f"data.source {cfg.source!r} is {train.layout} data; set data.labels_per_class: 0")
        train = Dataset.single(keep_labels(train.images, cfg.labels_per_class, cfg.seed))
        data_hash = _hash_of(data_hash, f"labels_per_class:{train.images.content_hash()}")
    meta = _data_meta(cfg, data_hash, train, holdout)
    save_torch(train.to_dict(), paths.PREPARED / "train.pt")
    save_torch(holdout.to_dict(), paths.PREPARED / "holdout.pt")
    save_json(meta, paths.PREPARED / "meta.json")
    return meta


# ---------------------------------------------------------------- augment


def augment(params: Params) -> dict[str, Any]:
    """Apply static augmentation (to every part alike: pairs stay aligned) and write the online augmentation
    spec for the trainer."""
    cfg = params.augment
    train = load_dataset_file(paths.PREPARED / "train.pt", "prepare")
    meta = read_json(paths.PREPARED / "meta.json", "prepare")
    parts = dict(train.parts)
    if "xflip" in cfg.static:
        parts = {name: s.with_images(*(None if t is None else torch.cat([t, t.flip(-1) if t is s.images else t])
                                       for t in (s.images, s.labels, s.attributes, s.known)))
                 for name, s in parts.items()}
    out = Dataset(train.layout, parts)
    save_torch(out.to_dict(), paths.AUGMENTED / "train.pt")
    save_json(to_dict(cfg), paths.AUGMENTED / "spec.json")
    meta = {**meta, "augmented_count": sum(len(s) for s in parts.values()), "static": list(cfg.static)}
    save_json(meta, paths.AUGMENTED / "meta.json")
    return meta


# ---------------------------------------------------------------- evaluator


def evaluator(params: Params) -> dict[str, Any]:
    """Train a domain classifier per labelled part of the training split (one for an image set, one per
    domain for translation data); score each on the holdout. An image set's file holds its one classifier.

    The classifiers give the domain features and the label metrics. Unlabelled data has none: it needs
    ``evaluate.features: inception`` (and gets no label metrics nor periodic evaluation)."""
    cfg = params.evaluate
    train = load_dataset_file(paths.PREPARED / "train.pt", "prepare")
    holdout = load_dataset_file(paths.PREPARED / "holdout.pt", "prepare")
    unlabelled = [name for name, part in train.parts.items() if part.labels is None]
    if unlabelled and cfg.features == "domain":
        where = "" if train.layout == "images" else f" (domain {', '.join(unlabelled)} has none)"
        raise StageError(f"evaluate.features: 'domain' needs a labelled data.source{where} (class folders, or "
                         "labels in the npz); for unlabelled data set evaluate.features: inception")
    device = device_of(params)
    payloads = {}
    for name, part in train.parts.items():
        if part.labels is not None:
            model = train_classifier(part, epochs=cfg.evaluator_epochs, seed=cfg.seed, device=device)
            payloads[name] = classifier_payload(model, part.classes, accuracy(model, holdout.parts[name], device=device))
    if train.layout == "attributes":  # the domain or attribute classifier (StarGAN's target-domain accuracy)
        part = train.parts["images"]
        model = train_classifier(part, epochs=cfg.evaluator_epochs, seed=cfg.seed, device=device, attributes=True)
        acc = accuracy(model, holdout.parts["images"], device=device, attributes=True)
        payloads["attributes"] = {**classifier_payload(model, part.attribute_names, acc), "exclusive": part.exclusive}
    if train.layout == "images" and payloads:
        payload = payloads["images"]
        result = {"holdout_accuracy": payload["holdout_accuracy"], "id": payload["id"]}
    else:
        payload = {"parts": payloads, "id": _combined_id(payloads) if payloads else "none"}
        accuracies = [p["holdout_accuracy"] for p in payloads.values()]
        result = {"holdout_accuracy": min(accuracies) if accuracies else None, "id": payload["id"],
                  "parts": {k: {"holdout_accuracy": p["holdout_accuracy"], "id": p["id"]} for k, p in payloads.items()}}
    save_torch(payload, paths.EVALUATOR)
    result.update({"epochs": cfg.evaluator_epochs, "holdout_count": sum(len(s) for s in holdout.parts.values())})
    save_json(result, paths.EVALUATOR_METRICS)
    return result


def _combined_id(payloads: dict[str, dict[str, Any]]) -> str:
    return _hash_of(*(f"{k}:{p['id']}" for k, p in sorted(payloads.items())))[:12]


def _hash_of(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- train


def _write_plot(history: list[dict[str, float]], path: Path,
                keys: tuple[str, ...] = ("step", "loss_d", "loss_g", "d_real", "d_fake", "ada_p", "d_real_sign",
                                         "sign_train", "sign_val", "r_v")) -> None:

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            for row in history:
                writer.writerow({k: (int(row[k]) if k == "step" else row.get(k, "")) for k in keys})

    atomic_write(path, write)


def _classifiers() -> dict[str, torch.nn.Module]:
    """The evaluator stage's domain classifiers by data part (on the CPU), for a loss that uses fixed features
    (the super-resolution content loss); none when the stage wrote none."""
    from gans.evaluation import classifier_from_payload

    if not paths.EVALUATOR.is_file():
        return {}
    payload = load_torch_file(paths.EVALUATOR, "evaluator")
    payloads = payload["parts"] if "parts" in payload else {"images": payload}
    return {name: classifier_from_payload(p, torch.device("cpu")) for name, p in payloads.items()}


def _tracking_run(params: Params, run_id: str | None, meta: dict[str, Any]):
    """(run_id, reporter) or (None, None) when the tracking store cannot be reached."""
    from pipeline import tracking

    resolved = params.resolved
    # MLflow's system tags say who ran it, how and at which commit; the data is the run's dataset input
    tags = {"variant": resolved.variant, "family": resolved.family.name, "data_source": meta["source"],
            "data_hash": meta["hash"], **tracking.system_tags("train"),
            **{f"component.{k}": v for k, v in resolved.components().items()}}
    try:
        run_id = tracking.start_or_resume_run(params.tracking, run_id, run_name=resolved.variant, tags=tags)
        reporter = tracking.MlflowReporter(run_id)
        reporter.client.log_inputs(run_id, [tracking.dataset_input(meta, "train", "training", tracking.dvc_remote())])
        sections = {k: v for k, v in params.flat().items() if k.split(".")[0] in ("model", "train", "augment", "data")}
        tracking.log_params_once(reporter.client, run_id, sections)
        return run_id, reporter
    except Exception as err:
        print(f"warning: MLflow store {params.tracking.uri!r} unreachable ({type(err).__name__}: {err}); "
              "training goes on without tracking", file=sys.stderr)
        return None, None


def train(params: Params) -> dict[str, Any]:
    """Train the family's networks (resuming from models/checkpoints/); write generator.pt, train.json, plots.

    The tracking run (continued from the newest checkpoint of this configuration) and the periodic
    evaluation are set up first and handed to the trainer. Under ``torchrun`` every process runs this; rank 0
    alone tracks the run in MLflow, evaluates and writes the outputs, while the other ranks train and then
    wait for it (``Trainer.close``)."""
    data = load_dataset_file(paths.AUGMENTED / "train.pt", "augment")
    preview = load_dataset_file(paths.PREPARED / "holdout.pt", "prepare")
    meta = read_json(paths.AUGMENTED / "meta.json", "augment")
    aug_cfg = build_config(AugmentConfig, read_json(paths.AUGMENTED / "spec.json", "augment"), "augment")
    recipe = family_recipe(params.resolved, model=params.model, data=data, preview=preview, features=_classifiers())
    fp = training_fingerprint(recipe, model=params.model, train=params.train, augment=aug_cfg, data_hash=meta["hash"])
    is_main = check_trainable(recipe, params.train).is_main
    # Rank 0 holds the project's training lock until every output is written: a second `gans train` here
    # would resume, prune and overwrite the same files.
    with checkpoints.training_lock(paths.TRAIN_LOCK) if is_main else contextlib.nullcontext():
        return _train(params, recipe, meta, aug_cfg, fp, is_main)


def _train(params: Params, recipe, meta: dict[str, Any], aug_cfg: AugmentConfig, fp: str,
           is_main: bool) -> dict[str, Any]:
    """The train stage once the lock is held: tracking run, trainer, outputs."""
    for out in (paths.GENERATOR, paths.TRAIN_METRICS, paths.TRAIN_PLOT, paths.FID_PLOT):
        for stale in remove_stale_temporaries(out):
            print(f"note: removed {stale}, left by a write that was killed", file=sys.stderr)
    run_id = reporter = evaluate_fn = None
    if is_main:
        run_id, reporter = _tracking_run(params, checkpoints.latest_extra(paths.CHECKPOINTS, fp).get("run_id"), meta)
        if params.train.eval_every:
            from pipeline.scoring import periodic_score

            evaluate_fn = periodic_score(params, device_of(params))
    trainer = Trainer(recipe=recipe, train=params.train, augment=aug_cfg, checkpoint_dir=paths.CHECKPOINTS,
                      fingerprint=fp, reporter=reporter, evaluate_fn=evaluate_fn,
                      extra={"run_id": run_id} if run_id else None)
    monitor = _system_metrics(params, run_id) if reporter is not None else None
    try:
        result = trainer.fit()
    finally:
        if monitor is not None:
            monitor.finish()
    key = recipe.primary_metric
    metrics = {"steps": result.steps, "resumed_from": result.resumed_from, "ada_p": result.ada_p,
               "img_per_s": result.img_per_s, "seconds": result.seconds, "variant": result.variant,
               "family": params.resolved.family.name, "run_id": run_id, "data_hash": meta["hash"],
               "device": str(trainer.device), f"best_{key}": result.best.get(key),
               "best_step": int(result.best["step"]) if result.best else None, "world_size": result.world_size}
    if result.replicas:  # under torchrun: each rank's step and weight digest (they must agree)
        metrics["replicas"] = result.replicas
    if trainer.is_main:
        save_torch(trainer.export(), paths.GENERATOR)
        _write_plot(result.history, paths.TRAIN_PLOT)
        _write_plot(result.evals, paths.FID_PLOT, ("step", key))  # header only when train.eval_every is 0
        save_json(metrics, paths.TRAIN_METRICS)
        if reporter is not None:
            reporter.guard("finishing the run", _finish_train_run, reporter, metrics)
    trainer.close()  # the other ranks wait here for rank 0's files (on an error torchrun stops them all)
    return metrics


def _system_metrics(params: Params, run_id: str) -> Any | None:
    """The run's system metrics monitor (tracking.system_metrics_every), or None; failing to start it is a
    warning, and the rest of the tracking goes on."""
    from pipeline import tracking

    try:
        return tracking.system_metrics(params.tracking, run_id)
    except Exception as err:  # noqa: BLE001 - the metrics are a convenience, never a failed training
        print(f"warning: MLflow system metrics are off ({type(err).__name__}: {err})", file=sys.stderr)
        return None


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


def evaluate(params: Params) -> dict[str, Any]:
    """Score the trained artifact with its family's evaluation; write eval.json and the sample grid."""
    from pipeline.scoring import check_extractor_inputs, evaluate_artifact

    check_extractor_inputs(params)  # missing Inception weights fail before anything else
    require_file(paths.GENERATOR, "train")  # missing inputs first, then damaged ones, naming the stage to rerun
    require_torch_file(paths.EVALUATOR, "evaluator")
    generator_hash = file_hash(require_torch_file(paths.GENERATOR, "train"))  # what register checks it promotes
    metrics, grid = evaluate_artifact(params, paths.GENERATOR, device_of(params))
    metrics["generator_hash"] = generator_hash
    atomic_write(paths.GRID, lambda tmp: tmp.write_bytes(png_bytes(grid)))
    _write_confusion(metrics.get("confusion"), metrics.get("classes"), paths.CONFUSION_PLOT)
    _write_rows(paths.TRUNCATION_PLOT, ["psi", "fid", "precision", "recall"], metrics.get("truncation") or [])
    save_json(metrics, paths.EVAL_METRICS)
    _log_eval(params, metrics)
    return metrics


def _write_confusion(matrix: list[list[int]] | None, classes: list[str] | None, path: Path) -> None:
    """plots/confusion.csv: one row (actual, predicted) per holdout image, by class name, as DVC's confusion
    template counts them; the header alone for a model that does not classify."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["actual", "predicted"])
            for a, row in enumerate(matrix or []):
                for p, count in enumerate(row):
                    out.writerows([[classes[a], classes[p]]] * count)

    atomic_write(path, write)


def _write_rows(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """A CSV of ``columns`` with one line per row (the header alone for none), for DVC's plots."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            out = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            out.writeheader()
            out.writerows(rows)

    atomic_write(path, write)


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
    run_id = read_json(paths.TRAIN_METRICS, "train").get("run_id") if paths.TRAIN_METRICS.is_file() else None

    def log(client) -> None:
        from mlflow.entities import Metric

        from pipeline import tracking

        numbers = {f"eval_{k}": float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for row in metrics.get("truncation") or []:  # eval_fid_psi0.5, ...: comparable across runs in the UI
            numbers.update({f"eval_{k}_psi{row['psi']:g}": float(row[k]) for k in ("fid", "precision", "recall")})
        now = int(time.time() * 1000)  # not 0: a re-evaluation at the same step must not repeat (key, time, step)
        client.log_batch(run_id, metrics=[Metric(k, v, now, int(metrics["step"])) for k, v in numbers.items()])
        client.set_tag(run_id, "extractor", metrics["extractor"])
        meta = read_json(paths.PREPARED / "meta.json", "prepare")
        client.log_inputs(run_id, [tracking.dataset_input(meta, "holdout", "eval", tracking.dvc_remote())])
        client.log_artifact(run_id, str(paths.EVAL_METRICS), "metrics")
        client.log_artifact(run_id, str(paths.GRID), "samples")
        if metrics.get("confusion"):
            client.log_dict(run_id, {"classes": metrics["classes"], "rows": "actual class", "columns": "predicted class",
                                     "counts": metrics["confusion"]}, "metrics/confusion.json")
            client.log_artifact(run_id, str(paths.CONFUSION_PLOT), "plots")
        if metrics.get("truncation"):
            client.log_artifact(run_id, str(paths.TRUNCATION_PLOT), "plots")

    _on_run(params, run_id, "the evaluation", log)


# ---------------------------------------------------------------- explore


def explore(params: Params) -> dict[str, Any]:
    """Latent directions, interpolation grids, the encoder and holdout inversions of the trained generator
    (``pipeline.explore``); a model without a latent (translation, super-resolution) gets outputs that say so.
    Logged to the training run: the effects and inversion scores as metrics, the report and grids as artifacts."""
    from gans.families import load_artifact
    from pipeline import explore as exploring

    require_torch_file(paths.EVALUATOR, "evaluator")
    generator_hash = file_hash(require_torch_file(paths.GENERATOR, "train"))  # what register checks it ships
    artifact = load_artifact(paths.GENERATOR, device_of(params))
    why = exploring.no_latent(artifact)
    if why:
        return exploring.skip(artifact, why, generator_hash)
    cfg = params.explore
    report = exploring.explore(artifact, count=cfg.directions, alpha=cfg.alpha, probes=cfg.probes,
                               evaluator=paths.EVALUATOR, holdout=paths.PREPARED / "holdout.pt", invert=cfg.invert,
                               invert_steps=cfg.invert_steps, encoder_steps=cfg.encoder_steps,
                               learned_steps=cfg.learned_steps, seed=cfg.seed,
                               generator_hash=generator_hash, names={k: f"explore.{k}" for k in (
                                   "directions", "alpha", "probes", "invert", "invert_steps", "encoder_steps",
                                   "learned_steps")})
    _log_explore(params, report)
    return report


def _log_explore(params: Params, report: dict[str, Any]) -> None:
    """Add the exploration to the training run: how many directions of each method beat random ones, the
    arithmetic and inversion scores (metrics ``explore_*``), metrics/explore.json and the grids."""
    from pipeline import explore as exploring

    trained = read_json(paths.TRAIN_METRICS, "train") if paths.TRAIN_METRICS.is_file() else {}
    run_id, step = trained.get("run_id"), int(trained.get("steps", 0))

    def log(client) -> None:
        from mlflow.entities import Metric

        values = {f"explore_{m}_beats_random": n for m, n in report["beats_random"].items()}
        values["explore_random_pixel_change"] = report["random_pixel_change"]
        if "learned" in report:
            values["explore_learned_accuracy"] = report["learned"]["reconstructor_accuracy"]
        if "transfer" in report.get("arithmetic", {}):
            values["explore_arithmetic_transfer"] = report["arithmetic"]["transfer"]
        for stage, scores in (report.get("inversion") or {}).items():
            if isinstance(scores, dict):
                values.update({f"explore_inversion_{stage}_{k}": v for k, v in scores.items()})
        # Stamped now, at the training step: a rerun (after a resumed training) adds a point, never a duplicate of
        # (key, timestamp, step), which MLflow's logged-model metric table refuses.
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])
        client.log_artifact(run_id, str(exploring.METRICS), "metrics")
        client.log_artifacts(run_id, str(exploring.SAMPLES), "samples/directions")

    _on_run(params, run_id, "the exploration", log)


# ---------------------------------------------------------------- register


def register(params: Params) -> dict[str, Any]:
    """Register the generator as a new model version; move ``champion`` if it is better."""
    from pipeline.registry import register_generator

    eval_metrics = read_json(paths.EVAL_METRICS, "evaluate")
    train_metrics = read_json(paths.TRAIN_METRICS, "train")
    meta = read_json(paths.AUGMENTED / "meta.json", "augment")
    require_torch_file(paths.GENERATOR, "train")
    result = register_generator(params, generator_path=paths.GENERATOR, eval_metrics=eval_metrics,
                                train_metrics=train_metrics, data_meta=meta, grid_path=paths.GRID,
                                directions_path=paths.DIRECTIONS)
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
          "evaluate": evaluate, "explore": explore, "register": register}
