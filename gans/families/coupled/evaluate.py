"""Evaluating a CoGAN: each domain's samples against its real holdout (FID, KID, IS, precision/recall per
domain; ``fid`` is the mean of the two, the primary metric), and how well the two images of a latent
correspond:

- ``pair_label_agreement``: the share of pairs whose two images the domain classifiers give the same class
  (any labelled pair of domains, paired or not), beside ``pair_label_agreement_shuffled``, the same for
  images of different latents (the chance level of this generator);
- ``pair_agreement``: for a bundled source whose domains differ by a known transform (``mnist5k-edges``: the
  edge map; ``mnist5k-negatives``: the negative), the paper's pixel agreement: the transform applied to one
  image of the pair, both binarised at mid-grey, the share of equal pixels; beside it
  ``pair_agreement_shuffled`` (images of different latents) and ``pair_agreement_real`` (real holdout pairs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gans.data import to_uint8
from gans.evaluation import frechet_distance, generative_metrics
from gans.family import EvalContext
from gans.families.coupled.nets import DOMAINS
from gans.families.noise.evaluate import SEED_STRIDE
from gans.sampling import Truncation, latents_for_seeds


@torch.no_grad()
def draw_pairs(generator: nn.Module, seeds: Sequence[int], *, z_dim: int, device: torch.device,
               batch_size: int = 256, truncation: Truncation = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair each seed's (truncated) latent draws: (uint8 (N, C_a, R, R), uint8 (N, C_b, R, R))."""
    generator.eval()
    a, b = [], []
    z = latents_for_seeds(seeds, z_dim, truncation)
    for start in range(0, len(seeds), batch_size):
        fa, fb = generator(z[start:start + batch_size].to(device))
        a.append(to_uint8(fa).cpu())
        b.append(to_uint8(fb).cpu())
    if not a:
        empty = torch.empty(0, dtype=torch.uint8)
        return empty, empty
    return torch.cat(a), torch.cat(b)


def pair_grid(a: torch.Tensor, b: torch.Tensor, per_row: int = 8) -> torch.Tensor:
    """uint8 (C, H, W): rows of ``per_row`` domain-a images, each above the domain-b images of the same
    latents (grey becomes colour when the other domain is colour)."""
    from torchvision.utils import make_grid  # here: importing torchvision takes ~1.7 s

    channels = max(a.shape[1], b.shape[1])
    a, b = a.expand(-1, channels, -1, -1), b.expand(-1, channels, -1, -1)
    rows = [x for i in range(0, len(a), per_row) for x in (a[i:i + per_row], b[i:i + per_row])]
    return make_grid(torch.cat(rows), nrow=per_row, padding=2, pad_value=0)


def _features(pairs: dict[str, torch.Tensor], ctx: EvalContext) -> dict[str, Any]:
    out = {}
    for d in DOMAINS:
        fake = ctx.extractors[d].extract(pairs[d], batch_size=ctx.batch_size, desc=f"generated features ({d})")
        out[d] = fake
    return out


def score(artifact, ctx: EvalContext) -> dict[str, float]:
    """The mean of the two domains' FIDs on ``ctx.num_samples`` pairs (periodic evaluation)."""
    a, b = artifact.generate_pair(list(range(ctx.num_samples)), batch_size=ctx.batch_size)
    fakes = _features({"a": a, "b": b}, ctx)
    return {"fid": sum(frechet_distance(ctx.real_features(d).features, fakes[d].features) for d in DOMAINS) / 2}


def pixel_agreement(x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of equal pixels of two uint8 image batches of one shape, binarised at mid-grey."""
    return float(((x >= 128) == (y >= 128)).double().mean())


def evaluate(artifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
    """Every metric of eval.json for a CoGAN, and its pair grid."""
    from gans.domains import PAIR_TRANSFORMS

    n, bs = ctx.num_samples, ctx.batch_size
    seeds = list(range(ctx.seed * SEED_STRIDE, ctx.seed * SEED_STRIDE + n))
    a, b = artifact.generate_pair(seeds, batch_size=bs)
    pairs = {"a": a, "b": b}
    fakes = _features(pairs, ctx)
    metrics: dict[str, Any] = {}
    for d in DOMAINS:
        for key, value in generative_metrics(ctx.real_features(d), fakes[d], kid_subset_size=ctx.kid_subset_size).items():
            metrics[f"{key}_{d}"] = value
    metrics["fid"] = (metrics["fid_a"] + metrics["fid_b"]) / 2
    if all(ctx.classifiers.get(d) is not None for d in DOMAINS):
        predicted = {d: (fakes[d].logits if ctx.extractors[d] is ctx.classifiers[d]
                         else ctx.classifiers[d].extract(pairs[d], batch_size=bs).logits).argmax(1) for d in DOMAINS}
        metrics["pair_label_agreement"] = float((predicted["a"] == predicted["b"]).double().mean())
        metrics["pair_label_agreement_shuffled"] = float((predicted["a"] == predicted["b"].roll(1)).double().mean())
    if ctx.source in PAIR_TRANSFORMS:
        src, dst, transform, name = PAIR_TRANSFORMS[ctx.source]
        moved = transform(pairs[src])
        real = ctx.holdout.parts
        metrics.update({
            "pair_agreement": pixel_agreement(moved, pairs[dst]),
            "pair_agreement_shuffled": pixel_agreement(moved, pairs[dst].roll(1, 0)),
            "pair_agreement_real": pixel_agreement(transform(real[src].images), real[dst].images),
            "pair_transform": f"{name} of domain {src} against domain {dst}, binarised at 128"})
    metrics.update({"num_samples": n, "num_real_a": len(ctx.holdout.parts["a"]),
                    "num_real_b": len(ctx.holdout.parts["b"])})
    return metrics, pair_grid(*artifact.generate_pair(list(range(32))))
