"""bf16 autocast against fp32 on the CPU: the default run's quality at equal steps, and its speed.

    python bench/precision.py [--seeds 0,1,2] [--steps N] [--samples 5000]

The default run (params.yaml: dcgan, width 64, 32x32 mnist5k, ADA as configured) through the pipeline's own
train and evaluate stages in a scratch folder (bench/out/precision), once per seed and precision, the two
precisions alternating (fp32 first for the first seed, bf16 first for the next, ...) so that both see the
same machine. Periodic evaluation and sample grids are off (equal work in both). The prepared data, the
domain evaluator and the holdout are shared: every FID is comparable. Writes the section "Precision on the
CPU" of bench/RESULTS.md.
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


def run(base: list[str], seed: int, precision: str) -> dict:
    params = load_params(ROOT / "params.yaml", base + [f"train.seed={seed}", f"train.precision={precision}"])
    shutil.rmtree(paths.CHECKPOINTS, ignore_errors=True)  # every run starts fresh
    started = time.perf_counter()
    train = stages.train(params)
    seconds = time.perf_counter() - started
    ev = stages.evaluate(params)
    return {"seed": seed, "precision": precision, "fid": ev["fid"], "kid": ev["kid"], "is": ev["is"],
            "img_per_s": train["img_per_s"], "train_s": seconds, "load": os.getloadavg()[0]}


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| seed | precision | FID | KID | IS | train img/s | train s | load |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['seed']} | {r['precision']} | {r['fid']:.2f} | {r['kid']:.4f} | {r['is']:.3f} | {r['img_per_s']:.0f} | "
              f"{r['train_s']:.0f} | {r['load']:.1f} |" for r in rows]
    out = "\n".join(lines)
    by = {p: [r for r in rows if r["precision"] == p] for p in ("fp32", "bf16")}
    if all(by.values()):
        seeds = sorted({r["seed"] for r in by["fp32"]} & {r["seed"] for r in by["bf16"]})
        pair = {s: {r["precision"]: r for r in rows if r["seed"] == s} for s in seeds}
        ratio = statistics.median(pair[s]["bf16"]["img_per_s"] / pair[s]["fp32"]["img_per_s"] for s in seeds)
        out += ("\n\n| precision | runs | FID mean ± sd | train img/s mean |\n| --- | ---: | ---: | ---: |\n" + "\n".join(
            f"| {p} | {len(v)} | {_mean_sd([r['fid'] for r in v])} | {statistics.mean(r['img_per_s'] for r in v):.0f} |"
            for p, v in by.items()) + f"\n\nbf16 / fp32 training img/s, median over seeds of the paired ratio: "
            f"**{ratio:.2f}**.")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, help="training steps (default: params.yaml's train.steps)")
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--title", default="Precision on the CPU")
    args = ap.parse_args()
    base = stage_workspace("precision", args.samples)
    if args.steps:
        base.append(f"train.steps={args.steps}")
    params = load_params(ROOT / "params.yaml", base)
    base.append(f"train.checkpoint_every={params.train.steps}")
    stages.augment(params)
    command = "python " + shlex.join(["bench/precision.py", *sys.argv[1:]])
    head = (f"Machine: {machine()}; native bf16: {cpu_has_native_bf16()}. Command: `{command}`. The default run "
            f"({params.model.variant}, width {params.model.width}, {params.data.resolution}x{params.data.resolution} "
            f"{params.data.source}, batch {params.train.batch_size}, ADA {'on' if params.augment.ada.enabled else 'off'}) "
            f"for {params.train.steps} steps per run through the train and evaluate stages; precisions alternate "
            f"within each seed; domain FID/KID/IS on {args.samples} samples against the 500 holdout images. Load: "
            f"the 1-minute load average when each run ended.\n\n")
    rows = []
    for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
        for precision in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
            rows.append(run(base, seed, precision))
            print(json.dumps(rows[-1]), flush=True)
            write_section(args.title, head + table(rows))


if __name__ == "__main__":
    main()
