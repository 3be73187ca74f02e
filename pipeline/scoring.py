"""What the evaluate stage and periodic evaluation hand a family's evaluation: the feature extractors and
domain classifiers per data part, the holdout, and cached features of the real holdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import torch

from gans.data import Dataset
from gans.evaluation import DomainExtractor, Features, cached_features, classifier_from_payload
from gans.families import family_named, load_artifact
from gans.family import EvalContext, Extractor
from pipeline import paths
from pipeline.files import load_dataset_file, load_torch_file, read_json
from pipeline.params import Params
from pipeline.paths import project_root


def domain_extractors(device: torch.device) -> tuple[dict[str, DomainExtractor], str]:
    """The evaluator stage's classifiers by data part (``images``; or ``a`` and ``b``), and its id."""
    payload = load_torch_file(paths.EVALUATOR, "evaluator")  # a damaged file names the stage to rerun
    payloads = payload["parts"] if "parts" in payload else {"images": payload}
    return ({name: DomainExtractor(classifier_from_payload(p, device), device) for name, p in payloads.items()},
            payload["id"])


def check_extractor_inputs(params: Params) -> None:
    """Fail before any work when the Inception weights are missing or unreadable."""
    if params.evaluate.features == "inception":
        from gans.inception import check_weights, resolve_weights

        check_weights(resolve_weights(params.evaluate.inception_weights))


def _extractors(params: Params, parts: list[str], domain: dict[str, DomainExtractor], domain_id: str,
                device: torch.device) -> tuple[dict[str, Extractor], str, str]:
    """The extractor ``evaluate.features`` names for each part, its label for reports and its id."""
    if params.evaluate.features == "inception":
        from gans.inception import InceptionExtractor, resolve_weights

        ext = InceptionExtractor(resolve_weights(params.evaluate.inception_weights), device)
        return {name: ext for name in parts}, f"inception:{ext.id}", ext.id
    return dict(domain), f"domain:{domain_id}", domain_id


def _real_features(extractor: Extractor, kind: str, part: str, images: torch.Tensor, batch_size: int) -> Features:
    """Holdout features, cached by extractor kind and id, part, data hash and count: a second evaluation
    reuses them."""
    data_hash = read_json(paths.PREPARED / "meta.json", "prepare")["hash"]
    key = f"{kind}-{extractor.id}-{part}-{data_hash}-{len(images)}"
    return cached_features(extractor, images, cache_dir=project_root() / paths.REFERENCE_CACHE, key=key,
                           batch_size=batch_size)


def _context(holdout: Dataset, extractors: dict[str, Extractor], kind: str, domain: dict[str, DomainExtractor],
             device: torch.device, source: str = "", truncation: tuple[float, ...] = (), **sizes: int) -> EvalContext:
    cache: dict[str, Features] = {}

    def real(part: str) -> Features:
        if part not in cache:
            cache[part] = _real_features(extractors[part], kind, part, holdout.parts[part].images, sizes["batch_size"])
        return cache[part]

    return EvalContext(holdout=holdout, extractors=extractors, classifiers=domain, real_features=real,
                       device=device, source=source, truncation=truncation, **sizes)


def evaluate_artifact(params: Params, path: Path, device: torch.device) -> tuple[dict[str, Any], torch.Tensor]:
    """Every metric of eval.json (with what it was computed on) and the sample grid."""
    cfg = params.evaluate
    artifact = load_artifact(path, device)
    family = family_named(artifact.family)
    holdout = load_dataset_file(paths.PREPARED / "holdout.pt", "prepare")
    domain, domain_id = domain_extractors(device)
    extractors, label, ext_id = _extractors(params, list(holdout.parts), domain, domain_id, device)
    ctx = _context(holdout, extractors, cfg.features, domain, device, num_samples=cfg.num_samples,
                   batch_size=cfg.batch_size, seed=cfg.seed, kid_subset_size=cfg.kid_subset_size,
                   source=params.data.source, truncation=cfg.truncation)
    metrics, grid = family.evaluate(artifact, ctx)
    metrics.update({"family": family.name, "artifact": family.artifact, "primary_metric": family.primary_metric,
                    "higher_is_better": family.higher_is_better, "extractor": label, "evaluator_id": ext_id,
                    "variant": artifact.variant, "step": artifact.payload["step"]})
    return metrics, grid


def periodic_score(params: Params, device: torch.device) -> Callable[[dict[str, Any]], dict[str, float]] | None:
    """fn(artifact payload) -> the family's primary metric on ``train.eval_samples`` samples with the domain
    features, for the trainer's periodic evaluation."""
    family = params.resolved.family
    domain, _ = domain_extractors(device)
    holdout = load_dataset_file(paths.PREPARED / "holdout.pt", "prepare")
    if not set(holdout.parts) <= set(domain):
        print("note: periodic evaluation is off: it uses the domain classifiers, and this data has no labels "
              "(train.eval_every is ignored)", file=sys.stderr)
        return None
    ctx = _context(holdout, dict(domain), "domain", domain, device, num_samples=params.train.eval_samples,
                   batch_size=250, source=params.data.source)

    def fn(payload: dict[str, Any]) -> dict[str, float]:
        return family.score(family.load_artifact(payload, device), ctx)

    return fn
