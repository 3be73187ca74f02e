"""Semi-supervised classification from few labels: the semi-supervised presets trained on mnist5k with
``data.labels_per_class`` labels per class kept (the rest of the training images unlabelled), each beside its
baseline (the same classifier trained on the labelled images alone, in the same run); holdout error, the
generator's FID/IS, and training speed. Writes the section "Semi-supervised classification" of
bench/RESULTS.md.

    python bench/semisup.py [--labels 10] [--steps 1500] [--width 32] [--samples 2000]
                            [--presets improvedgan,catgan,triplegan]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, write_section  # noqa: E402
from gans.families import family_of  # noqa: E402
from pipeline import stages  # noqa: E402
from pipeline.params import load_params  # noqa: E402

WORK = ROOT / "bench/out/semisup"
PUBLISHED = ("Published test errors with 100 labels on MNIST (10 per class; 60,000 training images at 28x28, "
             "far longer training): ImprovedGAN 0.93% (Salimans et al. 2016), CatGAN 1.91% (Springenberg 2016), "
             "Triple-GAN 0.91% (Li et al. 2017). Here: 4,500 training images at 32x32 and a budget of minutes on "
             "a CPU, so only the ratio to the baseline beside each row carries over.")


def overrides(args: argparse.Namespace) -> list[str]:
    return [f"train.steps={args.steps}", f"model.width={args.width}", f"evaluate.num_samples={args.samples}",
            f"data.labels_per_class={args.labels}", f"tracking.uri=sqlite:///{WORK}/mlflow.db",
            "train.sample_every=100000", f"train.checkpoint_every={args.steps}", "train.eval_every=0",
            "augment.ada.enabled=false"]


def run(name: str, args: argparse.Namespace) -> dict:
    params = load_params(ROOT / "params.yaml", overrides(args) + [f"model.variant={name}"])
    started = time.perf_counter()
    stages.augment(params)
    train = stages.train(params)
    ev = stages.evaluate(params)
    return {"variant": name, "known": ev["known_labels"], "error": ev["error"], "baseline": ev["baseline_error"],
            "fid": ev["fid"], "is": ev["is"], "acc": ev.get("conditional_accuracy"), "img_per_s": train["img_per_s"],
            "train_s": train["seconds"], "seconds": time.perf_counter() - started}


def table(rows: list[dict]) -> str:
    lines = ["| variant | labelled images | holdout error | baseline error (labelled images only) | error reduction "
             "| generator FID (domain) | IS | conditional accuracy | train img/s | train s | total s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        acc = "" if r["acc"] is None else f"{r['acc']:.3f}"
        lines.append(f"| {r['variant']} | {r['known']} | {r['error']:.4f} | {r['baseline']:.4f} | "
                     f"{r['baseline'] - r['error']:+.4f} | {r['fid']:.2f} | {r['is']:.2f} | {acc} | "
                     f"{r['img_per_s']:.0f} | {r['train_s']:.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=10, help="labels kept per class (data.labels_per_class)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--presets", default="improvedgan,catgan,triplegan")
    ap.add_argument("--title", default="Semi-supervised classification")
    args = ap.parse_args()
    names = [n for n in args.presets.split(",") if n]
    for n in names:
        family_of(n)  # an unknown preset fails here, naming the known ones
    WORK.mkdir(parents=True, exist_ok=True)
    os.chdir(WORK)
    params = load_params(ROOT / "params.yaml", overrides(args) + [f"model.variant={names[0]}"])
    stages.prepare(params)  # the labelled subset depends on --labels: always prepared afresh
    if not Path("models/evaluator.pt").is_file():
        stages.evaluator(params)
    load = os.getloadavg()
    command = (f"python bench/semisup.py --labels {args.labels} --steps {args.steps} --width {args.width} "
               f"--samples {args.samples} --presets {','.join(names)}")
    rows: list[dict] = []
    for name in names:
        rows.append(run(name, args))
        print(json.dumps(rows[-1]), flush=True)
        body = (f"Machine: {machine()}; load average at the start {load[0]:.1f}. Command: `{command}`. mnist5k "
                f"(4,500 training images, 32x32) with {args.labels} labels per class kept (data.seed 0); each preset "
                f"trained {args.steps} steps at batch 64 (a batch of labelled and a batch of unlabelled images per "
                f"update), width {args.width}, ADA off, train.precision auto. Errors on the 500 holdout images, of "
                "the EMA classifier and of the baseline trained in the same run on the labelled images alone (same "
                f"network, optimiser and batches). FID/IS: {args.samples} samples of the generator against the "
                "holdout with the domain evaluator. Train img/s counts every batch a phase draws (the GAN's "
                "phases and the baseline's), as for the other multi-phase families.\n\n" + table(rows) + "\n\n" + PUBLISHED)
        write_section(args.title, body)


if __name__ == "__main__":
    main()
