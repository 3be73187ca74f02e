"""Evaluating a translator on the held-out split, per direction: FID (and KID, precision, recall) of the
translations against the real target-domain holdout, label preservation (the target domain's classifier
agrees with the source image's label: the small-scale analogue of pix2pix's FCN score), PSNR, SSIM and L1
against the ground truth where the data is paired, and the cycle-reconstruction error of two-way models.
Top-level numbers are the means over the directions; ``fid`` is the primary metric."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gans.data import Dataset, to_float, to_uint8
from gans.evaluation import generative_metrics
from gans.family import EvalContext

SOURCE = {"a2b": "a", "b2a": "b"}
TARGET = {"a2b": "b", "b2a": "a"}
REVERSE = {"a2b": "b2a", "b2a": "a2b"}


@torch.no_grad()
def translate(generator: nn.Module, images: torch.Tensor, *, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """uint8 (N, C_in, R, R) -> uint8 (N, C_out, R, R) through ``generator`` in eval mode."""
    generator.eval()
    out = [to_uint8(generator(to_float(chunk.to(device)))).cpu() for chunk in images.split(batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)


def _rgb(images: torch.Tensor, channels: int) -> torch.Tensor:
    return images.expand(-1, channels, -1, -1) if images.shape[1] != channels else images


def spread(n: int, count: int) -> torch.Tensor:
    """``count`` indices spread evenly over ``range(n)`` (all of them when n <= count)."""
    return torch.arange(n) if n <= count else torch.linspace(0, n - 1, count).round().long()


def translation_grid(generators: dict[str, nn.Module], data: Dataset, *, device: torch.device,
                     count: int = 8) -> torch.Tensor:
    """uint8 (C, H, W): one row per image (``count`` of each domain, spread over it: sets sorted by class show
    several classes); per direction the columns are input | output (| target, when the data is paired)."""
    columns = []
    for d, g in generators.items():
        idx = spread(len(data.parts[SOURCE[d]]), count)
        src = data.parts[SOURCE[d]].images[idx]
        columns += [src, translate(g, src, device=device)]
        if data.layout == "paired":
            columns.append(data.parts[TARGET[d]].images[idx])
    rows = min(len(c) for c in columns)
    channels = max(c.shape[1] for c in columns)
    cells = torch.stack([_rgb(c[:rows], channels) for c in columns], dim=1).flatten(0, 1)  # row-major
    from torchvision.utils import make_grid  # here: importing torchvision takes ~1.7 s

    return make_grid(cells, nrow=len(columns), padding=2, pad_value=0)


def _sources(ctx: EvalContext, d: str) -> torch.Tensor:
    return ctx.holdout.parts[SOURCE[d]].images[:ctx.num_samples]


def score(artifact, ctx: EvalContext) -> dict[str, float]:
    """The mean FID over the directions (periodic evaluation)."""
    from gans.evaluation import frechet_distance

    fids = []
    for d in artifact.directions:
        fake = artifact.translate(_sources(ctx, d), d, batch_size=ctx.batch_size)
        feats = ctx.extractors[TARGET[d]].extract(fake, batch_size=ctx.batch_size, desc=f"fid {d}").features
        fids.append(frechet_distance(ctx.real_features(TARGET[d]).features, feats))
    return {"fid": sum(fids) / len(fids)}


def _label_preservation(ctx: EvalContext, d: str, fake: torch.Tensor, fake_logits: torch.Tensor | None) -> float | None:
    """Share of translations the target domain's classifier gives the source image's label (None when a
    domain has no labels or the domains name their classes differently)."""
    src, tgt = ctx.holdout.parts[SOURCE[d]], ctx.holdout.parts[TARGET[d]]
    classifier = ctx.classifiers.get(TARGET[d])
    if classifier is None or src.labels is None or src.classes != tgt.classes:
        return None
    if fake_logits is None:
        fake_logits = classifier.extract(fake, batch_size=ctx.batch_size, desc="labels").logits
    return float((fake_logits.argmax(1) == src.labels[:len(fake)]).double().mean())


def _fidelity(fake: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR (dB), SSIM and L1 against the ground truth, on images scaled to [0, 1]."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    x, y = fake.double() / 255, target.double() / 255
    return {"psnr": float(peak_signal_noise_ratio(x, y, data_range=1.0)),
            "ssim": float(structural_similarity_index_measure(x, y, data_range=1.0)),
            "l1": float((x - y).abs().mean())}


def _direction(artifact, ctx: EvalContext, d: str) -> dict[str, Any]:
    src = _sources(ctx, d)
    fake = artifact.translate(src, d, batch_size=ctx.batch_size)
    extractor = ctx.extractors[TARGET[d]]
    fake_f = extractor.extract(fake, batch_size=ctx.batch_size, desc=f"translated {d}")
    gm = generative_metrics(ctx.real_features(TARGET[d]), fake_f, kid_subset_size=ctx.kid_subset_size)
    out: dict[str, Any] = {k: gm[k] for k in ("fid", "kid", "precision", "recall")}
    out["num_samples"] = len(src)
    own = fake_f.logits if extractor is ctx.classifiers.get(TARGET[d]) else None
    lp = _label_preservation(ctx, d, fake, own)
    if lp is not None:
        out["label_preservation"] = lp
    if ctx.holdout.layout == "paired":
        out.update(_fidelity(fake, ctx.holdout.parts[TARGET[d]].images[:len(fake)]))
    if REVERSE[d] in artifact.directions:
        back = artifact.translate(fake, REVERSE[d], batch_size=ctx.batch_size)
        out["cycle_error"] = float((back.double() - src.double()).abs().mean() / 255)
    return out


def evaluate(artifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
    """Every metric of eval.json for a translator (per direction, suffixed ``_a2b``/``_b2a``, and their means),
    and its sample grid."""
    per = {d: _direction(artifact, ctx, d) for d in artifact.directions}
    metrics: dict[str, Any] = {"directions": list(artifact.directions)}
    for d, values in per.items():
        metrics.update({f"{k}_{d}": v for k, v in values.items()})
    keys = {k for values in per.values() for k in values if k != "num_samples"}
    for k in sorted(keys):
        present = [values[k] for values in per.values() if k in values]
        metrics[k] = sum(present) / len(present)
    metrics["num_samples"] = sum(values["num_samples"] for values in per.values())
    metrics["num_real"] = sum(len(ctx.holdout.parts[TARGET[d]]) for d in artifact.directions)
    if "psnr" in metrics:
        metrics["fidelity_note"] = "PSNR (dB), SSIM and L1 on [0, 1] pixels against the held-out ground truth"
    grid = translation_grid(artifact.generators, ctx.holdout, device=ctx.device)
    return metrics, grid
