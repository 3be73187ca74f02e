"""StarGAN on the bundled five-style digits; writes the "Multi-domain translation" section of bench/RESULTS.md.

    python bench/stargan.py [--steps 3000] [--width 32] [--batch 16] [--resolution 32] [--evaluator-epochs 30]
                            [--set KEY=VALUE ...] [--title SECTION]

mnist5k-styles: each mnist5k digit in one of five styles (original, inverted, outlined, thick, thin; a fifth of
the digits each). StarGAN runs through the pipeline's own train and evaluate stages in a scratch folder
(bench/out/stargan). Every held-out image is translated to every other domain; the evaluator's domain
classifier (trained on the real domain labels) says whether it reached the target, and its digit classifier
whether the digit survived.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import chdir
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, write_section  # noqa: E402
from pipeline import stages  # noqa: E402
from pipeline.params import load_params  # noqa: E402

WORK = ROOT / "bench/out/stargan"
PUBLISHED = ("Published, for context (different data): StarGAN's classification error on RaFD expressions is "
             "2.12% (Choi et al. 2018, table 3), i.e. a target-domain accuracy of 0.979.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--evaluator-epochs", type=int, default=30)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="another param, e.g. model.overrides.id_weight=10 (repeatable)")
    ap.add_argument("--title", default="Multi-domain translation")
    args = ap.parse_args()
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    WORK.mkdir(parents=True, exist_ok=True)
    params = load_params(ROOT / "params.yaml", [
        "data.source=mnist5k-styles", f"data.resolution={args.resolution}", "model.variant=stargan",
        f"model.width={args.width}", f"train.steps={args.steps}", f"train.batch_size={args.batch}",
        "train.eval_every=0", "train.sample_every=100000", f"train.checkpoint_every={args.steps}",
        "evaluate.num_samples=100000", f"evaluate.evaluator_epochs={args.evaluator_epochs}",
        f"tracking.uri=sqlite:///{WORK}/mlflow.db", *args.set])
    with chdir(WORK):
        for old in (WORK / "models/checkpoints").glob("ckpt-*.pt"):
            old.unlink()
        stages.prepare(params)
        stages.augment(params)
        evaluator = stages.evaluator(params)
        train = stages.train(params)
        ev = stages.evaluate(params)
    print(ev, flush=True)
    defaults = {"steps": 3000, "width": 32, "batch": 16, "resolution": 32, "evaluator_epochs": 30}
    command = "python bench/stargan.py" + "".join(f" --{k.replace('_', '-')} {getattr(args, k)}"
                                                  for k, d in defaults.items() if getattr(args, k) != d)
    command += "".join(f" --set {kv}" for kv in args.set)
    if args.title != "Multi-domain translation":
        command += f" --title '{args.title}'"
    lines = ["| target domain | target-domain accuracy | digit preservation | FID | reconstruction error |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for d in ev["domains"]:
        lines.append(f"| {d} | {ev[f'target_accuracy_{d}']:.3f} | {ev[f'label_preservation_{d}']:.3f} | "
                     f"{ev[f'fid_{d}']:.2f} | {ev[f'reconstruction_error_{d}']:.4f} |")
    lines.append(f"| mean | {ev['target_accuracy']:.3f} | {ev['label_preservation']:.3f} | {ev['fid']:.2f} | "
                 f"{ev['reconstruction_error']:.4f} |")
    parts = evaluator["parts"]
    goals = [f"- Target-domain accuracy {ev['target_accuracy']:.3f} (goal >= 0.90): "
             f"{'met' if ev['target_accuracy'] >= 0.9 else 'missed'}.",
             f"- Digit preservation {ev['label_preservation']:.3f} (goal >= 0.90): "
             f"{'met' if ev['label_preservation'] >= 0.9 else 'missed'}."]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    body = (f"Machine: {machine()}. Command: `{command}`. Load average when written: {load} (at the start: "
            f"{load0:.1f}). mnist5k-styles at {args.resolution}x{args.resolution}, {args.steps} generator steps "
            f"(5 critic steps each) at batch {args.batch}, width {args.width}, {train['img_per_s']:.0f} img/s, "
            f"{torch.get_num_threads()} threads. {ev['num_samples']} held-out images, each translated to the four "
            f"domains it is not in (target accuracy) and to all five (digit preservation, FID against the real "
            f"held-out images of the domain, reconstruction = mean |x - G(G(x, target), source)| in [0, 1]). "
            f"Classifiers ({args.evaluator_epochs} epochs): domains holdout accuracy "
            f"{parts['attributes']['holdout_accuracy']:.3f}, digits {parts['images']['holdout_accuracy']:.3f}. "
            f"Total {time.perf_counter() - started:.0f} s.\n\n" + "\n".join(lines) + "\n\n" + "\n".join(goals)
            + f"\n\n{PUBLISHED}")
    write_section(args.title, body)
    print(body)


if __name__ == "__main__":
    main()
