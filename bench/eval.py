"""Evaluation throughput and the domain evaluator's accuracy; writes a section of bench/RESULTS.md.

    python bench/eval.py [--samples 10000]

Measures, side by side in one run on the same 10,000 generated images:
  ours    - features and logits extracted once, then FID, KID, IS and precision/recall;
  direct  - torchmetrics' FID, KID and IS each given the domain network as feature extractor
            (each runs the network over the images itself), no precision/recall.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench.common import machine, write_section  # noqa: E402
from gans.data import to_float  # noqa: E402
from gans.evaluation import DomainExtractor, classifier_from_payload, generative_metrics  # noqa: E402
from gans.io import load_torch  # noqa: E402
from gans.families.noise.nets import NetSpec, build_networks  # noqa: E402
from gans.sampling import generate  # noqa: E402
from pipeline import stages  # noqa: E402
from pipeline.params import load_params  # noqa: E402


class _Net(nn.Module):
    """The domain network as torchmetrics wants it: uint8/float images in, features or logits out."""

    def __init__(self, model: nn.Module, logits: bool) -> None:
        super().__init__()
        self.model, self.logits = model, logits
        self.num_features = model.num_classes if logits else model.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model.features(to_float(x))
        return self.model.head(f) if self.logits else f


def direct(model: nn.Module, real: torch.Tensor, fake: torch.Tensor, batch: int) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    fid = FrechetInceptionDistance(feature=_Net(model, False))
    kid = KernelInceptionDistance(feature=_Net(model, False), subset_size=min(1000, len(real)))
    isc = InceptionScore(feature=_Net(model, True))
    with torch.no_grad():
        for chunk in real.split(batch):
            fid.update(chunk, real=True)
            kid.update(chunk, real=True)
        for chunk in fake.split(batch):
            fid.update(chunk, real=False)
            kid.update(chunk, real=False)
            isc.update(chunk)
    return float(fid.compute())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10_000)
    args = ap.parse_args()
    work = ROOT / "bench/out/eval"
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    params = load_params(ROOT / "params.yaml", [f"tracking.uri=sqlite:///{work}/mlflow.db"])
    stages.prepare(params)
    started = time.perf_counter()
    ev = stages.evaluator(params)
    evaluator_seconds = time.perf_counter() - started
    device = torch.device("cpu")
    model = classifier_from_payload(load_torch("models/evaluator.pt"), device)
    holdout = load_torch("data/prepared/holdout.pt")["images"]
    torch.manual_seed(0)
    g, _ = build_networks("dcgan", NetSpec(channels=1, resolution=32, z_dim=64, width=64))
    fake = generate(g, list(range(args.samples)), None, z_dim=64, device=device)

    t0 = time.perf_counter()
    ext = DomainExtractor(model, device)
    ours = generative_metrics(ext.extract(holdout, batch_size=250), ext.extract(fake, batch_size=250))
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fid_direct = direct(model, holdout, fake, 250)
    direct_s = time.perf_counter() - t0
    n = args.samples
    body = (f"Machine: {machine()}. Command: `python bench/eval.py --samples {n}`.\n\n"
            f"| what | figure |\n| --- | --- |\n"
            f"| domain evaluator holdout accuracy on mnist5k ({ev['holdout_count']} images, {ev['epochs']} epochs) "
            f"| {ev['holdout_accuracy']:.4f} (trained in {evaluator_seconds:.0f} s) |\n"
            f"| ours: extract once, FID + KID + IS + precision/recall, {n} generated vs {len(holdout)} real "
            f"| {ours_s:.1f} s, {n / ours_s:.0f} generated img/s |\n"
            f"| torchmetrics directly: FID + KID + IS with the network as feature extractor (no P/R) "
            f"| {direct_s:.1f} s, {n / direct_s:.0f} generated img/s |\n"
            f"| ratio direct / ours (time) | {direct_s / ours_s:.2f} |\n"
            f"| FID ours vs direct (same features) | {ours['fid']:.4f} vs {fid_direct:.4f} |\n")
    write_section("Evaluation", body)
    print(body)


if __name__ == "__main__":
    main()
