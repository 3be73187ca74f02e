"""Semi-supervised classification from few labels: the semi-supervised presets trained on mnist5k with
``data.labels_per_class`` labels per class kept (the rest of the training images unlabelled), each beside its
baseline (the same classifier trained on the labelled images alone, in the same run); holdout error, the
generator's FID/IS, and training speed. Writes the section "Semi-supervised classification" of
bench/RESULTS.md.

    python bench/semisup.py [--labels 10] [--steps 1500] [--width 32] [--samples 2000]
                            [--presets improvedgan,catgan,triplegan] [--draws 3] [--eval-every N]

With --eval-every N the runs score their EMA classifier on the holdout every N steps as well (the pipeline's
periodic evaluation), and each row lists those errors: how far from converged a budget leaves a preset.

With --draws N, each preset trains once per label draw (data.seed 0..N-1: each seed its own holdout split and
labelled subset, prepared in its own folder) and the table gives the mean and the spread (min-max) over draws.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, write_section  # noqa: E402
from gans.families import family_of  # noqa: E402
from pipeline import paths, stages  # noqa: E402
from pipeline.params import load_params  # noqa: E402

WORK = ROOT / "bench/out/semisup"
PUBLISHED = ("Published test errors with 100 labels on MNIST (10 per class; 60,000 training images at 28x28, "
             "far longer training): ImprovedGAN 0.93% (Salimans et al. 2016), CatGAN 1.91% (Springenberg 2016), "
             "Triple-GAN 0.91% (Li et al. 2017). Here: 4,500 training images at 32x32 and a budget of minutes on "
             "a CPU, so only the ratio to the baseline beside each row carries over.")


def overrides(args: argparse.Namespace) -> list[str]:
    return [f"train.steps={args.steps}", f"model.width={args.width}", f"evaluate.num_samples={args.samples}",
            f"data.labels_per_class={args.labels}", f"tracking.uri=sqlite:///{WORK}/mlflow.db",
            "train.sample_every=100000", f"train.checkpoint_every={min(args.steps, 2000)}",
            f"train.eval_every={args.eval_every}", "augment.ada.enabled=false"]


def run(name: str, args: argparse.Namespace, seed: int) -> dict:
    params = load_params(ROOT / "params.yaml", overrides(args) + [f"model.variant={name}", f"data.seed={seed}"])
    started = time.perf_counter()
    stages.augment(params)
    train = stages.train(params)
    ev = stages.evaluate(params)
    return {"variant": name, "seed": seed, "known": ev["known_labels"], "error": ev["error"], "baseline": ev["baseline_error"],
            "fid": ev["fid"], "is": ev["is"], "acc": ev.get("conditional_accuracy"), "img_per_s": train["img_per_s"],
            "train_s": train["seconds"], "seconds": time.perf_counter() - started, "curve": curve()}


def curve() -> list[tuple[int, float]]:
    """(step, holdout error) of the run's periodic evaluations (plots/fid.csv: the primary metric by step)."""
    with paths.FID_PLOT.open() as fh:
        return [(int(r["step"]), float(r["error"])) for r in csv.DictReader(fh) if r.get("error")]


def spread(values: list[float], fmt: str) -> str:
    """'mean (min to max)' over draws; the value alone for one draw."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return format(mean, fmt)
    return f"{format(mean, fmt)} ({format(min(values), fmt)} to {format(max(values), fmt)})"


def draws_table(rows: list[dict]) -> str:
    """One line per variant: mean and spread of the errors over the label draws."""
    lines = ["| variant | draws | labelled images | holdout error | baseline error (labelled images only) | "
             "error reduction | draws beating the baseline | generator FID (domain) | train s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == name]
        lines.append(f"| {name} | {len(rs)} | {rs[0]['known']} | {spread([r['error'] for r in rs], '.4f')} | "
                     f"{spread([r['baseline'] for r in rs], '.4f')} | "
                     f"{spread([r['baseline'] - r['error'] for r in rs], '+.4f')} | "
                     f"{sum(r['error'] < r['baseline'] for r in rs)}/{len(rs)} | "
                     f"{spread([r['fid'] for r in rs], '.1f')} | {spread([r['train_s'] for r in rs], '.0f')} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = ["| variant | data.seed | labelled images | holdout error | baseline error (labelled images only) | "
             "error reduction | generator FID (domain) | IS | conditional accuracy | train img/s | train s | total s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        acc = "" if r["acc"] is None else f"{r['acc']:.3f}"
        lines.append(f"| {r['variant']} | {r['seed']} | {r['known']} | {r['error']:.4f} | {r['baseline']:.4f} | "
                     f"{r['baseline'] - r['error']:+.4f} | {r['fid']:.2f} | {r['is']:.2f} | {acc} | "
                     f"{r['img_per_s']:.0f} | {r['train_s']:.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def curves(rows: list[dict]) -> str:
    """The periodic holdout errors of every run that has them (--eval-every)."""
    lines = [f"- {r['variant']}, data.seed {r['seed']}: " + ", ".join(f"{e:.4f} @ {s}" for s, e in r["curve"])
             for r in rows if r.get("curve")]
    return "\n\nHoldout error of the EMA classifier during training (error @ step):\n\n" + "\n".join(lines) \
        if lines else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=10, help="labels kept per class (data.labels_per_class)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--presets", default="improvedgan,catgan,triplegan")
    ap.add_argument("--draws", type=int, default=3, help="label draws (data.seed 0..N-1), each its own project")
    ap.add_argument("--eval-every", type=int, default=0, help="periodic holdout evaluation every N steps (0: off)")
    ap.add_argument("--title", default="Semi-supervised classification")
    args = ap.parse_args()
    names = [n for n in args.presets.split(",") if n]
    for n in names:
        family_of(n)  # an unknown preset fails here, naming the known ones
    load = os.getloadavg()
    command = (f"python bench/semisup.py --labels {args.labels} --steps {args.steps} --width {args.width} "
               f"--samples {args.samples} --presets {','.join(names)}"
               + f" --draws {args.draws}" + (f" --eval-every {args.eval_every}" if args.eval_every else ""))
    seeds = list(range(args.draws))
    rows: list[dict] = []
    for seed in seeds:
        folder = WORK if args.draws == 1 else WORK / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        os.chdir(folder)
        params = load_params(ROOT / "params.yaml", overrides(args) + [f"model.variant={names[0]}", f"data.seed={seed}"])
        stages.prepare(params)  # the labelled subset depends on --labels: always prepared afresh
        if not Path("models/evaluator.pt").is_file():
            stages.evaluator(params)
        for name in names:
            rows.append(run(name, args, seed))
            print(json.dumps(rows[-1]), flush=True)
            draws = (f"data.seed {seeds[0]}" if args.draws == 1 else
                     f"{args.draws} label draws (data.seed {', '.join(map(str, seeds))}: each seed its own holdout "
                     "split, labelled subset and evaluator; the first table gives mean (min to max) over draws)")
            body = (f"Machine: {machine()}; load average at the start {load[0]:.1f}. Command: `{command}`. mnist5k "
                    f"(4,500 training images, 32x32) with {args.labels} labels per class kept, {draws}; each preset "
                    f"trained {args.steps} steps at batch 64 (a batch of labelled and a batch of unlabelled images "
                    f"per update), width {args.width}, ADA off, train.precision auto. Errors on the 500 holdout "
                    "images, of the EMA classifier and of the baseline trained in the same run on the labelled "
                    f"images alone (same network, optimiser and batches). FID/IS: {args.samples} samples of the "
                    "generator against the holdout with the domain evaluator. Train img/s counts every batch a "
                    "phase draws (the GAN's phases and the baseline's), as for the other multi-phase families.\n\n"
                    + (draws_table(rows) + "\n\nEvery run:\n\n" if args.draws > 1 else "")
                    + table(rows) + curves(rows) + "\n\n" + PUBLISHED)
            write_section(args.title, body)


if __name__ == "__main__":
    main()
