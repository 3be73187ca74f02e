"""The default run's ablation: what each change to params.yaml buys in FID at (about) the same wall time.

    python bench/defaults.py [--seeds 0] [--samples 5000] [--config NAME=key=value,key=value ...]

Each configuration is params.yaml plus its overrides, run through the pipeline's own augment, train and
evaluate stages in a scratch folder (bench/out/defaults), every run from scratch. The prepared data, the
domain evaluator and the holdout are shared, so every FID is comparable. Periodic evaluation and sample grids
are off (equal work everywhere; the default run's periodic checks cost a few seconds). With several seeds the
configurations rotate within each seed so that all see the same machine. Writes the section "Default run
ablation" of bench/RESULTS.md (or --title).

Without --config it runs the ablation behind the current defaults (see CONFIGS).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, stage_workspace, write_section  # noqa: E402
from gans.trainer import cpu_has_native_bf16  # noqa: E402
from pipeline import paths, stages  # noqa: E402
from pipeline.params import load_params  # noqa: E402

# name -> overrides over params.yaml (the first is the reference the others are read against)
CONFIGS: dict[str, list[str]] = {
    "params.yaml": [],
}


def parse_config(text: str) -> tuple[str, list[str]]:
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"error: --config {text!r}: expected NAME=key=value[,key=value...]")
    return name, [kv for kv in rest.split(",") if kv]


def run(base: list[str], name: str, overrides: list[str], seed: int) -> dict:
    params = load_params(ROOT / "params.yaml", base + overrides + [f"train.seed={seed}"])
    params = load_params(ROOT / "params.yaml", base + overrides + [f"train.seed={seed}",
                                                                    f"train.checkpoint_every={params.train.steps}"])
    shutil.rmtree(paths.CHECKPOINTS, ignore_errors=True)  # every run starts fresh
    stages.augment(params)
    started = time.perf_counter()
    train = stages.train(params)
    seconds = time.perf_counter() - started
    ev = stages.evaluate(params)
    return {"config": name, "seed": seed, "fid": ev["fid"], "kid": ev["kid"], "is": ev["is"],
            "steps": params.train.steps, "batch": params.train.batch_size, "img_per_s": train["img_per_s"],
            "train_s": seconds, "load": os.getloadavg()[0]}


def table(rows: list[dict], configs: dict[str, list[str]]) -> str:
    lines = ["| configuration | overrides | seed | steps x batch | FID | KID | IS | train img/s | train s | load |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['config']} | {', '.join(f'`{o}`' for o in configs[r['config']]) or 'none'} | {r['seed']} | "
              f"{r['steps']} x {r['batch']} | {r['fid']:.2f} | {r['kid']:.3f} | {r['is']:.3f} | {r['img_per_s']:.0f} | "
              f"{r['train_s']:.0f} | {r['load']:.1f} |" for r in rows]
    out = "\n".join(lines)
    seeds = sorted({r["seed"] for r in rows})
    if len(seeds) > 1:
        out += "\n\n| configuration | runs | FID mean ± sd | train s mean |\n| --- | ---: | ---: | ---: |\n"
        for name in configs:
            mine = [r for r in rows if r["config"] == name]
            if mine:
                fids = [r["fid"] for r in mine]
                sd = f" ± {statistics.stdev(fids):.2f}" if len(fids) > 1 else ""
                out += (f"| {name} | {len(mine)} | {statistics.mean(fids):.2f}{sd} | "
                        f"{statistics.mean(r['train_s'] for r in mine):.0f} |\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--config", action="append", default=[], help="NAME=key=value,key=value (repeatable)")
    ap.add_argument("--title", default="Default run ablation")
    ap.add_argument("--note", default="", help="a paragraph written under the table")
    args = ap.parse_args()
    configs = dict(parse_config(c) for c in args.config) if args.config else CONFIGS
    base = stage_workspace("defaults", args.samples)
    params = load_params(ROOT / "params.yaml", base)
    command = "python " + shlex.join(["bench/defaults.py", *sys.argv[1:]])
    head = (f"Machine: {machine()}; native bf16: {cpu_has_native_bf16()}. Command: `{command}`. Each configuration "
            f"is params.yaml plus its overrides ({params.model.variant}, width {params.model.width}, "
            f"{params.data.resolution}x{params.data.resolution} {params.data.source} unless overridden), trained from "
            f"scratch through the augment and train stages and scored by the evaluate stage: domain FID/KID/IS of the "
            f"EMA generator on {args.samples} samples against the 500 holdout images. Periodic evaluation and grids "
            f"off. Load: the 1-minute load average when each run ended.\n\n")
    rows = []
    for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
        names = list(configs)
        names = names[i % len(names):] + names[:i % len(names)]
        for name in names:
            rows.append(run(base, name, configs[name], seed))
            print(json.dumps(rows[-1]), flush=True)
            write_section(args.title, head + table(rows, configs) + ("\n" + args.note if args.note else ""))


if __name__ == "__main__":
    main()
