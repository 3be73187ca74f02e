"""Evaluating a multi-domain translator on the holdout, per target domain (one-of-K: each domain; multi-hot:
each attribute flipped): target-domain accuracy (the evaluator's domain classifier, trained on the real domain
labels, gives the translation its target: the paper's classification-error protocol, over images not already
in that domain), FID of the translations against the real holdout images of the target domain, the
reconstruction error of the round trip back to the original domain, and label preservation (the digit
classifier keeps the image's label). Top-level numbers are means over the domains; ``fid`` is the primary."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gans.data import Dataset, to_float, to_uint8
from gans.evaluation import frechet_distance
from gans.family import EvalContext


@torch.no_grad()
def translate(generator: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, device: torch.device,
              batch_size: int = 256) -> torch.Tensor:
    """uint8 (N, C, R, R) and target vectors (N, K) -> uint8 (N, C, R, R)."""
    generator.eval()
    out = [to_uint8(generator(to_float(x.to(device)), t.to(device).float())).cpu()
           for x, t in zip(images.split(batch_size), targets.split(batch_size))]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)


def targets_for(attributes: torch.Tensor, k: int, exclusive: bool) -> torch.Tensor:
    """(N, K) target vectors for domain ``k``: its one-hot (one-of-K), or each row with attribute ``k`` flipped."""
    if exclusive:
        return torch.nn.functional.one_hot(torch.full((len(attributes),), k), attributes.shape[1]).to(torch.uint8)
    out = attributes.clone()
    out[:, k] = 1 - out[:, k]
    return out


def domain_grid(generator: nn.Module, data: Dataset, spec, *, device: torch.device, count: int = 8) -> torch.Tensor:
    """uint8 (C, H, W): one row per held-out image (``count``, spread over the set); columns the input, then its
    translation to each domain (one-hot targets) or with each attribute flipped."""
    from torchvision.utils import make_grid

    from gans.families.translation.evaluate import spread

    part = data.parts["images"]
    idx = spread(len(part), count)
    x, c = part.images[idx], part.attributes[idx]
    columns = [x] + [translate(generator, x, targets_for(c, k, spec.exclusive), device=device)
                     for k in range(spec.num_domains)]
    return make_grid(torch.stack(columns, dim=1).flatten(0, 1), nrow=len(columns), padding=2, pad_value=0)


def _holdout(ctx: EvalContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    part = ctx.holdout.parts["images"]
    n = ctx.num_samples
    return part.images[:n], part.attributes[:n], None if part.labels is None else part.labels[:n]


def _real_rows(ctx: EvalContext, k: int, value: int) -> torch.Tensor:
    return (ctx.holdout.parts["images"].attributes[:, k] == value).nonzero().flatten()


def score(artifact, ctx: EvalContext) -> dict[str, float]:
    """The mean FID over the target domains (periodic evaluation)."""
    x, c, _ = _holdout(ctx)
    real = ctx.real_features("images").features
    fids = []
    for k, name in enumerate(artifact.domains):
        targets = targets_for(c, k, artifact.exclusive)
        fake = artifact.translate_to(x, targets, batch_size=ctx.batch_size)
        feats = ctx.extractors["images"].extract(fake, batch_size=ctx.batch_size, desc=f"fid {name}")
        fids.append(_fid(ctx, artifact, k, targets, feats, real))
    return {"fid": sum(fids) / len(fids)}


def _fid(ctx: EvalContext, artifact, k: int, targets: torch.Tensor, feats, real: torch.Tensor) -> float:
    """FID of the translations to domain k against the real held-out images of domain k."""
    if artifact.exclusive:
        return frechet_distance(real[_real_rows(ctx, k, 1)], feats.features)
    return _flip_fid(ctx, k, targets, feats, real)


def _flip_fid(ctx: EvalContext, k: int, targets: torch.Tensor, feats, real: torch.Tensor) -> float:
    """Multi-hot: the translations that now have attribute k on against the real images with it on (and off
    against off), averaged over the two."""
    out = []
    for value in (0, 1):
        fake_rows = (targets[:, k] == value).nonzero().flatten()
        real_rows = _real_rows(ctx, k, value)
        if len(fake_rows) > 1 and len(real_rows) > 1:
            out.append(frechet_distance(real[real_rows], feats.features[fake_rows]))
    return sum(out) / len(out) if out else float("nan")


def evaluate(artifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
    from gans.evaluation import attribute_accuracy

    x, c, labels = _holdout(ctx)
    real = ctx.real_features("images").features
    domain_clf, digit_clf = ctx.classifiers.get("attributes"), ctx.classifiers.get("images")
    per: dict[str, dict[str, float]] = {}
    for k, name in enumerate(artifact.domains):
        targets = targets_for(c, k, artifact.exclusive)
        fake = artifact.translate_to(x, targets, batch_size=ctx.batch_size)
        feats = ctx.extractors["images"].extract(fake, batch_size=ctx.batch_size, desc=f"to {name}")
        m: dict[str, float] = {}
        m["fid"] = _fid(ctx, artifact, k, targets, feats, real)
        moved = (c[:, k] == 0).nonzero().flatten() if artifact.exclusive else torch.arange(len(x))
        if domain_clf is not None and len(moved):
            logits = domain_clf.extract(fake[moved], batch_size=ctx.batch_size, desc="domains").logits
            if artifact.exclusive:
                m["target_accuracy"] = float((logits.argmax(1) == k).double().mean())
            else:  # the flipped attribute reads as its new value
                m["target_accuracy"] = float(((logits[:, k] > 0).long() == targets[moved, k].long()).double().mean())
            m["all_attributes_accuracy"] = attribute_accuracy(logits, targets[moved], exclusive=artifact.exclusive)
        if digit_clf is not None and labels is not None:
            logits = feats.logits if ctx.extractors["images"] is digit_clf else digit_clf.extract(
                fake, batch_size=ctx.batch_size, desc="labels").logits
            m["label_preservation"] = float((logits.argmax(1) == labels).double().mean())
        back = artifact.translate_to(fake, c, batch_size=ctx.batch_size)
        m["reconstruction_error"] = float((back.double() - x.double()).abs().mean() / 255)
        m["num_translated"] = float(len(moved))
        per[name] = m
    metrics: dict[str, Any] = {"domains": list(artifact.domains), "exclusive": artifact.exclusive}
    for name, values in per.items():
        metrics.update({f"{key}_{name}": v for key, v in values.items() if key != "num_translated"})
    for key in ("fid", "target_accuracy", "all_attributes_accuracy", "label_preservation", "reconstruction_error"):
        present = [v[key] for v in per.values() if key in v]
        if present:
            metrics[key] = sum(present) / len(present)
    metrics.update({"num_samples": len(x), "num_real": len(ctx.holdout.parts["images"]),
                    "protocol_note": "per target domain (one-of-K: each domain, over held-out images from the other "
                                     "domains; multi-hot: each attribute flipped, over every held-out image); "
                                     "target_accuracy by the evaluator's domain classifier trained on real domain "
                                     "labels; top-level numbers are means over the domains"})
    grid = domain_grid(artifact.generator, ctx.holdout, artifact.spec, device=ctx.device)
    return metrics, grid
