"""Super-resolution at x4 on the bundled digits; writes the "Super-resolution" section of bench/RESULTS.md.

    python bench/superres.py [--pixel-steps 1500] [--gan-steps 1500] [--batch 16] [--evaluator-epochs 30]
                             [--esrgan-blocks 6] [--presets srresnet,srgan,esrgan]

mnist5k at 32x32 paired with its bicubic downscale to 8x8 (`data.scale: 4`). Each preset runs through the
pipeline's own train and evaluate stages in a scratch folder (bench/out/superres) that shares one prepared
data set and one pair of domain classifiers, so the rows compare: SRResNet (the PSNR-oriented model) trains
``pixel-steps``; SRGAN and ESRGAN pre-train on the pixel loss for ``pixel-steps`` and then train the GAN for
``gan-steps`` more, the papers' recipe. The bicubic row is the baseline every eval.json carries. ESRGAN runs
with fewer RRDBs than the paper's 23 (``--esrgan-blocks``): 23 cost 0.83 s a step on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
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

WORK = ROOT / "bench/out/superres"
PRESETS = ("srresnet", "srgan", "esrgan")
PUBLISHED = ("Published, for context (Set5 x4, natural images, Y channel; different data): bicubic 28.43 dB / "
             "0.8211, SRResNet 32.05 / 0.9019, SRGAN 29.40 / 0.8472 (Ledig et al. 2017, table 2).")


def overrides(args: argparse.Namespace, variant: str) -> list[str]:
    gan = variant != "srresnet"
    steps = args.pixel_steps + (args.gan_steps if gan else 0)
    out = ["data.source=mnist5k", "data.resolution=32", "data.scale=4", f"model.variant={variant}",
           f"train.steps={steps}", f"train.batch_size={args.batch}", "train.eval_every=0",
           "train.sample_every=100000", f"train.checkpoint_every={steps}", "augment.ada.enabled=false",
           "evaluate.num_samples=100000", f"evaluate.evaluator_epochs={args.evaluator_epochs}",
           f"tracking.uri=sqlite:///{WORK}/mlflow.db"]
    if gan:
        out.append(f"model.overrides.pretrain_steps={args.pixel_steps}")
    if variant == "esrgan":
        out.append(f"model.overrides.g_blocks={args.esrgan_blocks}")
    return out


def prepare(args: argparse.Namespace) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    params = load_params(ROOT / "params.yaml", overrides(args, "srresnet"))
    done = WORK / "metrics/evaluator.json"
    with chdir(WORK):
        if not done.is_file() or json.loads(done.read_text())["epochs"] != args.evaluator_epochs:
            stages.prepare(params)
            stages.augment(params)
            print(f"evaluator {stages.evaluator(params)}", flush=True)


def run_preset(args: argparse.Namespace, variant: str) -> dict:
    params = load_params(ROOT / "params.yaml", overrides(args, variant))
    started = time.perf_counter()
    with chdir(WORK):
        for old in (WORK / "models/checkpoints").glob("ckpt-*.pt"):
            old.unlink()  # each preset trains from scratch
        train = stages.train(params)
        ev = stages.evaluate(params)
        (WORK / f"grid-{variant}.png").write_bytes((WORK / "samples/grid.png").read_bytes())
    print(f"{variant}: {ev}", flush=True)
    return {"name": variant, "train": train, "eval": ev, "seconds": time.perf_counter() - started,
            "components": params.resolved.components()["generator"]}


def table(rows: list[dict]) -> str:
    lines = ["| model | generator | steps (pixel + GAN) | PSNR Y (dB) | SSIM Y | FID | label preservation | "
             "img/s | seconds |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base = rows[0]["eval"]
    lines.append(f"| bicubic | - | - | {base['psnr_bicubic']:.2f} | {base['ssim_bicubic']:.4f} | "
                 f"{base['fid_bicubic']:.2f} | {base['label_preservation_bicubic']:.3f} | | |")
    for r in rows:
        ev, tr = r["eval"], r["train"]
        pre = r["pixel_steps"]
        steps = f"{pre} + 0" if r["name"] == "srresnet" else f"{pre} + {tr['steps'] - pre}"
        lines.append(f"| {r['name']} | {r['components']} | {steps} | {ev['psnr']:.2f} | {ev['ssim']:.4f} | "
                     f"{ev['fid']:.2f} | {ev['label_preservation']:.3f} | {tr['img_per_s']:.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    by = {r["name"]: r["eval"] for r in rows}
    out = []
    if "srresnet" in by:
        ev = by["srresnet"]
        gain = ev["psnr"] - ev["psnr_bicubic"]
        out.append(f"- SRResNet PSNR gain over bicubic {gain:+.2f} dB (goal >= 1.5 dB): {'met' if gain >= 1.5 else 'missed'}.")
        for gan in ("srgan", "esrgan"):
            if gan in by:
                f, g = ev["fid"], by[gan]["fid"]
                out.append(f"- {gan} FID {g:.2f} vs SRResNet {f:.2f} (goal: lower, the GAN trades PSNR for realism): "
                           f"{'met' if g < f else 'missed'}; PSNR {by[gan]['psnr']:.2f} vs {ev['psnr']:.2f} dB.")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixel-steps", type=int, default=1500)
    ap.add_argument("--gan-steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--evaluator-epochs", type=int, default=30)
    ap.add_argument("--esrgan-blocks", type=int, default=6)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--title", default="Super-resolution")
    args = ap.parse_args()
    names = args.presets.split(",")
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        ap.error(f"--presets: unknown {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    prepare(args)
    rows = [{**run_preset(args, n), "pixel_steps": args.pixel_steps} for n in names]
    defaults = {"pixel_steps": 1500, "gan_steps": 1500, "batch": 16, "evaluator_epochs": 30, "esrgan_blocks": 6}
    command = "python bench/superres.py" + "".join(f" --{k.replace('_', '-')} {getattr(args, k)}"
                                                   for k, d in defaults.items() if getattr(args, k) != d)
    command += f" --presets {args.presets}" if names != list(PRESETS) else ""
    evaluator = json.loads((WORK / "metrics/evaluator.json").read_text())
    acc = ", ".join(f"{k} {v['holdout_accuracy']:.3f}" for k, v in evaluator["parts"].items())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    ev0 = rows[0]["eval"]
    body = (f"Machine: {machine()}. Command: `{command}`. Load average when written: {load} (at the start: "
            f"{load0:.1f}). x4: 8x8 -> 32x32 mnist5k ({ev0['num_samples']} held-out pairs), batch {args.batch}, width 64, "
            f"ADA off, {torch.get_num_threads()} threads; the content loss uses the evaluator's high-resolution "
            f"classifier ({args.evaluator_epochs} epochs; holdout accuracy {acc}), whose penultimate features also "
            f"give the FID. Final EMA generators. Total {time.perf_counter() - started:.0f} s.\n\n{table(rows)}\n\n"
            + "\n".join(verdicts(rows)) + f"\n\n{PUBLISHED}")
    write_section(args.title, body)
    print(body)


if __name__ == "__main__":
    main()
