"""Train every preset on mnist5k with the same step budget; write a table to bench/RESULTS.md.

    python bench/variants.py [--steps 1500] [--width 64] [--presets dcgan,wgan-gp] [--title ...]

Each preset runs through the pipeline's own train and evaluate stages in a
scratch folder (bench/out/variants), sharing one prepared data set and one
domain evaluator, so the FIDs are comparable with each other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, write_section  # noqa: E402
from gans.variants import PRESETS  # noqa: E402
from pipeline import stages  # noqa: E402
from pipeline.params import load_params  # noqa: E402


def run_preset(name: str, base: list[str], work: Path) -> dict:
    params = load_params(ROOT / "params.yaml", base + [f"model.variant={name}"])
    started = time.perf_counter()
    train = stages.train(params)
    ev = stages.evaluate(params)
    history = _history(work)
    grad = [r["grad_norm"] for r in history if r.get("grad_norm") not in (None, "")]
    return {"variant": name, "fid": ev["fid"], "is": ev["is"], "kid": ev["kid"],
            "cond": ev.get("conditional_accuracy", ev.get("cluster_purity")),
            "cond_kind": "accuracy" if "conditional_accuracy" in ev else "purity" if "cluster_purity" in ev else "",
            "img_per_s": train["img_per_s"], "seconds": time.perf_counter() - started,
            "grad_norm": statistics.fmean(grad[-10:]) if grad else None}


def _history(work: Path) -> list[dict]:

    # grad_norm is not in plots/train.csv; read it from the newest checkpoint's history.
    from gans.io import load_torch

    ckpts = sorted((work / "models/checkpoints").glob("ckpt-*.pt"))
    return load_torch(ckpts[-1])["history"] if ckpts else []


def table(rows: list[dict]) -> str:
    lines = ["| variant | domain FID | IS | KID | conditional acc. / InfoGAN purity | critic grad norm | img/s | seconds |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        cond = f"{r['cond']:.3f} ({r['cond_kind']})" if r["cond"] is not None else ""
        grad = f"{r['grad_norm']:.3f}" if r["grad_norm"] is not None else ""
        lines.append(f"| {r['variant']} | {r['fid']:.2f} | {r['is']:.2f} | {r['kid']:.3f} | {cond} | {grad} | "
                     f"{r['img_per_s']:.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--title", default="Variants")
    args = ap.parse_args()
    work = ROOT / "bench/out/variants"
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    base = [f"train.steps={args.steps}", f"model.width={args.width}", f"evaluate.num_samples={args.samples}",
            f"tracking.uri=sqlite:///{work}/mlflow.db", "train.sample_every=100000",
            f"train.checkpoint_every={args.steps}"]
    params = load_params(ROOT / "params.yaml", base)
    if not Path("models/evaluator.pt").is_file():
        stages.prepare(params)
        stages.augment(params)
        stages.evaluator(params)
    rows = []
    for name in args.presets.split(","):
        rows.append(run_preset(name, base, work))
        print(json.dumps(rows[-1]), flush=True)
        body = (f"Machine: {machine()}. Workload: each preset trained on mnist5k (4,500 training images, 32x32) "
                f"for {args.steps} generator steps at batch 64, width {args.width}, ADA on (params.yaml defaults), "
                f"then evaluated on {args.samples} samples against the 500 holdout images with the domain "
                f"evaluator. Command: `python bench/variants.py --steps {args.steps} --width {args.width}`.\n\n"
                + table(rows))
        write_section(args.title, body)


if __name__ == "__main__":
    main()
