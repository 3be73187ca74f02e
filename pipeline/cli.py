"""The ``gans`` command: stage entrypoints, the Prefect flow, deployment, serving and sampling.

Every command takes ``--params FILE`` and ``-S key=value`` overrides; an
override the command would not apply is refused, naming the stage that reads
it (see READS). User errors (bad params, missing inputs, unreadable data, a
server that is down) print one line naming the problem and exit with status 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

from gans.checkpoints import TrainingBusy
from gans.config import ConfigError
from gans.data import DataError
from gans.io import WriteFailed
from gans.trainer import TrainingDiverged

USER_ERRORS = (ConfigError, DataError, TrainingDiverged, TrainingBusy, WriteFailed)


def _params(args: argparse.Namespace):
    """The params of ``--params`` with the ``-S`` overrides, validated; an override that this command
    would not apply is refused (see READS)."""
    from pipeline.params import load_params

    params = load_params(args.params, args.set or ())
    check_overrides(args.command, args.set or (), params)
    return params


# The params each command reads, as key prefixes (a section, or section.key). An -S key outside its command's
# list would be silently ignored, so it is refused naming the stage that reads it, unless it belongs to an earlier
# stage whose outputs record the value they were made with and the override equals that value (it is then in
# effect: `gans train -S data.source=digits` after `gans prepare -S data.source=digits`).
#  - data.*: prepare; later stages read data/prepared/ (meta.json and params.json record the keys). serve sizes
#    its request limit by data.resolution.
#  - augment.*: augment; train reads data/augmented/spec.json, not augment.* (the README's ADA example).
#  - model.*, train.*: train. train.device is the device of every stage that runs a network (as in dvc.yaml).
#  - evaluate.*: evaluate, but for evaluator_epochs; the evaluator stage reads that, seed and features.
#  - tracking.*: MLflow, for train (its run), evaluate (logs onto that run), register, sample (the champion)
#    and serve; summary prints the uri.
#  - serve.max_rows: register stores it with the model version; serve applies it again, with host and port.
# flow, sweep and deploy run every stage with the overrides, so they read everything.
STAGE_ORDER = ("prepare", "augment", "evaluator", "train", "evaluate", "explore", "register")
READS: dict[str, tuple[str, ...]] = {
    "prepare": ("data",),
    "augment": ("augment",),
    "evaluator": ("evaluate.evaluator_epochs", "evaluate.seed", "evaluate.features", "train.device"),
    "train": ("model", "train", "tracking"),
    "evaluate": ("evaluate.features", "evaluate.inception_weights", "evaluate.num_samples", "evaluate.batch_size",
                 "evaluate.seed", "evaluate.kid_subset_size", "evaluate.truncation", "train.device", "tracking"),
    "register": ("register", "tracking", "serve.max_rows"),
    "sample": ("register.model_name", "tracking"),
    "explore": ("explore", "train.device", "register.model_name", "tracking"),
    "export": ("register.model_name", "tracking"),
    "serve": ("register.model_name", "tracking", "serve", "data.resolution"),
    "summary": ("tracking.uri",),
    "variants": (), "repair-lock": (),
    "flow": ("",), "sweep": ("",), "deploy": ("",),
}
# Keys a command takes only to check them: every command checks data.source's layout against model.variant
# when it loads the params, which is all the stages before train do with it (prepare refuses a source the
# variant cannot train on). After train, model.variant must match metrics/train.json.
CHECKS: dict[str, tuple[str, ...]] = {"prepare": ("model.variant",), "augment": ("model.variant",),
                                      "evaluator": ("model.variant",)}


def _matches(prefixes: tuple[str, ...], key: str) -> bool:
    return any(not prefix or key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def _override_leaves(path: str, value: Any) -> list[str]:
    """The keys an override sets, given its value as loaded: a mapping sets each of its keys, those it leaves
    out included, which take their defaults (``-S 'augment.ada={enabled: false}'``)."""
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _override_leaves(f"{path}.{k}", v)]
    return [path]


def _lookup(tree: Any, path: list[str]) -> tuple[bool, Any]:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False, None
        tree = tree[part]
    return True, tree


def check_overrides(command: str, overrides: Sequence[str], params: Any) -> None:
    """Raise ConfigError for the first ``-S`` key that ``command`` would not apply (see READS)."""
    from pipeline.params import parse_override, recorded_params

    records, effective = None, params.to_dict()
    for text in overrides:
        path, _ = parse_override(text)
        for key in _override_leaves(".".join(path), _lookup(effective, path)[1]):
            if _matches(READS[command] + CHECKS.get(command, ()), key):
                continue
            records = recorded_params() if records is None else records
            section, _, rest = key.partition(".")
            made_with = ""
            for stage, record in records.items():
                earlier = command not in STAGE_ORDER or STAGE_ORDER.index(stage) < STAGE_ORDER.index(command)
                if not (earlier and record.section == section and _matches(record.keys, rest)):
                    continue
                if record.values is None:
                    break  # the output cannot be read: the stage that reads it says so, naming the file
                found, old = _lookup(record.values, rest.split("."))
                if found and _lookup(effective, key.split("."))[1] == old:
                    break  # the earlier stage ran with this value: it is in effect
                if found:
                    made_with = f" ({record.where} was made with {json.dumps(old)})"
            else:
                raise ConfigError(_not_read(command, key, text, made_with))


def _not_read(command: str, key: str, text: str, made_with: str) -> str:
    """``KEY: gans CMD does not read it; who does: what to run instead``."""
    stages = [c for c in STAGE_ORDER if _matches(READS[c], key)]
    others = [c for c in ("sample", "export", "serve", "summary") if _matches(READS[c], key)]
    if stages:
        who = f"the {_and(stages)} stage{'s do' if len(stages) > 1 else ' does'}"
    else:
        who = f"{_and([f'gans {c}' for c in others])} do{'' if len(others) > 1 else 'es'}"
    first = (stages or others or ["flow"])[0]
    upstream = first in STAGE_ORDER and (command not in STAGE_ORDER
                                         or STAGE_ORDER.index(first) < STAGE_ORDER.index(command))
    todo = f"run gans {first} -S {text} first" if upstream else f"pass it to gans {first} -S {text} instead"
    dvc = f", or dvc exp run -S {text}, which reruns every stage the key affects" if stages else ""
    return f"{key}: gans {command} does not read it; {who}{made_with}: {todo}{dvc}"


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _stage(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from pipeline.stages import STAGES

        params = _params(args)
        result = STAGES[name](params)
        if name == "prepare":
            from pipeline.params import record_prepare_params

            record_prepare_params(params)
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
        return 0

    return run


def cmd_flow(args: argparse.Namespace) -> int:
    from pipeline.flows import run_pipeline

    _params(args)  # fail before Prefect starts
    result = run_pipeline(args.params, list(args.set or ()))
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pipeline.sweep import run_sweep

    sweep = run_sweep(args.params, list(args.set or ()), jobs=args.jobs, pool=args.pool, heartbeat=args.heartbeat)
    print(sweep.table())
    print(f"\nMLflow: parent run {sweep.parent_run_id} (nested runs per experiment); "
          "DVC: dvc exp show, dvc metrics diff EXP1 EXP2, dvc plots diff EXP1 EXP2")
    return 0 if all(r.ok for r in sweep.results) else 1


def cmd_deploy(args: argparse.Namespace) -> int:
    from pipeline.flows import (HEARTBEAT_DEFAULT, deploy_to_pool, heartbeat_env, require_shared_tracking,
                                serve_deployment)

    params = _params(args)
    if not args.cron and args.interval is None and not args.pool:
        raise ConfigError("deploy: give --cron EXPR or --interval SECONDS (or --pool NAME, for runs on demand)")
    if args.interval is not None and not (0 < args.interval < float("inf")):
        raise ConfigError(f"--interval: got {args.interval}; expected a number of seconds > 0")
    if args.workdir and not args.pool:
        raise ConfigError("--workdir: only with --pool (a served deployment runs in this folder)")
    if args.heartbeat is not None and not args.pool:
        raise ConfigError("--heartbeat: only with --pool (runs on workers send heartbeats)")
    heartbeat = HEARTBEAT_DEFAULT if args.heartbeat is None else args.heartbeat
    heartbeat_env(heartbeat)  # a bad value fails first
    if args.pool:
        require_shared_tracking(params.tracking.uri, "--pool")
        deployment_id, source, commit = deploy_to_pool(
            name=args.name, pool=args.pool, cron=args.cron, interval=args.interval, params_file=args.params,
            overrides=list(args.set or ()), root=Path.cwd().resolve(), workdir=args.workdir,
            heartbeat=heartbeat)
        print(f"deployment gan-pipeline/{args.name} ({deployment_id}) on work pool {args.pool}: commit {commit[:12]} "
              f"of {source}, params {args.params}{' with ' + ' '.join(args.set) if args.set else ''}\n"
              f"start a worker on each machine: prefect worker start --pool {args.pool}\n"
              f"run it now: prefect deployment run gan-pipeline/{args.name}")
        return 0
    serve_deployment(name=args.name, cron=args.cron, interval=args.interval,
                     params_file=str(Path(args.params).resolve()), overrides=list(args.set or ()))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pipeline.tracking import resolve_uri

    params = _params(args)
    uri = resolve_uri(params.tracking.uri)
    model = args.model or f"models:/{params.register.model_name}@champion"
    host, port = args.host or params.serve.host, args.port or params.serve.port
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
           # mlflow runs `uvicorn` by name: this interpreter's bin first, so an unactivated venv serves too
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    # serve.max_rows, as it is now, bounds both rows and bytes. MLflow's scoring server parses the whole body
    # into a DataFrame before the model can count rows and has no size setting (see pipeline/serving.py), but
    # the uvicorn it runs takes its HTTP protocol from UVICORN_HTTP: ours refuses a body larger than max_rows
    # rows of data.resolution images can need with a 413, unread. SERVING_MODEL_CONFIG is the model_config
    # the scoring server loads the model with (load_model_with_mlflow_config): max_rows from these params,
    # not from those at registration.
    # MLflow drops a column the signature does not name, without a word to the client: the guard refuses it.
    columns, description = _model_info(model, uri)
    limits = {"max_rows": params.serve.max_rows, "resolution": params.data.resolution, "columns": columns,
              "description": description}
    env.update(UVICORN_HTTP="pipeline.serving:GuardedH11Protocol", GANS_SERVE_LIMITS=json.dumps(limits),
               SERVING_MODEL_CONFIG=json.dumps({"max_rows": params.serve.max_rows}))
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model, "--env-manager", "local",
           "-h", host, "-p", str(port)]
    print(f"serving {model} from {uri} on http://{host}:{port}/invocations "
          f"(what it takes: GET http://{host}:{port}/model)", file=sys.stderr)
    example = (description or {}).get("example_request") or serve_example(params.resolved.family.artifact)
    print('try: curl -s -X POST -H "Content-Type: application/json" '
          f"http://{host}:{port}/invocations -d '{example}'", file=sys.stderr)
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


def _model_info(model: str, uri: str) -> tuple[list[str] | None, dict[str, Any] | None]:
    """The input columns of ``model``'s signature and the description ``GET /model`` answers, or Nones when
    the model cannot be read here (``mlflow models serve`` then says why it cannot load it)."""
    import mlflow
    from mlflow.models import get_model_info

    from pipeline.serving import describe_model

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        info = get_model_info(model)
    except Exception:  # noqa: BLE001 - a missing model or store is reported by the server itself
        return None, None
    columns = None if info.signature is None else info.signature.inputs.input_names()
    version = info.registered_model_version
    name, alias = model.removeprefix("models:/").partition("@")[::2]
    if version is None and model.startswith("models:/") and alias:  # the version the alias names now: the one served
        with contextlib.suppress(Exception):
            version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
    return columns, describe_model(model, info, version=version)


def cmd_sample(args: argparse.Namespace) -> int:
    from gans.io import atomic_write
    from gans.sampling import check_truncation, image_grid, png_bytes

    params = _params(args)
    for flag, value in (("--count", args.count), ("--per-row", args.per_row)):
        if value < 1:
            raise ConfigError(f"{flag}: got {value}; expected an integer >= 1")
    if not 0 <= args.seed <= 2**63 - args.count:
        raise ConfigError(f"--seed: got {args.seed}; the seeds --seed .. --seed + --count - 1 must lie in "
                          "0..2^63 - 1")
    try:
        check_truncation(args.truncation, "--truncation")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    artifact = _artifact_file(args.checkpoint) if args.checkpoint else _champion_artifact(params)
    _check_sample_args(artifact, args)
    if artifact.kind == "translate":
        grid = _translation_grid(artifact, args)
    elif artifact.kind == "pair":  # each row of domain a above the domain-b images of the same seeds
        grid = artifact.pair_grid(list(range(args.seed, args.seed + args.count)), per_row=args.per_row,
                                  **_truncation(artifact, args))
    else:
        labels = None
        if artifact.num_classes:
            labels = [args.label if args.label is not None else i % artifact.num_classes for i in range(args.count)]
        mixing = {} if args.mix_seed is None else {"mix_seeds": [args.mix_seed] * args.count,
                                                   "mix_layers": [args.mix_layer] * args.count}
        grid = image_grid(artifact.generate(list(range(args.seed, args.seed + args.count)), labels,
                                            **_truncation(artifact, args), **mixing), per_row=args.per_row)
    atomic_write(args.out, lambda tmp: tmp.write_bytes(png_bytes(grid)))
    print(f"wrote {args.count} samples to {args.out}")
    return 0


EXPLORE_FLAGS = ("directions", "alpha", "probes", "invert", "invert_steps", "encoder_steps", "learned_steps")


def cmd_explore(args: argparse.Namespace) -> int:
    """The explore stage (models/generator.pt, params' explore section), or, with --checkpoint or --champion,
    the same exploration of another generator with the flags overriding the params."""
    from gans.io import file_hash
    from pipeline import explore, paths

    params = _params(args)
    given = [f for f in EXPLORE_FLAGS if getattr(args, f) is not None]
    if not (args.checkpoint or args.champion):
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise ConfigError(f"{flag}: the explore stage reads params.yaml (explore.{given[0]}); pass -S "
                              f"explore.{given[0]}=VALUE, or give --checkpoint FILE or --champion to explore another "
                              "generator with flags")
        from pipeline.stages import STAGES

        report = STAGES["explore"](params)
        print(explore.summary(report))
        return 0
    if args.checkpoint and args.champion:
        raise ConfigError("--checkpoint and --champion: give one (a generator file, or the registered champion)")
    artifact = _artifact_file(args.checkpoint) if args.checkpoint else _champion_artifact(params)
    cfg = params.explore
    values = {f: getattr(args, f) if getattr(args, f) is not None else getattr(cfg, f) for f in EXPLORE_FLAGS}
    report = explore.explore(artifact, count=values["directions"], alpha=values["alpha"], probes=values["probes"],
                             evaluator=paths.EVALUATOR, holdout=paths.PREPARED / "holdout.pt",
                             invert=values["invert"], invert_steps=values["invert_steps"],
                             encoder_steps=values["encoder_steps"], learned_steps=values["learned_steps"], seed=cfg.seed,
                             generator_hash=file_hash(args.checkpoint) if args.checkpoint else None,
                             names={f: "--" + f.replace("_", "-") for f in EXPLORE_FLAGS})
    print(explore.summary(report))
    return 0


def _check_sample_args(artifact: Any, args: argparse.Namespace) -> None:
    """--label, --direction, --truncation and --mix-seed/--mix-layer against what the model takes (a label outside
    its classes would index past the embedding, or be dropped without a word by an unconditional model)."""
    translate = artifact.kind == "translate"
    if args.label is not None:
        if translate:
            raise ConfigError("--label: a translation model takes no label (it translates images; see --direction)")
        classes = artifact.num_classes
        if not classes:
            raise ConfigError(f"--label: {artifact.variant} is unconditional (it was trained without labels); "
                              "drop --label")
        if not 0 <= args.label < classes:
            raise ConfigError(f"--label: got {args.label}; {artifact.variant} has classes 0..{classes - 1}")
    if args.direction is not None and not translate:
        raise ConfigError(f"--direction: {artifact.variant} generates from seeds; only translation models take a "
                          "direction")
    if args.truncation != 1 and not getattr(artifact, "truncates", False):
        what = "translates images" if translate else "has no latent to truncate"
        raise ConfigError(f"--truncation: {artifact.variant} ({artifact.family}) {what}; drop --truncation")
    if (args.mix_seed is None) != (args.mix_layer is None):
        given, lacking = ("--mix-seed", "--mix-layer") if args.mix_layer is None else ("--mix-layer", "--mix-seed")
        raise ConfigError(f"{given}: style mixing needs {lacking} too")
    if args.mix_seed is not None:
        layers = getattr(artifact, "mix_layers", 0)
        if not layers:
            raise ConfigError(f"--mix-seed: {artifact.variant} ({artifact.family}) has no style layers to mix; style "
                              "mixing needs a style-based generator (stylegan2)")
        if not 0 <= args.mix_seed <= 2**63 - 1:
            raise ConfigError(f"--mix-seed: got {args.mix_seed}; expected 0..2^63 - 1")
        if not 1 <= args.mix_layer < layers:
            raise ConfigError(f"--mix-layer: got {args.mix_layer}; {artifact.variant} has {layers} style layers, so "
                              f"1..{layers - 1}")


def _truncation(artifact: Any, args: argparse.Namespace) -> dict[str, float]:
    """``truncation=psi`` for a model that takes it (none for one that has no latent: --truncation 1 only)."""
    return {"truncation": args.truncation} if getattr(artifact, "truncates", False) else {}


def _translation_grid(artifact: Any, args: argparse.Namespace):
    """input | output (| target) rows over ``--count`` prepared holdout images, spread over the holdout."""
    from pipeline import paths
    from pipeline.files import load_dataset_file

    direction = args.direction or artifact.directions[0]
    if direction not in artifact.directions:
        raise ConfigError(f"--direction: got {direction!r}; this model translates {', '.join(artifact.directions)}")
    holdout = load_dataset_file(paths.PREPARED / "holdout.pt", "prepare")
    return artifact.sample_grid(holdout, direction=direction, count=args.count)


def _artifact_file(path: str):
    """The artifact in a model file, with a user error for a missing or foreign file."""
    from gans.families import load_artifact

    if not Path(path).is_file():
        raise ConfigError(f"--checkpoint: {path} does not exist")
    try:
        return load_artifact(path, "cpu")
    except Exception as err:
        raise ConfigError(f"--checkpoint: {path} is not a generator file written by the train stage "
                          f"({type(err).__name__})") from None


def _champion_artifact(params: Any, version: int | None = None):
    """The artifact of the champion of register.model_name, or of its version ``version``."""
    import mlflow

    from gans.families import load_artifact
    from pipeline import tracking

    tracking.configure(params.tracking)
    name = params.register.model_name
    uri = f"models:/{name}@champion" if version is None else f"models:/{name}/{version}"
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except Exception as err:
        if version is not None:
            raise ConfigError(f"--version: no version {version} of {name!r} in {params.tracking.uri} "
                              f"({type(err).__name__}); see its versions with mlflow ui or gans summary") from None
        raise ConfigError(f"register.model_name: no champion of {name!r} in "
                          f"{params.tracking.uri} ({type(err).__name__}); run the pipeline first") from None
    return load_artifact(next(Path(local).rglob("generator.pt")), "cpu")


def cmd_export(args: argparse.Namespace) -> int:
    from gans.export import FORMATS, OPSET, SUFFIX, ExportError, artifact_metadata, export_graph, outputs_of

    params = _params(args)
    if args.format not in FORMATS:
        raise ConfigError(f"--format: got {args.format!r}; choose {' or '.join(FORMATS)}")
    if args.checkpoint and args.version is not None:
        raise ConfigError("--checkpoint and --version: give one (a generator file, or a registered version)")
    if args.version is not None and args.version < 1:
        raise ConfigError(f"--version: got {args.version}; model versions are numbered from 1")
    artifact = _artifact_file(args.checkpoint) if args.checkpoint else _champion_artifact(params, args.version)
    graphs = {g.name: g for g in artifact.graphs()}
    if not graphs:
        why = getattr(artifact, "no_export", "it has no network to export")
        raise ConfigError(f"{artifact.variant} ({artifact.family}) has no portable export: {why}")
    if artifact.kind == "translate" and "generator" in graphs:  # one graph takes the target domain as an input
        if args.direction is not None:
            raise ConfigError(f"--direction: {artifact.variant} exports one graph for every domain (its 'target' "
                              "input); drop --direction")
        graph = graphs["generator"]
    elif artifact.kind in ("translate", "pair"):  # a graph per direction, or per domain of a pair
        verb = "translates" if artifact.kind == "translate" else "draws domains"
        if args.direction is None and len(artifact.directions) > 1:
            raise ConfigError(f"--direction: {artifact.variant} {verb} {' and '.join(artifact.directions)}; "
                              f"export one at a time (--direction {artifact.directions[0]})")
        direction = args.direction or artifact.directions[0]
        if direction not in artifact.directions:
            raise ConfigError(f"--direction: got {direction!r}; this model {verb} {', '.join(artifact.directions)}")
        graph = graphs[f"generator-{direction}"]
    else:
        if args.direction is not None:
            does = "classifies images" if artifact.kind == "classify" else "generates from seeds"
            raise ConfigError(f"--direction: {artifact.variant} {does}; only translation models take a direction "
                              "(and a CoGAN, a domain)")
        graph = graphs.get("generator") or graphs["classifier"]
    out = Path(args.out or f"exports/{graph.name}{SUFFIX[args.format]}")
    name = params.register.model_name
    source = args.checkpoint or (f"models:/{name}/{args.version}" if args.version is not None
                                 else f"models:/{name}@champion")
    try:
        diff = export_graph(graph, args.format, out, extra={**artifact_metadata(artifact), "source": source})
    except ExportError as err:
        raise ConfigError(f"--format {args.format}: {err}") from None
    what = f"ONNX opset {OPSET}, any batch size" if args.format == "onnx" else "TorchScript, any batch size"
    runtime = "ONNX Runtime" if args.format == "onnx" else "torch.jit"
    print(f"wrote {out} ({what}) from {source}")
    print("  inputs: " + "; ".join(f"{k}: {v}" for k, v in graph.metadata.items()))
    print("  outputs: " + "; ".join(f"{k}: {v}" for k, v in outputs_of(graph).items()))
    print(f"  checked: max |{runtime} - PyTorch| = {diff:.2g} on 3 random inputs")
    return 0


def cmd_variants(args: argparse.Namespace) -> int:
    from gans.families import FAMILIES

    if args.set:
        path, _ = args.set[0].partition("=")[::2]
        raise ConfigError(f"{path}: gans variants reads no params (it lists the presets); drop -S")
    for family in FAMILIES.values():
        order = "higher" if family.higher_is_better else "lower"
        print(f"== {family.name}: artifact {family.artifact}, trains on {' or '.join(family.layouts)} data, "
              f"champion by {family.primary_metric} ({order} is better)")
        for name, preset in family.presets.items():
            comps = ", ".join(f"{k}={val}" for k, val in family.components(preset).items())
            print(f"{name:12s} {comps}\n{'':12s} {preset.paper}")
    return 0


def _metrics_line(ev: dict[str, Any]) -> str:
    """The family's headline metrics of an eval.json, in one line."""
    from gans.families import family_named

    family = family_named(ev.get("family", "noise-to-image"))
    cells = [f"{m.label} {ev[m.key]:{m.fmt}}" for m in family.headline if isinstance(ev.get(m.key), (int, float))]
    return "  ".join(cells) + f"  ({ev['extractor']} features, {ev['num_samples']} samples)"


def serve_example(kind: str, directions: list[str] | None = None, column: str = "direction") -> str:
    """A request body for a model of ``kind`` (a translator's first direction or domain: a2b, x4, ...)."""
    if kind == "translate":
        return json.dumps({"dataframe_records": [{"image": "<base64 PNG>", column: (directions or ["a2b"])[0]}]})
    if kind == "classify":
        return json.dumps({"dataframe_records": [{"image": "<base64 PNG>"}]})
    return json.dumps({"dataframe_records": [{"seed": 0}]})


def _summary_example(ev: dict[str, Any]) -> str:
    if ev.get("domains"):
        return serve_example("translate", ev["domains"], "domain")
    return serve_example(ev.get("artifact", "generate"), ev.get("directions"))


def cmd_repair_lock(args: argparse.Namespace) -> int:
    from pipeline.dvcrun import repair_lock

    done = repair_lock(Path.cwd())
    print(done or "dvc.lock: reads fine (or there is none yet), nothing to repair")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from pipeline import paths
    from pipeline.files import read_json
    from pipeline.tracking import ui_links

    params = _params(args)
    ev = read_json(paths.EVAL_METRICS, "evaluate") if paths.EVAL_METRICS.is_file() else None
    tr = read_json(paths.TRAIN_METRICS, "train") if paths.TRAIN_METRICS.is_file() else None
    reg = read_json(paths.REGISTER_METRICS, "register") if paths.REGISTER_METRICS.is_file() else None
    if not ev:
        raise ConfigError("no metrics/eval.json yet: run `dvc repro` first")
    if tr:
        print(f"trained {tr['variant']} for {tr['steps']} steps at {tr['img_per_s']:.0f} img/s (ADA p={tr['ada_p']:.3f})")
    print(_metrics_line(ev))
    if reg:
        state = "champion" if reg["champion"] else f"not champion ({reg['reason']})"
        print(f"registered {reg['model_name']} version {reg['version']}: {state}")
    print(f"sample grid: {paths.GRID.resolve()}")
    uri = params.tracking.uri
    print(f"compare runs: open {uri}" if uri.startswith(("http://", "https://"))
          else f"compare runs: mlflow ui --backend-store-uri {uri}")
    for what, url in ui_links(uri, (tr or {}).get("run_id"), *((reg["model_name"], reg["version"]) if reg else ())):
        print(f"{what}: {url}")
    print(f"serve the champion: gans serve   (then POST /invocations {_summary_example(ev)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gans", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help="override a param, e.g. -S train.steps=100")
        p.set_defaults(fn=fn)
        return p

    for stage, text in [("prepare", "load and split the data source"), ("augment", "static augmentation + spec"),
                        ("evaluator", "train the domain evaluator"), ("train", "train the generator (resumable)"),
                        ("evaluate", "FID/IS/KID/PR and the sample grid"), ("register", "register in MLflow")]:
        add(stage, _stage(stage), text)
    add("flow", cmd_flow, "run every stage as a Prefect flow")
    p = add("sweep", cmd_sweep, "run every combination of comma-separated -S values as DVC experiments, "
                                 "nested under one MLflow run, and compare them")
    p.add_argument("--jobs", "-j", type=int, default=1, help="experiments at a time (default 1)")
    p.add_argument("--pool", help="run each configuration as a flow run on this Prefect work pool (its workers "
                                  "run them in parallel) instead of DVC's local queue")
    p.add_argument("--heartbeat", type=int, help="with --pool: seconds between a run's heartbeats (default 60, "
                                                 "at least 30); a run silent for 2x that + 10 s is marked crashed")
    p = add("deploy", cmd_deploy, "serve a scheduled Prefect deployment of the flow, or deploy it on a work pool "
                                   "(--pool) for workers (needs a Prefect server)")
    p.add_argument("--cron", help="cron schedule, e.g. '0 3 * * *'")
    p.add_argument("--interval", type=float, help="schedule every N seconds")
    p.add_argument("--name", default="scheduled-retraining")
    p.add_argument("--pool", help="deploy on this Prefect work pool (workers run it, pinned to the git commit) "
                                  "instead of serving from this process")
    p.add_argument("--workdir", help="with --pool: an existing folder on each worker's machine where runs keep the "
                                     "clone, outputs and checkpoints (default: a temporary folder per run)")
    p.add_argument("--heartbeat", type=int, help="with --pool: seconds between a run's heartbeats (default 60, "
                                                 "at least 30); a run silent for 2x that + 10 s is marked crashed")
    p = add("serve", cmd_serve, "serve the champion generator with MLflow")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--model", help="model URI (default: models:/<register.model_name>@champion)")
    p = add("sample", cmd_sample, "write a PNG grid from the champion or a generator file")
    p.add_argument("--checkpoint", help="a generator file (models/generator.pt) instead of the champion")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", type=int)
    p.add_argument("--direction", help="a translation model's direction (a2b or b2a; default: its first)")
    p.add_argument("--truncation", type=float, default=1.0,
                   help="psi in 0..1: scale each latent towards the mean latent (1: none; lower: cleaner, less varied)")
    p.add_argument("--mix-seed", type=int,
                   help="style-based generators: the seed whose styles replace each sample's from --mix-layer on")
    p.add_argument("--mix-layer", type=int, help="the first style layer --mix-seed's styles replace (1..layers - 1)")
    p.add_argument("--per-row", type=int, default=8)
    p.add_argument("--out", default="samples/sample.png")
    p = add("explore", cmd_explore, "the explore stage: interpolation grids, interpretable latent directions "
                                     "(SeFa, PCA) against random ones, and holdout inversions of the trained generator "
                                     "(or of --checkpoint FILE, or of the --champion)")
    p.add_argument("--checkpoint", help="a generator file instead of models/generator.pt (flags then override params)")
    p.add_argument("--champion", action="store_true", help="the registered champion instead of models/generator.pt")
    p.add_argument("--directions", type=int, help="directions per method (params: explore.directions, 5)")
    p.add_argument("--alpha", type=float, help="the step whose effect is measured (explore.alpha, 3)")
    p.add_argument("--probes", type=int, help="latents the effects are averaged over (explore.probes, 64)")
    p.add_argument("--invert", type=int, help="holdout images to invert (explore.invert, 64; 0: none)")
    p.add_argument("--invert-steps", type=int, help="gradient steps on z per inversion (explore.invert_steps, 200)")
    p.add_argument("--encoder-steps", type=int,
                   help="training steps of the encoder that starts each inversion (explore.encoder_steps, 500)")
    p.add_argument("--learned-steps", type=int,
                   help="training steps of the learned directions (explore.learned_steps, 1000; 0: none)")
    p = add("export", cmd_export, "export the champion (or a version, or a generator file) as ONNX or TorchScript")
    p.add_argument("--format", default="onnx", help="onnx (default) or torchscript")
    p.add_argument("--version", type=int, help="a registered version of register.model_name instead of the champion")
    p.add_argument("--checkpoint", help="a generator file (models/generator.pt) instead of the champion")
    p.add_argument("--direction", help="a translation model's direction (a2b or b2a), or a CoGAN's domain (a or b)")
    p.add_argument("--out", help="the file to write (default: exports/generator[-DIRECTION].onnx or .pt)")
    add("variants", cmd_variants, "list the variant presets and their components")
    add("summary", cmd_summary, "print the latest run's metrics and what to do next")
    p = sub.add_parser("repair-lock", help="move an unreadable dvc.lock (cut by a kill while DVC wrote it) aside")
    p.set_defaults(fn=cmd_repair_lock)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline.stages import StageError
    from pipeline.tracking import ServiceUnavailable

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (*USER_ERRORS, StageError, ServiceUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
