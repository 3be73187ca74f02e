"""The likelihood baseline beside the GANs: PixelCNN presets and a GAN reference trained on mnist5k with the
same step budget, prepared data and domain evaluator; bits/dim of the holdout, FID/IS/KID of the samples,
and how long a sample takes. Writes the section "PixelCNN beside the GANs" of bench/RESULTS.md.

    python bench/pixelcnn.py [--steps 1500] [--width 32] [--samples 2000] [--presets dcgan,pixelcnn,cpixelcnn]
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

WORK = ROOT / "bench/out/pixelcnn"
PUBLISHED = ("Published figures, for context only (other data, other budgets): PixelRNN 79.20 nats on binarised "
             "MNIST (van den Oord et al. 2016a, a negative log-likelihood, not bits/dim of 8-bit images); Gated "
             "PixelCNN 3.03 bits/dim on CIFAR-10 (van den Oord et al. 2016b). A model that ignores the image "
             "scores 8 bits/dim (uniform over 256 values).")


def overrides(args: argparse.Namespace) -> list[str]:
    return [f"train.steps={args.steps}", f"model.width={args.width}", f"evaluate.num_samples={args.samples}",
            f"tracking.uri=sqlite:///{WORK}/mlflow.db", "train.sample_every=100000",
            f"train.checkpoint_every={args.steps}", "train.eval_every=0", "augment.ada.enabled=false"]


def run(name: str, args: argparse.Namespace) -> dict:
    params = load_params(ROOT / "params.yaml", overrides(args) + [f"model.variant={name}"])
    started = time.perf_counter()
    stages.augment(params)
    train = stages.train(params)
    ev = stages.evaluate(params)
    return {"variant": name, "family": family_of(name).name, "bits": ev.get("bits_per_dim"), "fid": ev["fid"],
            "is": ev["is"], "kid": ev["kid"], "acc": ev.get("conditional_accuracy"),
            "ms": ev.get("sample_ms_per_image"), "img_per_s": train["img_per_s"], "train_s": train["seconds"],
            "seconds": time.perf_counter() - started}


def table(rows: list[dict]) -> str:
    def cell(v: float | None, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    lines = ["| variant | family | holdout bits/dim | domain FID | IS | KID | conditional accuracy | ms per sample "
             "| train img/s | train s | total s |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['family']} | {cell(r['bits'], '.3f')} | {r['fid']:.2f} | {r['is']:.2f} | "
                     f"{r['kid']:.4f} | {cell(r['acc'], '.3f')} | {cell(r['ms'], '.1f')} | {r['img_per_s']:.0f} | "
                     f"{r['train_s']:.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--presets", default="dcgan,pixelcnn,cpixelcnn")
    ap.add_argument("--title", default="PixelCNN beside the GANs")
    args = ap.parse_args()
    names = [n for n in args.presets.split(",") if n]
    for n in names:
        family_of(n)  # an unknown preset fails here, naming the known ones
    WORK.mkdir(parents=True, exist_ok=True)
    os.chdir(WORK)
    params = load_params(ROOT / "params.yaml", overrides(args))
    if not Path("models/evaluator.pt").is_file():
        stages.prepare(params)
        stages.evaluator(params)
    load = os.getloadavg()
    command = (f"python bench/pixelcnn.py --steps {args.steps} --width {args.width} --samples {args.samples} "
               f"--presets {','.join(names)}")
    rows: list[dict] = []
    for name in names:
        rows.append(run(name, args))
        print(json.dumps(rows[-1]), flush=True)
        body = (f"Machine: {machine()}; load average at the start {load[0]:.1f}. Command: `{command}`. Each preset "
                f"trained on mnist5k (4,500 training images, 32x32) for {args.steps} steps at batch 64, width "
                f"{args.width} (PixelCNN: feature maps of each stack, 8 gated layers), ADA off, train.precision auto, "
                f"then its final EMA network evaluated with the domain evaluator: {args.samples} samples against the "
                "500 holdout images (FID/IS/KID; the GAN presets' FIDs in the Variants section are at 5,000 samples "
                "and not comparable with these), and PixelCNN's negative log-likelihood of the holdout in bits per "
                "dimension (a GAN has none). ms per sample: the evaluation's sampling time over its sample count "
                "(batches of 250; a PixelCNN takes one network step per pixel).\n\n" + table(rows) + "\n\n" + PUBLISHED)
        write_section(args.title, body)


if __name__ == "__main__":
    main()
