"""CoGAN on the bundled domain pairs; writes the section "Coupled GANs (CoGAN)" of bench/RESULTS.md.

    python bench/coupled.py [--steps 2000] [--width 32] [--batch 64] [--samples 2000] [--sources ...]

For each bundled pair (``mnist5k-edges``: digit edge maps and digits; ``mnist5k-negatives``: digits and their
negatives) CoGAN trains twice through the pipeline's own prepare, evaluator, train and evaluate stages in a
scratch folder (bench/out/coupled/SOURCE, one prepared set and one pair of domain classifiers per source):
with the paper's weight sharing, and with none (``shared_g: 0``, ``shared_d: 0``: two independent GANs on
the same halves, the ablation that shows what the sharing buys). Each row: FID per domain (domain
features), the paper's pixel agreement of the known transform against the pair drawn from one latent,
the same for images of different latents (chance for this generator), the share of pairs the domain
classifiers give one class, and the time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import chdir
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, write_section  # noqa: E402
from pipeline import stages  # noqa: E402
from pipeline.params import load_params  # noqa: E402

WORK = ROOT / "bench/out/coupled"
SHARING = {"shared (paper)": [], "none (two GANs)": ["model.overrides.shared_g=0", "model.overrides.shared_d=0"]}


def overrides(args: argparse.Namespace, source: str, folder: Path, extra: list[str]) -> list[str]:
    return [f"data.source={source}", "data.resolution=32", "model.variant=cogan", f"model.width={args.width}",
            f"train.steps={args.steps}", f"train.batch_size={args.batch}", "train.eval_every=0",
            "train.sample_every=100000", f"train.checkpoint_every={args.steps}", "augment.ada.enabled=false",
            f"evaluate.num_samples={args.samples}", f"tracking.uri=sqlite:///{folder}/mlflow.db", *extra]


def run(args: argparse.Namespace, source: str, sharing: str) -> dict:
    folder = WORK / source
    folder.mkdir(parents=True, exist_ok=True)
    with chdir(folder):
        params = load_params(ROOT / "params.yaml", overrides(args, source, folder, SHARING[sharing]))
        if not Path("metrics/evaluator.json").is_file():
            stages.prepare(params)
            stages.evaluator(params)
        started = time.perf_counter()
        stages.augment(params)
        train = stages.train(params)
        ev = stages.evaluate(params)
    return {"source": source, "sharing": sharing, **{k: ev.get(k) for k in (
        "fid_a", "fid_b", "pair_agreement", "pair_agreement_shuffled", "pair_agreement_real",
        "pair_label_agreement", "pair_label_agreement_shuffled")},
        "img_per_s": train["img_per_s"], "train_s": train["seconds"], "seconds": time.perf_counter() - started}


def table(rows: list[dict]) -> str:
    lines = ["| source | sharing | FID a | FID b | pixel agreement | same, other latents | real pairs | "
             "label agreement | same, other latents | train img/s | train s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['source']} | {r['sharing']} | {r['fid_a']:.2f} | {r['fid_b']:.2f} | "
                     f"{r['pair_agreement']:.3f} | {r['pair_agreement_shuffled']:.3f} | {r['pair_agreement_real']:.3f} | "
                     f"{r['pair_label_agreement']:.3f} | {r['pair_label_agreement_shuffled']:.3f} | "
                     f"{r['img_per_s']:.0f} | {r['train_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--sources", default="mnist5k-edges,mnist5k-negatives")
    ap.add_argument("--title", default="Coupled GANs (CoGAN)")
    args = ap.parse_args()
    load = os.getloadavg()
    command = (f"python bench/coupled.py --steps {args.steps} --width {args.width} --batch {args.batch} "
               f"--samples {args.samples} --sources {args.sources}")
    rows: list[dict] = []
    for source in [s for s in args.sources.split(",") if s]:
        for sharing in SHARING:
            rows.append(run(args, source, sharing))
            print(json.dumps(rows[-1]), flush=True)
            body = (f"Machine: {machine()}; load average at the start {load[0]:.1f}. Command: `{command}`. Each "
                    f"row: CoGAN trained {args.steps} steps at batch {args.batch} (a batch of each domain per update; "
                    "paired data split in two halves, one per domain, so no pair is seen; img/s counts both domains' images), width "
                    f"{args.width}, 32x32, ADA off, train.precision auto; the EMA generator evaluated on "
                    f"{args.samples} pairs. FID per domain against its real holdout (domain features). Pixel "
                    "agreement: the source's known transform (edge map of the digit; negative of the digit) "
                    "applied to one image of a pair, both binarised at 128, share of equal pixels; 'other "
                    "latents' pairs each image with the next latent's partner (this generator's chance level); "
                    "'real pairs' is the holdout's own pairs. Label agreement: the share of pairs the two domain "
                    "classifiers give the same digit. For context, Liu and Tuzel 2016 (full MNIST) measure the same "
                    "pixel agreement and report it rising with the number of shared generator layers, and barely "
                    "depending on the discriminator's.\n\n"
                    + table(rows))
            write_section(args.title, body)


if __name__ == "__main__":
    main()
