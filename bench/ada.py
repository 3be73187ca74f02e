"""Augmentation on limited data: DCGAN on mnist5k subsets without augmentation, with DiffAugment and with ADA.

    python bench/ada.py [--steps 1500] [--sizes 500,1000,4500] [--samples 5000] [--overhead-windows 7]

``--sizes ""`` runs only the step-cost part; ``--overhead-windows 0`` skips it.

Every run trains the same preset for the same step budget through the
pipeline's own train and evaluate stages in a scratch folder
(bench/out/ada). The training set is a fixed random N-image subset of the
prepared training split; the holdout (500 images) and the domain evaluator are shared,
so all FIDs are comparable. A second part times the training step with ADA
against the same step without it, interleaved in one process.
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, write_section
from gans.config import ADAConfig, AugmentConfig
from gans.data import ImageSet
from gans.io import load_torch, save_json, save_torch
from gans.families import build_trainer
from pipeline import paths, stages
from pipeline.params import load_params

MODES = {
    "none": ["augment.ada.enabled=false", "augment.diffaugment="],
    "DiffAugment": ["augment.ada.enabled=false", "augment.diffaugment=color,translation,cutout"],
    "ADA": ["augment.ada.enabled=true", "augment.diffaugment="],
}


def run(size: int, mode: str, base: list[str]) -> dict:
    params = load_params(ROOT / "params.yaml", base + MODES[mode])
    stages.augment(params)  # writes the spec for this mode and the full training set
    full = ImageSet.from_dict(load_torch(paths.AUGMENTED / "train.pt"))
    # a fixed random subset (the prepared split keeps the source's order, which is sorted by digit in mnist5k);
    # nested: the 500 images are among the 1,000
    subset = full.subset(torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[:size])
    save_torch(subset.to_dict(), paths.AUGMENTED / "train.pt")
    meta = json.loads((paths.AUGMENTED / "meta.json").read_text())
    save_json({**meta, "hash": f"{meta['hash']}-first{size}", "augmented_count": size}, paths.AUGMENTED / "meta.json")
    shutil.rmtree(paths.CHECKPOINTS, ignore_errors=True)  # every run starts fresh
    started = time.perf_counter()
    train = stages.train(params)
    ev = stages.evaluate(params)
    return {"size": size, "mode": mode, "fid": ev["fid"], "kid": ev["kid"], "is": ev["is"],
            "ada_p": train["ada_p"] if mode == "ADA" else None, "img_per_s": train["img_per_s"],
            "seconds": time.perf_counter() - started}


def step_overhead(params_base: list[str], windows: int, steps: int) -> dict:
    """Seconds per DCGAN step with ADA (bgc, p held at 0.5) over without, interleaved windows, medians."""
    params = load_params(ROOT / "params.yaml", params_base)
    data = ImageSet.from_dict(load_torch(paths.PREPARED / "train.pt"))
    trainers = {}
    for name, ada in (("off", ADAConfig(enabled=False)), ("on", ADAConfig(mode="fixed", initial_p=0.5))):
        t = build_trainer(model=params.model, train=params.train, augment=AugmentConfig(ada=ada), data=data,
                    checkpoint_dir=Path("unused"))
        t.setup()
        for _ in range(3):  # warm-up
            t.train_step()
        trainers[name] = t
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(windows):
        for name, t in trainers.items():
            _sync(t.device)
            started = time.perf_counter()
            for _ in range(steps):
                t.train_step()
            _sync(t.device)
            times[name].append((time.perf_counter() - started) / steps)
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    return {"off_s": off, "on_s": on, "ratio": on / off, "windows": windows, "steps": steps}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def table(rows: list[dict]) -> str:
    lines = ["| training images | augmentation | domain FID | KID | IS | final ADA p | img/s | seconds |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        p = f"{r['ada_p']:.3f}" if r["ada_p"] is not None else ""
        lines.append(f"| {r['size']} | {r['mode']} | {r['fid']:.2f} | {r['kid']:.3f} | {r['is']:.2f} | {p} | "
                     f"{r['img_per_s']:.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--sizes", default="500,1000,4500")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--overhead-windows", type=int, default=7, help="0 skips the step-cost part")
    ap.add_argument("--title", default="ADA and DiffAugment on limited data")
    args = ap.parse_args()
    work = ROOT / "bench/out/ada"
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    base = [f"train.steps={args.steps}", f"model.width={args.width}", f"evaluate.num_samples={args.samples}",
            f"tracking.uri=sqlite:///{work}/mlflow.db", "train.sample_every=100000", "train.eval_every=0",
            f"train.checkpoint_every={args.steps}", "model.variant=dcgan"]
    params = load_params(ROOT / "params.yaml", base)
    if not Path("models/evaluator.pt").is_file():
        stages.prepare(params)
        stages.evaluator(params)
    command = "python " + shlex.join(["bench/ada.py", *sys.argv[1:]])
    if args.overhead_windows:
        cost = step_overhead(base, windows=args.overhead_windows, steps=10)
        print(json.dumps(cost), flush=True)
        write_section("ADA step cost", (
            f"Machine: {machine()}. Command: `{command}`. One DCGAN training step (width {args.width}, batch 64, "
            f"32x32) without augmentation and with ADA (`bgc`, p held at 0.5), interleaved in one process: "
            f"{cost['windows']} windows of {cost['steps']} steps each, medians: {cost['off_s'] * 1000:.1f} ms without, "
            f"{cost['on_s'] * 1000:.1f} ms with ADA; ratio **{cost['ratio']:.3f}** (goal < 1.15)."))
    head = (f"Machine: {machine()}. Command: `{command}`. DCGAN (width {args.width}, batch 64) trained for "
            f"{args.steps} generator steps on a random N-image subset of mnist5k's training split (the same for every mode) (32x32); ADA = "
            f"`bgc` pipeline, adaptive p (target 0.6, interval 4, speed 100 kimg); DiffAugment = "
            f"color,translation,cutout. Domain FID/KID/IS on {args.samples} samples against the same 500 holdout "
            f"images.\n\n")
    rows = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        for mode in args.modes.split(","):
            rows.append(run(size, mode, base))
            print(json.dumps(rows[-1]), flush=True)
            write_section(args.title, head + table(rows))

if __name__ == "__main__":
    main()
