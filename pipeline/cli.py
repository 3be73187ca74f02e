"""The ``gans`` command: stage entrypoints, the Prefect flow, deployment, serving and sampling.

Every command takes ``--params FILE`` and ``-S key=value`` overrides. User
errors (bad params, missing inputs, unreadable data) print one line naming
the problem and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from gans.checkpoints import TrainingBusy
from gans.config import ConfigError
from gans.data import DataError
from gans.io import WriteFailed
from gans.trainer import TrainingDiverged

USER_ERRORS = (ConfigError, DataError, TrainingDiverged, TrainingBusy, WriteFailed)


def _params(args: argparse.Namespace):
    from pipeline.params import load_params

    return load_params(args.params, args.set or ())


def _stage(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from pipeline.stages import STAGES

        params = _params(args)
        result = STAGES[name](params)
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
        return 0

    return run


def cmd_flow(args: argparse.Namespace) -> int:
    from pipeline.flows import gan_pipeline

    _params(args)  # fail before Prefect starts
    result = gan_pipeline(params_file=args.params, overrides=list(args.set or ()))
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pipeline.sweep import run_sweep

    sweep = run_sweep(args.params, list(args.set or ()), jobs=args.jobs)
    print(sweep.table())
    print(f"\nMLflow: parent run {sweep.parent_run_id} (nested runs per experiment); "
          "DVC: dvc exp show, dvc metrics diff EXP1 EXP2, dvc plots diff EXP1 EXP2")
    return 0 if all(r.ok for r in sweep.results) else 1


def cmd_deploy(args: argparse.Namespace) -> int:
    from pipeline.flows import serve_deployment

    _params(args)
    if not args.cron and not args.interval:
        raise ConfigError("deploy: give --cron EXPR or --interval SECONDS")
    serve_deployment(name=args.name, cron=args.cron, interval=args.interval,
                     params_file=str(Path(args.params).resolve()), overrides=list(args.set or ()))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pipeline.tracking import resolve_uri

    params = _params(args)
    uri = resolve_uri(params.tracking.uri)
    model = args.model or f"models:/{params.register.model_name}@champion"
    host, port = args.host or params.serve.host, args.port or params.serve.port
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model, "--env-manager", "local",
           "-h", host, "-p", str(port)]
    print(f"serving {model} from {uri} on http://{host}:{port}/invocations", file=sys.stderr)
    example = SERVE_EXAMPLES[params.resolved.family.artifact]
    print('try: curl -s -X POST -H "Content-Type: application/json" '
          f"http://{host}:{port}/invocations -d '{example}'", file=sys.stderr)
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


def cmd_sample(args: argparse.Namespace) -> int:
    from gans.io import atomic_write
    from gans.sampling import image_grid, png_bytes

    params = _params(args)
    artifact = _artifact_file(args.checkpoint) if args.checkpoint else _champion_artifact(params)
    if artifact.kind == "translate":
        grid = _translation_grid(artifact, args)
    else:
        labels = None
        if artifact.num_classes:
            labels = [args.label if args.label is not None else i % artifact.num_classes for i in range(args.count)]
        grid = image_grid(artifact.generate(list(range(args.seed, args.seed + args.count)), labels),
                          per_row=args.per_row)
    atomic_write(args.out, lambda tmp: tmp.write_bytes(png_bytes(grid)))
    print(f"wrote {args.count} samples to {args.out}")
    return 0


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


def _champion_artifact(params: Any):
    import mlflow

    from gans.families import load_artifact
    from pipeline import tracking

    tracking.configure(params.tracking)
    uri = f"models:/{params.register.model_name}@champion"
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except Exception as err:
        raise ConfigError(f"register.model_name: no champion of {params.register.model_name!r} in "
                          f"{params.tracking.uri} ({type(err).__name__}); run the pipeline first") from None
    return load_artifact(next(Path(local).rglob("generator.pt")), "cpu")


def cmd_variants(args: argparse.Namespace) -> int:
    from gans.families import FAMILIES

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


SERVE_EXAMPLES = {"generate": '{"dataframe_records": [{"seed": 0}]}',
                  "translate": '{"dataframe_records": [{"image": "<base64 PNG>", "direction": "a2b"}]}'}


def cmd_summary(args: argparse.Namespace) -> int:
    from pipeline import paths

    params = _params(args)
    ev = json.loads(paths.EVAL_METRICS.read_text()) if paths.EVAL_METRICS.is_file() else None
    tr = json.loads(paths.TRAIN_METRICS.read_text()) if paths.TRAIN_METRICS.is_file() else None
    reg = json.loads(paths.REGISTER_METRICS.read_text()) if paths.REGISTER_METRICS.is_file() else None
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
    print(f"serve the champion: gans serve   (then POST /invocations {SERVE_EXAMPLES[ev.get('artifact', 'generate')]})")
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
    p = add("deploy", cmd_deploy, "serve a scheduled Prefect deployment of the flow (needs a Prefect server)")
    p.add_argument("--cron", help="cron schedule, e.g. '0 3 * * *'")
    p.add_argument("--interval", type=float, help="schedule every N seconds")
    p.add_argument("--name", default="scheduled-retraining")
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
    p.add_argument("--per-row", type=int, default=8)
    p.add_argument("--out", default="samples/sample.png")
    add("variants", cmd_variants, "list the variant presets and their components")
    add("summary", cmd_summary, "print the latest run's metrics and what to do next")
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline.stages import StageError
    from pipeline.tracking import TrackingUnavailable

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (*USER_ERRORS, StageError, TrackingUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
