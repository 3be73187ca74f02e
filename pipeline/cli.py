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

from gans.config import ConfigError
from gans.data import DataError
from gans.trainer import TrainingDiverged

USER_ERRORS = (ConfigError, DataError, TrainingDiverged)


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
    print('try: curl -s -X POST -H "Content-Type: application/json" '
          f"http://{host}:{port}/invocations -d '{{\"dataframe_records\": [{{\"seed\": 0}}]}}'", file=sys.stderr)
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from gans.io import atomic_write
    from gans.sampling import generate, image_grid, png_bytes

    params = _params(args)
    if args.checkpoint:
        generator, spec = _generator_file(args.checkpoint)
    else:
        generator, spec = _champion_generator(params)
    labels = None
    if spec["num_classes"]:
        labels = [args.label if args.label is not None else i % spec["num_classes"] for i in range(args.count)]
    seeds = list(range(args.seed, args.seed + args.count))
    images = generate(generator, seeds, labels, z_dim=spec["z_dim"], device=torch.device("cpu"))
    grid = image_grid(images, per_row=args.per_row)
    atomic_write(args.out, lambda tmp: tmp.write_bytes(png_bytes(grid)))
    print(f"wrote {args.count} samples to {args.out}")
    return 0


def _generator_file(path: str):
    """(generator, spec) from a generator file, with a user error for a missing or foreign file."""
    from gans.trainer import load_generator

    if not Path(path).is_file():
        raise ConfigError(f"--checkpoint: {path} does not exist")
    try:
        generator, payload = load_generator(path, "cpu")
    except Exception as err:
        raise ConfigError(f"--checkpoint: {path} is not a generator file written by the train stage "
                          f"({type(err).__name__})") from None
    return generator, payload["spec"]


def _champion_generator(params: Any):
    import mlflow

    from pipeline import tracking
    from gans.trainer import load_generator

    tracking.configure(params.tracking)
    uri = f"models:/{params.register.model_name}@champion"
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except Exception as err:
        raise ConfigError(f"register.model_name: no champion of {params.register.model_name!r} in "
                          f"{params.tracking.uri} ({type(err).__name__}); run the pipeline first") from None
    path = next(Path(local).rglob("generator.pt"))
    generator, payload = load_generator(path, "cpu")
    return generator, payload["spec"]


def cmd_variants(args: argparse.Namespace) -> int:
    from gans.variants import PRESETS

    for name, v in PRESETS.items():
        comps = ", ".join(f"{k}={val}" for k, val in v.components().items())
        print(f"{name:12s} {comps}\n{'':12s} {v.paper}")
    return 0


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
    print(f"FID {ev['fid']:.3f}  IS {ev['is']:.3f}  KID {ev['kid']:.5f}  precision {ev['precision']:.3f}  "
          f"recall {ev['recall']:.3f}  ({ev['extractor']} features, {ev['num_samples']} samples)")
    if reg:
        state = "champion" if reg["champion"] else f"not champion ({reg['reason']})"
        print(f"registered {reg['model_name']} version {reg['version']}: {state}")
    print(f"sample grid: {paths.GRID.resolve()}")
    uri = params.tracking.uri
    print(f"compare runs: open {uri}" if uri.startswith(("http://", "https://"))
          else f"compare runs: mlflow ui --backend-store-uri {uri}")
    print("serve the champion: gans serve   (then POST /invocations {\"dataframe_records\": [{\"seed\": 0}]})")
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
