"""Latent tools on a trained DCGAN; writes the "Latent directions and inversion" section of bench/RESULTS.md.

    python bench/explore.py [--steps 800] [--variant dcgan] [--invert 256] [--directions 5] [--learned-steps 1000]

Trains ``--variant`` on mnist5k (32x32, ADA off) through the pipeline's own stages in a scratch folder
(bench/out/explore), then runs ``gans explore`` on the generator: SeFa, PCA and learned directions against random
ones (pixel change per unit step, and how often a step of 3 changes the domain classifier's digit; the learned
ones' reconstructor accuracy), and the inversion of ``--invert`` holdout digits (encoder start, then
optimisation), scored by PSNR, SSIM and label preservation; then times the served model inverting 64 digits in
one request, in process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import chdir
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, write_section  # noqa: E402
from gans.families import load_artifact  # noqa: E402
from pipeline import explore, paths, stages  # noqa: E402
from pipeline.params import load_params  # noqa: E402

WORK = ROOT / "bench/out/explore"
PUBLISHED = ("Published, for context: SeFa and GANSpace report their directions qualitatively (traversal figures) "
             "on StyleGAN/BigGAN; there is no number for a digits DCGAN to set beside these.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--variant", default="dcgan")
    ap.add_argument("--invert", type=int, default=256)
    ap.add_argument("--directions", type=int, default=5)
    ap.add_argument("--learned-steps", type=int, default=1000)
    args = ap.parse_args()
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    WORK.mkdir(parents=True, exist_ok=True)
    params = load_params(ROOT / "params.yaml", [
        f"model.variant={args.variant}", f"train.steps={args.steps}", "train.eval_every=0",
        "augment.ada.enabled=false", f"train.checkpoint_every={args.steps}", f"tracking.uri=sqlite:///{WORK}/mlflow.db"])
    with chdir(WORK):
        for old in (WORK / "models/checkpoints").glob("ckpt-*.pt"):
            old.unlink()
        stages.prepare(params)
        stages.augment(params)
        stages.evaluator(params)
        train = stages.train(params)
        t0 = time.perf_counter()
        cfg = params.explore
        report = explore.explore(load_artifact(paths.MODELS / "generator.pt"), count=args.directions, alpha=3.0,
                                 probes=256, evaluator=paths.EVALUATOR, holdout=paths.PREPARED / "holdout.pt",
                                 invert=args.invert, invert_steps=cfg.invert_steps, encoder_steps=cfg.encoder_steps,
                                 learned_steps=args.learned_steps)
        explore_s = time.perf_counter() - t0
        serve_s = _served_inversion(64)
    print(explore.summary(report), flush=True)
    defaults = {"steps": 800, "variant": "dcgan", "invert": 256, "directions": 5, "learned_steps": 1000}
    command = "python bench/explore.py" + "".join(f" --{k.replace('_', '-')} {getattr(args, k)}"
                                                  for k, d in defaults.items() if getattr(args, k) != d)
    lines = ["| method | direction | pixel change per unit step | label flips after a step of 3 |",
             "| --- | ---: | ---: | ---: |"]
    for method, rows in report["methods"].items():
        for r in rows:
            lines.append(f"| {method} | {r['direction']} | {r['pixel_change']:.4f} | {r['label_flip']:.3f} |")
    inv = report["inversion"]
    inversion = ["| inversion | PSNR (dB) | SSIM | label preservation |", "| --- | ---: | ---: | ---: |"]
    for name in ("encoder", "optimised"):
        r = inv[name]
        inversion.append(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['label_preservation']:.3f} |")
    ar = report["arithmetic"]
    inversion += ["", f"Class-mean arithmetic (Radford et al. 2016) over {ar['pairs']} ordered pairs of digits: "
                      f"z + mean_b - mean_a draws a b (by the classifier) for {ar['transfer']:.3f} of class-a samples; "
                      f"a random offset of the same length, {ar['random_offset']:.3f}."]
    beats = report["beats_random"]
    learned = report["learned"]["reconstructor_accuracy"]
    goals = [f"- Top {args.directions} directions beating the random baseline: "
             + ", ".join(f"{m} {n}/{args.directions}" for m, n in beats.items())
             + f" (goal: all): {'met' if min(beats.values()) == args.directions else 'missed'}.",
             f"- Learned directions' reconstructor accuracy {learned:.3f} on fresh shifts (chance "
             f"{report['learned']['chance']:.3f}; goal >= 0.80): {'met' if learned >= 0.8 else 'missed'}.",
             f"- Inversion label preservation {inv['optimised']['label_preservation']:.3f} (goal >= 0.90): "
             f"{'met' if inv['optimised']['label_preservation'] >= 0.9 else 'missed'}."]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    body = (f"Machine: {machine()}. Command: `{command}`. Load average when written: {load} (at the start: "
            f"{load0:.1f}). {args.variant} on mnist5k at 32x32, ADA off, {args.steps} steps at "
            f"{train['img_per_s']:.0f} img/s; `gans explore` took {explore_s:.0f} s ({inv['images']} inversions, "
            f"{params.explore.encoder_steps} encoder steps, {inv['steps']} optimisation steps, "
            f"{args.learned_steps} steps of learned directions). The served model inverts 64 holdout digits in one "
            f"request in {serve_s:.1f} s (in process, {inv['steps']} steps). Effects over "
            f"{report['probes']} probe latents; the random baseline's mean pixel change is "
            f"{report['random_pixel_change']:.4f}. Total {time.perf_counter() - started:.0f} s.\n\n"
            + "\n".join(lines) + "\n\n" + "\n".join(inversion) + "\n\n" + "\n".join(goals) + f"\n\n{PUBLISHED}")
    write_section("Latent directions and inversion", body)
    print(body)


def _served_inversion(count: int) -> float:
    """Seconds the served model (generator + the explore stage's encoder) takes to invert ``count`` holdout
    digits sent as base64 PNGs in one request."""
    import base64
    from types import SimpleNamespace

    import pandas as pd
    from torchvision.io import encode_png

    from pipeline.files import load_dataset_file
    from pipeline.serving import ArtifactModel

    model = ArtifactModel()
    model.load_context(SimpleNamespace(artifacts={"generator": str(paths.GENERATOR), "directions": str(paths.DIRECTIONS)},
                                       model_config={"max_rows": count}))
    images = load_dataset_file(paths.PREPARED / "holdout.pt", "prepare").images.images[:count]
    rows = pd.DataFrame({"image": [base64.b64encode(encode_png(img).numpy().tobytes()).decode() for img in images]})
    t0 = time.perf_counter()
    model.predict(None, rows)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
