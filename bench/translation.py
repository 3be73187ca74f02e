"""Image-to-image translation on the bundled sets; writes the "Translation" section of bench/RESULTS.md.

    python bench/translation.py [--steps 1000] [--width 32] [--batch 32] [--evaluator-epochs 30] [--presets ...]

Pix2Pix (and Pix2Pix without its adversarial term, the paper's L1-only ablation) on the paired edges ->
digits set (`mnist5k-edges`); CycleGAN, DualGAN and DiscoGAN on the unpaired `digits-mnist5k` set
(scikit-learn's 8x8 digits upscaled <-> mnist5k), all at 32x32. Each configuration runs through the
pipeline's own train and evaluate stages in a scratch folder (bench/out/translation) that shares one
prepared data set and one pair of domain classifiers per source, so the numbers of a source are comparable
with each other. ADA is off (the papers' methods) and the final EMA generators are evaluated on the whole
holdout. Label preservation can reach at most about the domain classifier's own holdout accuracy, which
the section reports beside it (hence more evaluator epochs than the pipeline's default 8: the digits domain
has 1,617 training images).
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

WORK = ROOT / "bench/out/translation"
CONFIGS = {  # name -> (data source, variant, extra overrides)
    "pix2pix": ("mnist5k-edges", "pix2pix", []),
    "pix2pix-l1": ("mnist5k-edges", "pix2pix", ["model.overrides.adv_weight=0"]),
    "cyclegan": ("digits-mnist5k", "cyclegan", []),
    "dualgan": ("digits-mnist5k", "dualgan", []),
    "discogan": ("digits-mnist5k", "discogan", []),
}
GOALS = "Pix2Pix label preservation >= 0.95; CycleGAN label preservation >= 0.80 in both directions"


def overrides(args: argparse.Namespace, source: str, variant: str, extra: list[str], folder: Path) -> list[str]:
    return [f"data.source={source}", "data.resolution=32", f"model.variant={variant}", f"model.width={args.width}",
            f"train.steps={args.steps}", f"train.batch_size={args.batch}", "train.eval_every=0",
            "train.sample_every=100000", f"train.checkpoint_every={args.steps}", "augment.ada.enabled=false",
            "evaluate.num_samples=100000", f"evaluate.evaluator_epochs={args.evaluator_epochs}",
            f"tracking.uri=sqlite:///{folder}/mlflow.db", *extra]


def prepare(args: argparse.Namespace, source: str) -> Path:
    """Prepared data and domain classifiers of one source, made once."""
    folder = WORK / source
    folder.mkdir(parents=True, exist_ok=True)
    variant = "pix2pix" if source == "mnist5k-edges" else "cyclegan"
    params = load_params(ROOT / "params.yaml", overrides(args, source, variant, [], folder))
    done = folder / "metrics/evaluator.json"
    with chdir(folder):
        if not done.is_file() or json.loads(done.read_text())["epochs"] != args.evaluator_epochs:
            stages.prepare(params)
            stages.augment(params)
            print(f"{source}: evaluator {stages.evaluator(params)}", flush=True)
    return folder


def classifier_accuracy(folder: Path) -> str:
    parts = json.loads((folder / "metrics/evaluator.json").read_text())["parts"]
    return ", ".join(f"{k} {v['holdout_accuracy']:.3f}" for k, v in parts.items())


def run_config(args: argparse.Namespace, name: str, folder: Path) -> dict:
    source, variant, extra = CONFIGS[name]
    params = load_params(ROOT / "params.yaml", overrides(args, source, variant, extra, folder))
    started = time.perf_counter()
    with chdir(folder):
        for old in (folder / "models/checkpoints").glob("ckpt-*.pt"):
            old.unlink()  # each configuration trains from scratch
        train = stages.train(params)
        ev = stages.evaluate(params)
    print(f"{name}: {ev}", flush=True)
    return {"name": name, "source": source, "train": train, "eval": ev, "seconds": time.perf_counter() - started}


def _cell(ev: dict, key: str, fmt: str) -> str:
    return f"{ev[key]:{fmt}}" if isinstance(ev.get(key), (int, float)) else ""


def table(rows: list[dict]) -> str:
    lines = ["| configuration | data | FID a2b | FID b2a | label preservation a2b | label preservation b2a | "
             "PSNR (dB) | SSIM | L1 | cycle error a2b / b2a | img/s | seconds |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ev = r["eval"]
        cycle = " / ".join(c for c in (_cell(ev, "cycle_error_a2b", ".4f"), _cell(ev, "cycle_error_b2a", ".4f")) if c)
        lines.append(f"| {r['name']} | {r['source']} | {_cell(ev, 'fid_a2b', '.2f')} | {_cell(ev, 'fid_b2a', '.2f')} | "
                     f"{_cell(ev, 'label_preservation_a2b', '.3f')} | {_cell(ev, 'label_preservation_b2a', '.3f')} | "
                     f"{_cell(ev, 'psnr', '.2f')} | {_cell(ev, 'ssim', '.3f')} | {_cell(ev, 'l1', '.4f')} | {cycle} | "
                     f"{r['train']['img_per_s']:.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    """Each goal of the issue, met or missed, with the figure."""
    by = {r["name"]: r["eval"] for r in rows}
    out = []
    if "pix2pix" in by:
        lp = by["pix2pix"]["label_preservation_a2b"]
        out.append(f"- Pix2Pix label preservation {lp:.3f} (goal >= 0.95): {'met' if lp >= 0.95 else 'missed'}.")
    if "cyclegan" in by:
        a, b = by["cyclegan"]["label_preservation_a2b"], by["cyclegan"]["label_preservation_b2a"]
        ok = min(a, b) >= 0.80
        out.append(f"- CycleGAN label preservation {a:.3f} a2b, {b:.3f} b2a (goal >= 0.80 both): "
                   f"{'met' if ok else 'missed'}.")
    if "pix2pix" in by and "pix2pix-l1" in by:
        p, l1 = by["pix2pix"], by["pix2pix-l1"]
        out.append(f"- L1 alone vs L1 + cGAN (Isola et al.: L1 alone wins PSNR, loses realism): PSNR "
                   f"{l1['psnr']:.2f} vs {p['psnr']:.2f} dB, FID {l1['fid']:.2f} vs {p['fid']:.2f}.")
    return out


def rows_of(rows: list[dict], source: str) -> dict:
    return next(r for r in rows if r["source"] == source)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--evaluator-epochs", type=int, default=30)
    ap.add_argument("--presets", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    ap.add_argument("--title", default="Translation")
    args = ap.parse_args()
    names = args.presets.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"--presets: unknown {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    folders = {source: prepare(args, source) for source in sorted({CONFIGS[n][0] for n in names})}
    rows = [run_config(args, n, folders[CONFIGS[n][0]]) for n in names]
    command = "python bench/translation.py" + "".join(
        f" --{k.replace('_', '-')} {getattr(args, k)}" for k, d in (("steps", 1000), ("width", 32), ("batch", 32),
                                                                   ("evaluator_epochs", 30))
        if getattr(args, k) != d) + (f" --presets {args.presets}" if names != list(CONFIGS) else "")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    evaluators = "; ".join(f"{s}: {rows_of(rows, s)['eval']['extractor']}, classifier holdout "
                           f"accuracy {classifier_accuracy(folders[s])}" for s in folders)
    body = (f"Machine: {machine()}. Command: `{command}`. Load average when written: {load} (at the start: "
            f"{load0:.1f}). {args.steps} steps at batch {args.batch}, width {args.width}, 32x32, ADA off, "
            f"{torch.get_num_threads()} threads, {args.evaluator_epochs} evaluator epochs; final EMA generators on the "
            f"whole holdout (domain features: {evaluators}). Total {time.perf_counter() - started:.0f} s.\n\n{table(rows)}\n\n"
            + "\n".join(verdicts(rows)))
    write_section(args.title, body)
    print(body)


if __name__ == "__main__":
    main()
