"""Evaluating a noise-to-image generator: FID, IS, KID, precision/recall of its samples against the real
holdout, and the label metrics of conditional generators (conditional accuracy, per-class FID) and InfoGAN
(how well its categorical code picks the class)."""

from __future__ import annotations

import time
from typing import Any

import torch

from gans.evaluation import (Features, cluster_accuracy, cluster_purity, frechet_distance, generative_metrics,
                             precision_recall)
from gans.family import EvalContext
from gans.sampling import grid_seeds_labels, image_grid

SEED_STRIDE = 10_000_000  # evaluate.seed s draws the seeds s * stride, s * stride + 1, ...


def eval_labels(num_classes: int, n: int) -> list[int] | None:
    """Labels cycling through the classes (None for unconditional generators)."""
    return [i % num_classes for i in range(n)] if num_classes else None


def label_metrics(spec: dict[str, Any], labels: list[int], predicted: torch.Tensor, real: Features,
                  fake: Features, holdout_labels: torch.Tensor | None) -> dict[str, Any]:
    """Conditional accuracy and per-class FID (class-conditional), or how well InfoGAN's categorical
    code picks the class: accuracy under the best code-to-class matching, and purity."""
    y = torch.tensor(labels)
    if spec["conditioning"] == "infogan":
        return {"cluster_accuracy": cluster_accuracy(y, predicted), "cluster_purity": cluster_purity(y, predicted)}
    out: dict[str, Any] = {"conditional_accuracy": float((predicted == y).double().mean())}
    if holdout_labels is not None:
        per_class = {}
        for c in range(spec["num_classes"]):
            r, f = real.features[holdout_labels == c], fake.features[y == c]
            if len(r) >= 2 and len(f) >= 2:
                per_class[str(c)] = frechet_distance(r, f)
        out["per_class_fid"] = per_class
    return out


def score(artifact, ctx: EvalContext) -> dict[str, float]:
    """FID of ``ctx.num_samples`` samples (seeds 0..n-1) on the extractor's features: periodic evaluation."""
    n = ctx.num_samples
    fake = artifact.generate(list(range(n)), eval_labels(artifact.num_classes, n), batch_size=ctx.batch_size)
    features = ctx.extractors["images"].extract(fake, batch_size=ctx.batch_size, desc="fid").features
    return {"fid": frechet_distance(ctx.real_features("images").features, features)}


def evaluate(artifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
    """Every metric of eval.json for a generator, and its sample grid."""
    return sample_metrics(artifact, ctx)


def sample_metrics(artifact, ctx: EvalContext, spec: dict[str, Any] | None = None, *,
                   timed: bool = False) -> tuple[dict[str, Any], torch.Tensor]:
    """FID, IS, KID and precision/recall of ``ctx.num_samples`` samples of ``artifact.generate`` against the
    holdout, the label metrics of a conditional generator (``spec``: conditioning and num_classes, by default
    the artifact's network spec), with ``timed`` the sampling time per image; and the sample grid (a row per
    class when conditional). Any family whose artifact generates from seeds scores its samples with this."""
    n, bs = ctx.num_samples, ctx.batch_size
    seeds = list(range(ctx.seed * SEED_STRIDE, ctx.seed * SEED_STRIDE + n))
    labels = eval_labels(artifact.num_classes, n)
    started = time.perf_counter()
    fake = artifact.generate(seeds, labels, batch_size=bs)
    metrics: dict[str, Any] = {"sample_ms_per_image": (time.perf_counter() - started) * 1000 / n} if timed else {}
    extractor, holdout = ctx.extractors["images"], ctx.holdout.images
    real_f = ctx.real_features("images")
    fake_f = extractor.extract(fake, batch_size=bs, desc="generated features")
    metrics.update(generative_metrics(real_f, fake_f, kid_subset_size=ctx.kid_subset_size))
    domain = ctx.classifiers.get("images")
    if labels is not None and domain is not None:
        logits = fake_f.logits if extractor is domain else domain.extract(fake, batch_size=bs).logits
        metrics.update(label_metrics(spec or artifact.spec, labels, logits.argmax(1), real_f, fake_f, holdout.labels))
    metrics.update({"num_samples": n, "num_real": len(holdout)})
    if ctx.truncation and getattr(artifact, "truncates", False):
        metrics["truncation"] = truncation_sweep(artifact, ctx, seeds, labels, metrics)
    grid_seeds, grid_labels = grid_seeds_labels(artifact.num_classes)
    return metrics, image_grid(artifact.generate(grid_seeds, grid_labels))


def truncation_sweep(artifact, ctx: EvalContext, seeds: list[int], labels: list[int] | None,
                     untruncated: dict[str, Any]) -> list[dict[str, float]]:
    """FID, precision and recall of the same seeds drawn at each psi of ``ctx.truncation`` (largest first; psi 1
    is ``untruncated``'s): the quality/diversity trade-off of the truncation trick."""
    real = ctx.real_features("images")
    rows = []
    for psi in sorted(ctx.truncation, reverse=True):
        if psi == 1:
            scores = {k: untruncated[k] for k in ("fid", "precision", "recall")}
        else:
            fake = artifact.generate(seeds, labels, batch_size=ctx.batch_size, truncation=psi)
            features = ctx.extractors["images"].extract(fake, batch_size=ctx.batch_size, desc=f"psi {psi:g}")
            scores = {"fid": frechet_distance(real.features, features.features), **precision_recall(real, features)}
        rows.append({"psi": float(psi), **scores})
    return rows
