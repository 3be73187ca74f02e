"""Evaluating an upscaler on the held-out pairs, always beside the bicubic baseline: PSNR and SSIM on the Y
channel with a border of ``scale`` pixels cropped (the convention of SR papers and BasicSR), FID (and KID,
precision, recall) of the upscaled holdout against the real high-resolution holdout, and label preservation
(the high-resolution domain classifier gives the upscaled image its original's label)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gans.data import Dataset, to_float, to_uint8
from gans.evaluation import frechet_distance, generative_metrics
from gans.family import EvalContext

FIDELITY_NOTE = ("PSNR (dB) and SSIM on the Y channel (ITU-R BT.601 luma, 16..235, of RGB in [0, 1]; a grey image "
                 "counts as R = G = B), with a border of `scale` pixels cropped, averaged over images (BasicSR's "
                 "convention; SSIM with an 11x11 Gaussian window, sigma 1.5). Per-image PSNR is capped at 100 dB.")
PSNR_CAP = 100.0


@torch.no_grad()
def upscale(generator: nn.Module, images: torch.Tensor, *, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """uint8 (N, C, r, r) -> uint8 (N, C, R, R) through ``generator`` in eval mode."""
    generator.eval()
    out = [to_uint8(generator(to_float(chunk.to(device)))).cpu() for chunk in images.split(batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)


def bicubic(images: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 (N, C, r, r) -> uint8 (N, C, r * scale, r * scale), bicubic interpolation: the baseline."""
    x = F.interpolate(images.float(), scale_factor=scale, mode="bicubic", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def luma(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W), C 1 or 3 -> float64 (N, 1, H, W) in [0, 1]: BT.601 Y on the 16..235 range."""
    x = images.double() / 255
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64).view(1, 3, 1, 1)
    return (16.0 + (x * weights).sum(1, keepdim=True)) / 255


def y_fidelity(output: torch.Tensor, target: torch.Tensor, crop: int) -> dict[str, float]:
    """Mean per-image PSNR (dB) and SSIM between uint8 image sets on Y with ``crop`` border pixels removed."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    x, y = luma(output), luma(target)
    if crop:
        x, y = x[..., crop:-crop, crop:-crop], y[..., crop:-crop, crop:-crop]
    psnr = peak_signal_noise_ratio(x, y, data_range=1.0, dim=(1, 2, 3), reduction="none")
    return {"psnr": float(psnr.clamp(max=PSNR_CAP).mean()),
            "ssim": float(structural_similarity_index_measure(x, y, data_range=1.0))}


def superres_grid(generator: nn.Module, data: Dataset, *, scale: int, device: torch.device,
                  count: int = 8) -> torch.Tensor:
    """uint8 (C, H, W): one row per held-out image (``count``, spread over the set); columns input (enlarged
    without interpolation) | bicubic | model | original."""
    from gans.families.translation.evaluate import spread
    from torchvision.utils import make_grid

    idx = spread(len(data.parts["lr"]), count)
    lr, hr = data.parts["lr"].images[idx], data.parts["hr"].images[idx]
    columns = [lr.repeat_interleave(scale, -1).repeat_interleave(scale, -2), bicubic(lr, scale),
               upscale(generator, lr, device=device), hr]
    cells = torch.stack(columns, dim=1).flatten(0, 1)
    return make_grid(cells, nrow=len(columns), padding=2, pad_value=0)


def _holdout(ctx: EvalContext) -> tuple[torch.Tensor, torch.Tensor]:
    return ctx.holdout.parts["lr"].images[:ctx.num_samples], ctx.holdout.parts["hr"].images[:ctx.num_samples]


def score(artifact, ctx: EvalContext) -> dict[str, float]:
    """FID of the upscaled holdout (periodic evaluation)."""
    lr, _ = _holdout(ctx)
    fake = artifact.upscale(lr, batch_size=ctx.batch_size)
    feats = ctx.extractors["hr"].extract(fake, batch_size=ctx.batch_size, desc="fid").features
    return {"fid": frechet_distance(ctx.real_features("hr").features, feats)}


def _realism(ctx: EvalContext, images: torch.Tensor, desc: str, full: bool) -> dict[str, float]:
    """FID (with KID, precision, recall when ``full``) against the real holdout, and label preservation."""
    extractor, classifier = ctx.extractors["hr"], ctx.classifiers.get("hr")
    feats = extractor.extract(images, batch_size=ctx.batch_size, desc=desc)
    real = ctx.real_features("hr")
    if full:
        gm = generative_metrics(real, feats, kid_subset_size=ctx.kid_subset_size)
        out = {k: gm[k] for k in ("fid", "kid", "precision", "recall")}
    else:
        out = {"fid": frechet_distance(real.features, feats.features)}
    labels = ctx.holdout.parts["hr"].labels
    if classifier is not None and labels is not None:
        logits = feats.logits if extractor is classifier else classifier.extract(images, batch_size=ctx.batch_size,
                                                                                 desc="labels").logits
        out["label_preservation"] = float((logits.argmax(1) == labels[:len(images)]).double().mean())
    return out


def evaluate(artifact, ctx: EvalContext) -> tuple[dict[str, Any], torch.Tensor]:
    """Every metric of eval.json for an upscaler, the bicubic baseline's beside it (``*_bicubic``), and the grid."""
    lr, hr = _holdout(ctx)
    scale = artifact.scale
    model_out = artifact.upscale(lr, batch_size=ctx.batch_size)
    base_out = bicubic(lr, scale)
    metrics: dict[str, Any] = {"directions": list(artifact.directions), "scale": scale,
                               "lr_resolution": artifact.resolution, "resolution": artifact.output_resolution}
    metrics.update(y_fidelity(model_out, hr, scale))
    metrics.update(_realism(ctx, model_out, "upscaled", full=True))
    baseline = {**y_fidelity(base_out, hr, scale), **_realism(ctx, base_out, "bicubic", full=False)}
    metrics.update({f"{k}_bicubic": v for k, v in baseline.items()})
    metrics["psnr_gain"] = metrics["psnr"] - metrics["psnr_bicubic"]
    classifier, labels = ctx.classifiers.get("hr"), ctx.holdout.parts["hr"].labels
    if classifier is not None and labels is not None:  # the ceiling: the classifier on the real originals
        logits = classifier.extract(hr, batch_size=ctx.batch_size, desc="labels").logits
        metrics["label_accuracy_real"] = float((logits.argmax(1) == labels[:len(hr)]).double().mean())
    metrics.update({"num_samples": len(lr), "num_real": len(ctx.holdout.parts["hr"]), "fidelity_note": FIDELITY_NOTE,
                    "baseline_note": "*_bicubic: bicubic interpolation of the same low-resolution inputs"})
    grid = superres_grid(artifact.generator, ctx.holdout, scale=scale, device=ctx.device)
    return metrics, grid
