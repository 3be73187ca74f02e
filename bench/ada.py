"""Augmentation on limited data: DCGAN on mnist5k subsets without augmentation, with DiffAugment and with ADA.

    python bench/ada.py [--steps 1500] [--sizes 500,1000,4500] [--samples 5000] [--overhead-windows 7]
                        [--modes none,DiffAugment,ADA,fixed] [--fixed-p 0.2] [--eval-every 0] [--set KEY=VALUE ...]

``--sizes ""`` runs only the step-cost part; ``--overhead-windows 0`` skips it.

Every run trains the same preset for the same step budget through the
pipeline's own train and evaluate stages in a scratch folder
(bench/out/ada). The training set is a fixed random N-image subset of the
prepared training split; the holdout (500 images) and the domain evaluator are shared,
so all FIDs are comparable. A second part times the training step with ADA
against the same step without it, interleaved in one process.

Every run's curves (the train stage's plots/train.csv: r_t, E[sign D] on fixed training and validation
images, r_v, p; with --eval-every, plots/fid.csv) are kept under bench/out/ada/curves/, and a figure per
training-set size is drawn into bench/ada-curves-N.png (FID, r_t and E[sign D(validation)], r_v, p against
the step, one line per mode).
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
    "fixed": ["augment.ada.enabled=true", "augment.diffaugment=", "augment.ada.mode=fixed"],  # p = --fixed-p
}


def run(size: int, mode: str, base: list[str], fixed_p: float) -> dict:
    extra = [f"augment.ada.initial_p={fixed_p}"] if mode == "fixed" else []
    params = load_params(ROOT / "params.yaml", base + MODES[mode] + extra)
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
    curves = Path("curves")
    curves.mkdir(exist_ok=True)
    shutil.copy(paths.TRAIN_PLOT, curves / f"{size}-{mode}-train.csv")
    shutil.copy(paths.FID_PLOT, curves / f"{size}-{mode}-fid.csv")
    late = _late_means(curves / f"{size}-{mode}-train.csv")
    periodic = _read_csv(curves / f"{size}-{mode}-fid.csv")
    best = min(periodic, key=lambda r: float(r["fid"])) if periodic else None
    return {"size": size, "mode": mode, "fid": ev["fid"], "kid": ev["kid"], "is": ev["is"],
            "ada_p": train["ada_p"] if mode in ("ADA", "fixed") else None, "img_per_s": train["img_per_s"],
            "seconds": time.perf_counter() - started, **late,
            "best_periodic": f"{float(best['fid']):.1f} @ {best['step']}" if best else ""}


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as fh:
        return list(csv.DictReader(fh))


def _late_means(path: Path) -> dict[str, float | None]:
    """Means of r_t, E[sign D(train)], E[sign D(validation)] and r_v over the last quarter of the run."""
    rows = _read_csv(path)
    rows = rows[len(rows) * 3 // 4:]
    out: dict[str, float | None] = {}
    for key in ("d_real_sign", "sign_train", "sign_val", "r_v"):
        values = [float(r[key]) for r in rows if r.get(key)]
        out[key] = statistics.mean(values) if values else None
    return out


SMOOTH = 8  # logged points per running mean in the figures (the probe and r_t are per-batch figures)


def _smooth(values: list[float], window: int = SMOOTH) -> list[float]:
    return [statistics.mean(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]


def draw_curves(size: int, modes: list[str]) -> Path:
    """One figure for a training-set size: FID, r_t and E[sign D(validation)], r_v, p against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for mode in modes:
        train = _read_csv(Path("curves") / f"{size}-{mode}-train.csv")
        fid = _read_csv(Path("curves") / f"{size}-{mode}-fid.csv")
        step = [int(r["step"]) for r in train]
        line, = axes[1].plot(step, _smooth([float(r["d_real_sign"]) for r in train]), label=f"{mode}: r_t")
        axes[1].plot(step, _smooth([float(r["sign_val"]) for r in train]), "--", color=line.get_color(),
                     label=f"{mode}: E[sign D(val)]")
        axes[2].plot(step, _smooth([float(r["r_v"]) for r in train]), color=line.get_color(), label=mode)
        axes[3].plot(step, [float(r["ada_p"]) for r in train], color=line.get_color(), label=mode)
        if fid:
            axes[0].plot([int(r["step"]) for r in fid], [float(r["fid"]) for r in fid], "o-",
                         color=line.get_color(), label=mode)
    for ax, title in zip(axes, ("periodic FID (EMA G, 1,000 samples)", "r_t (solid) and E[sign D(validation)] "
                                f"(dashed), mean of {SMOOTH} logs", f"r_v, mean of {SMOOTH} logs",
                                "augmentation probability p")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    axes[1].axhline(0.6, color="grey", lw=0.5)
    fig.suptitle(f"DCGAN on {size} training images", fontsize=11)
    fig.tight_layout()
    out = ROOT / "bench" / f"ada-curves-{size}.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


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
    lines = ["| training images | augmentation | domain FID | KID | IS | best periodic FID @ step | final ADA p | "
             "r_t | E[sign D(train)] | E[sign D(val)] | r_v | img/s | seconds |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def f(v: float | None) -> str:
        return "" if v is None else f"{v:.2f}"

    for r in rows:
        p = f"{r['ada_p']:.3f}" if r["ada_p"] is not None else ""
        lines.append(f"| {r['size']} | {r['mode']} | {r['fid']:.2f} | {r['kid']:.3f} | {r['is']:.2f} | "
                     f"{r['best_periodic']} | {p} | {f(r['d_real_sign'])} | {f(r['sign_train'])} | {f(r['sign_val'])} | "
                     f"{f(r['r_v'])} | {r['img_per_s']:.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--sizes", default="500,1000,4500")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--overhead-windows", type=int, default=7, help="0 skips the step-cost part")
    ap.add_argument("--fixed-p", type=float, default=0.2, help="p of the 'fixed' mode")
    ap.add_argument("--eval-every", type=int, default=0, help="periodic FID (1,000 samples) every N steps")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE over params.yaml for every run")
    ap.add_argument("--title", default="ADA and DiffAugment on limited data")
    args = ap.parse_args()
    work = ROOT / "bench/out/ada"
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    base = [f"train.steps={args.steps}", f"model.width={args.width}", f"evaluate.num_samples={args.samples}",
            f"tracking.uri=sqlite:///{work}/mlflow.db", "train.sample_every=100000",
            f"train.eval_every={args.eval_every}", "train.eval_samples=1000",
            f"train.checkpoint_every={args.steps}", "model.variant=dcgan", *args.set]
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
            f"{args.steps} generator steps on a random N-image subset of mnist5k's training split (the same for every "
            f"mode) (32x32); ADA = `{params.augment.ada.pipeline}` pipeline, adaptive p (target "
            f"{params.augment.ada.target}, interval {params.augment.ada.interval}, speed "
            f"{params.augment.ada.speed_kimg} kimg); fixed = the same pipeline at p = {args.fixed_p}; DiffAugment = "
            f"color,translation,cutout. Domain FID/KID/IS of the final EMA generator on {args.samples} samples "
            f"against the same 500 holdout images. r_t (E[sign D] on the augmented training batches), E[sign D] on "
            f"64 fixed un-augmented training and validation (holdout) images and r_v = (E[D(train)] - E[D(val)]) / "
            f"(E[D(train)] - E[D(generated)]) (Karras et al. 2020): means over the last quarter of the run. "
            f"Curves: bench/ada-curves-N.png.\n\n")
    rows = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        modes = args.modes.split(",")
        for mode in modes:
            rows.append(run(size, mode, base, args.fixed_p))
            print(json.dumps(rows[-1]), flush=True)
            write_section(args.title, head + table(rows))
        draw_curves(size, modes)

if __name__ == "__main__":
    main()
