"""Model registration and the champion rule.

Every registered version carries tags (family, variant, data, evaluator, the family's metrics, git commit,
DVC stage hash). ``challenger`` is the newest version; ``champion`` moves to the new version only when it
is better by its family's primary metric (FID for generators and translators, lower is better) than the
champion on a comparable evaluation: the same family, data, evaluator id and sample count. Versions of
different families, data or feature extractors are never compared.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gans.io import file_hash
from pipeline import tracking
from pipeline.files import StageError
from pipeline.params import Params
from pipeline.paths import project_root


DEFAULT_FAMILY = "noise-to-image"  # versions registered before families existed


def comparable(a: dict[str, str], b: dict[str, str]) -> bool:
    """Same family (and directions, for translators), data (where both record it), evaluator and sample count."""
    same_data = a.get("data_hash") == b.get("data_hash") or not (a.get("data_hash") and b.get("data_hash"))
    return (a.get("family", DEFAULT_FAMILY) == b.get("family", DEFAULT_FAMILY) and same_data
            and a.get("directions") == b.get("directions")
            and a.get("evaluator_id") == b.get("evaluator_id") and a.get("num_samples") == b.get("num_samples"))


def decide_champion(new: dict[str, str], champion: dict[str, str] | None, promote: str) -> tuple[bool, str]:
    """(promote?, reason) for a new version's tags against the current champion's tags."""
    if promote == "never":
        return False, "register.promote is 'never'"
    if promote == "always":
        return True, "register.promote is 'always'"
    if champion is None:
        return True, "there was no champion"
    if not comparable(new, champion):
        return False, (f"the champion ({_what(champion)}) and this version ({_what(new)}) are not comparable: "
                       "only versions of the same family, directions, data, evaluator and sample count compete; "
                       "register other models under their own register.model_name (or set register.promote: "
                       "always to force)")
    metric = new.get("metric", "fid")
    higher = new.get("higher_is_better", "false") == "true"
    name = metric.upper() if metric in ("fid", "kid", "is") else metric
    new_v, old_v = float(new[metric]), float(champion.get(metric, "nan"))
    better = new_v > old_v if higher else new_v < old_v
    if math.isfinite(new_v) and (better or not math.isfinite(old_v)):
        return True, f"{name} {new_v:.3f} {'>' if higher else '<'} champion's {old_v:.3f}"
    return False, f"{name} {new_v:.3f} is not better than the champion's {old_v:.3f}"


def _what(tags: dict[str, str]) -> str:
    directions = f" {tags['directions']}" if tags.get("directions") else ""
    return (f"{tags.get('family', DEFAULT_FAMILY)}{directions}, data {tags.get('data_hash')}, evaluator "
            f"{tags.get('evaluator_id')}, {tags.get('num_samples')} samples")


def version_tags(eval_metrics: dict[str, Any], data_meta: dict[str, Any]) -> dict[str, str]:
    """The tags a version carries: what it is, what it was evaluated on, and its family's metrics."""
    metric = str(eval_metrics.get("primary_metric", "fid"))
    tags = {
        "family": str(eval_metrics.get("family", DEFAULT_FAMILY)), "variant": str(eval_metrics["variant"]),
        "data_source": data_meta["source"], "data_hash": data_meta["hash"],
        "evaluator_id": str(eval_metrics["evaluator_id"]), "extractor": str(eval_metrics["extractor"]),
        "num_samples": str(eval_metrics["num_samples"]), "metric": metric,
        "higher_is_better": "true" if eval_metrics.get("higher_is_better") else "false",
    }
    for key, value in eval_metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("num_samples", "num_real", "step"):
            tags[key] = repr(float(value))
    for key in ("directions",):
        if key in eval_metrics:
            tags[key] = ",".join(eval_metrics[key])
    return tags


def version_description(tags: dict[str, str], eval_metrics: dict[str, Any]) -> str:
    """The model version's description, which the registry UI shows: what the model is, what it was trained
    on, and how it scored (from eval.json), with the metric that decides the champion."""
    skip = {"num_samples", "num_real", "step", "higher_is_better"}
    scores = ", ".join(f"{k} {float(v):.4g}" for k, v in eval_metrics.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in skip)
    directions = f", {tags['directions']}" if tags.get("directions") else ""
    order = "higher" if tags.get("higher_is_better") == "true" else "lower"
    experiment = f"; DVC experiment {tags['dvc_experiment']}" if tags.get("dvc_experiment") else ""
    exports = f" For use outside Python, the model's artifacts hold {tags['export']}." if tags.get("export") else ""
    return (f"{tags['variant']} ({tags['family']}{directions}) trained on {tags['data_source']} "
            f"(data {tags['data_hash']}) for {eval_metrics.get('step', '?')} steps, commit "
            f"{tags.get('git_commit', 'unknown')[:12]}{experiment}. Evaluated on {tags['num_samples']} samples "
            f"with {tags['extractor']} features (evaluator {tags['evaluator_id']}): {scores}. The champion is "
            f"chosen by {tags['metric']} ({order} is better)." + exports)


class RegistryError(StageError):
    """The registry cannot be read or written as registration needs; nothing was promoted."""


def check_evaluated(eval_metrics: dict[str, Any], generator_path: Path) -> str:
    """The generator's hash, after checking that ``eval.json`` scored this very file (outside DVC, or after an
    interrupted run, the weights can be newer than the evaluation)."""
    actual = file_hash(generator_path)
    scored = eval_metrics.get("generator_hash")
    if scored != actual:
        what = f"generator {scored}" if scored else "a generator it does not name (written by an earlier release)"
        raise RegistryError(f"metrics/eval.json was computed for {what}, but {generator_path} is {actual}: "
                            "evaluate it first (gans evaluate, or dvc repro), then register")
    return actual


def register_generator(params: Params, *, generator_path: Path, eval_metrics: dict[str, Any],
                       train_metrics: dict[str, Any], data_meta: dict[str, Any],
                       grid_path: Path | None = None, directions_path: Path | None = None) -> dict[str, Any]:
    """Register the generator (once per generator file), set ``challenger``, maybe move ``champion``.

    Safe to rerun after a kill at any point: the model version is created with all its tags in one call, and
    a rerun finds the version (or the logged model) of the same generator file instead of adding another.
    When the current champion cannot be read, nothing is promoted: the error says so."""
    import mlflow

    generator_hash = check_evaluated(eval_metrics, generator_path)
    exp_id = tracking.configure(params.tracking)
    client = mlflow.MlflowClient()
    name = params.register.model_name
    tags = {**version_tags(eval_metrics, data_meta), "git_commit": tracking.git_commit(),
            "dvc_stage_hash": tracking.dvc_stage_hash("train"), "generator_hash": generator_hash}
    if os.environ.get("DVC_EXP_NAME"):  # `dvc exp run` / `gans sweep`: the experiment that made this version
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    with registry_lock(tracking.resolve_uri(params.tracking.uri)):
        version, run_id = _existing_version(client, name, generator_hash)
        if version is None:
            version, run_id = _log_and_register(params, client, exp_id, generator_path,
                                                train_metrics.get("run_id"), tags, grid_path, directions_path)
        else:  # a rerun: the same file's version, tagged as of this evaluation
            tags["export"] = client.get_model_version(name, version).tags.get("export", "")
            for key, value in tags.items():
                client.set_model_version_tag(name, version, key, value)
        client.update_model_version(name, version, description=version_description(tags, eval_metrics))
        client.set_registered_model_alias(name, "challenger", version)
        champion = _current_champion(client, name)
        if champion is not None and champion[0] == version:
            promote, reason = True, "this version is already the champion"
        else:
            promote, reason = decide_champion(tags, champion[1] if champion else None, params.register.promote)
        if promote:
            client.set_registered_model_alias(name, "champion", version)
    print(f"registered {name} version {version}; champion {'is' if promote else 'unchanged'}: {reason}",
          file=sys.stderr)
    return {"model_name": name, "version": int(version), "champion": promote, "reason": reason,
            "champion_version": int(version) if promote else (int(champion[0]) if champion else None),
            "run_id": run_id, "metric": tags["metric"], tags["metric"]: float(eval_metrics[tags["metric"]])}


def _existing_version(client: Any, name: str, generator_hash: str) -> tuple[str | None, str | None]:
    """A version already registered for this exact generator file (a retried or repeated register): by its
    tag, or, for a version left untagged by an earlier release's kill, by its logged model's tag. A registry
    that cannot be searched is an error: guessing "none" would register a duplicate."""
    try:
        versions = client.search_model_versions(f"name='{name}'")
        for mv in versions:
            if mv.tags.get("generator_hash") == generator_hash:
                return str(mv.version), mv.run_id
        for mv in versions:
            # search results leave model_id empty; the source of a logged model's version is models:/<id>
            model_id = getattr(mv, "model_id", None) or (mv.source or "").removeprefix("models:/")
            if "generator_hash" not in mv.tags and model_id.startswith("m-"):
                logged = client.get_logged_model(model_id)
                if logged.tags.get("generator_hash") == generator_hash:
                    return str(mv.version), mv.run_id
    except Exception as err:  # noqa: BLE001 - a locked store, a server error: never "no such version"
        raise RegistryError(f"cannot search the versions of {name!r} ({_why(err)}); nothing was registered; "
                            "rerun register") from None
    return None, None


def _logged_model(client: Any, run_id: str, generator_hash: str) -> Any | None:
    """The model already logged into ``run_id`` for this generator file (a register killed after logging)."""
    import mlflow

    run = client.get_run(run_id)
    found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list",
                                        filter_string=f"tags.generator_hash = '{generator_hash}'")
    return next((m for m in found if m.source_run_id == run_id), None)


def _log_and_register(params: Params, client: Any, exp_id: str, generator_path: Path, run_id: str | None,
                      tags: dict[str, str], grid_path: Path | None = None,
                      directions_path: Path | None = None) -> tuple[str, str]:
    """Log the pyfunc model into the training run (or a new run if it is gone), unless a killed register
    already did, and create the version with all its tags at once. The model carries, beside the generator
    file, its portable exports (:func:`portable_exports`) and the evaluation's sample grid."""
    import mlflow

    from gans.families import load_artifact
    from pipeline.serving import input_example_of, signature_of

    if run_id:
        try:
            client.get_run(run_id)
        except Exception:
            run_id = None
    logged = _logged_model(client, run_id, tags["generator_hash"]) if run_id else None
    if logged is None:
        artifact = load_artifact(generator_path, "cpu")
        model_signature = signature_of(artifact)  # the rows its artifact kind takes
        # An existing run keeps its name (DVC_EXP_NAME in experiments): start_run would rename it.
        run_name = None if run_id else (os.environ.get("DVC_EXP_NAME") or tags["variant"])
        with tempfile.TemporaryDirectory() as folder:
            exports, summary = (portable_exports(artifact, Path(folder), generator_hash=tags["generator_hash"])
                                if params.register.exports else ({}, ""))
            artifacts = {"generator": str(generator_path), **exports}
            if grid_path is not None and Path(grid_path).is_file():
                artifacts["sample_grid"] = str(grid_path)
            encoder = encoder_file(directions_path, tags["generator_hash"], artifact)
            if encoder:
                artifacts["directions"] = encoder
            with mlflow.start_run(run_id=run_id, run_name=run_name, experiment_id=None if run_id else exp_id):
                logged = mlflow.pyfunc.log_model(
                    name="generator", python_model=str(Path(__file__).with_name("generator_model.py")),
                    artifacts=artifacts, signature=model_signature, input_example=input_example_of(artifact),
                    model_config={"max_rows": params.serve.max_rows},
                    metadata={"gans": {**artifact.describe(), "exports": summary}},
                    tags={"generator_hash": tags["generator_hash"], "export": summary},
                    pip_requirements=["torch", "torchvision", "pandas", "mlflow"],
                )
                run_id = mlflow.active_run().info.run_id
    tags["export"] = (logged.tags or {}).get("export", "")
    version = mlflow.register_model(logged.model_uri, params.register.model_name, tags=tags)
    return str(version.version), run_id


def encoder_file(path: Path | None, generator_hash: str, artifact: Any) -> str | None:
    """``path`` (the explore stage's models/directions.pt) when it holds the encoder of this very generator,
    for serving's image -> latent; else None, with a warning when the file is there but does not fit."""
    from gans.io import load_torch

    if not hasattr(artifact, "attach_encoder") or path is None or not Path(path).is_file():
        return None  # a translator or a PixelCNN has no latent to invert into
    try:
        saved = load_torch(path, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - a damaged side file costs the encoder, never the registration
        why = f"cannot be read ({type(err).__name__})"
    else:
        if saved.get("generator_hash") != generator_hash:
            why = "was made from another generator"
        elif "encoder" not in saved:
            why = "holds no encoder (explore.encoder_steps: 0)"
        else:
            artifact.attach_encoder(saved)  # its describe() now tells how the server inverts
            return str(path)
    print(f"warning: {path} {why}: this version is registered without an encoder, and its server refuses image -> "
          "latent requests; run gans explore (or dvc repro) before gans register to ship one", file=sys.stderr)
    return None


def portable_exports(artifact: Any, folder: Path, *, generator_hash: str) -> tuple[dict[str, str], str]:
    """Each network of ``artifact`` exported into ``folder`` for use outside Python, verified against
    PyTorch: ONNX, or TorchScript for a network ONNX cannot express (said on stderr). Returns the pyfunc
    artifacts ({"onnx": path} or {"onnx_a2b": ..., "onnx_b2a": ...}) and a one-line summary."""
    from gans.export import OPSET, SUFFIX, ExportError, artifact_metadata, export_graph

    files, notes = {}, []
    extra = {**artifact_metadata(artifact), "generator_hash": generator_hash}
    for graph in artifact.graphs():
        suffix = graph.name.removeprefix("generator").lstrip("-")
        for fmt in ("onnx", "torchscript"):
            path = folder / f"{graph.name}{SUFFIX[fmt]}"
            try:
                diff = export_graph(graph, fmt, path, extra=extra)
            except ExportError as err:
                if fmt == "torchscript":
                    raise
                print(f"warning: {err}; exporting TorchScript instead", file=sys.stderr)
                continue
            files[f"{fmt}_{suffix}" if suffix else fmt] = str(path)
            what = f"ONNX opset {OPSET}" if fmt == "onnx" else "TorchScript"
            notes.append(f"{path.name} ({what}, max |runtime - PyTorch| {diff:.1e})")
            break
    return files, "; ".join(notes)


@contextlib.contextmanager
def registry_lock(uri: str, timeout: float = 300.0) -> Iterator[None]:
    """Serialise registrations that share a store on this machine (parallel `dvc exp run`s, two
    projects on one sqlite file): a file lock beside the sqlite file, else in the project folder.
    MLflow has no compare-and-set for aliases, so teams sharing a remote registry should register
    from one scheduler (the Prefect deployment)."""
    import fcntl
    import time

    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):] + ".gans-lock")
    else:
        path = project_root() / ".gans-registry.lock"
    with open(path, "a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another registration holds {path} for over {timeout:.0f} s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _current_champion(client: Any, name: str) -> tuple[str, dict[str, str]] | None:
    """(version, tags) of the champion, None when there is none; any failure to read it is an error (never
    "no champion", which would promote the new version whatever its score)."""
    try:
        aliases = client.get_registered_model(name).aliases
        if "champion" not in aliases:
            return None
        mv = client.get_model_version(name, str(aliases["champion"]))
        return str(mv.version), dict(mv.tags)
    except Exception as err:  # noqa: BLE001 - a locked store, a server error: never "no champion"
        raise RegistryError(f"cannot read the champion of {name!r} ({_why(err)}); the "
                            "new version is registered as challenger and the champion is unchanged: rerun "
                            "register") from None


def _why(err: BaseException) -> str:
    """One line for an error from MLflow or its store."""
    text = str(getattr(err, "message", None) or err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
