"""The domain evaluator (a small classifier) and generative metrics.

FID, KID and IS come from torchmetrics, precision/recall from torch-fidelity;
we only supply features. Features are extracted once per image set and fed
to the metrics through an identity "feature network", so the evaluator runs
once per image rather than once per metric.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from gans.data import ImageSet, to_float


class DomainClassifier(nn.Module):
    """A small CNN for (N, C, R, R) images in [-1, 1]; ``features`` are its penultimate layer."""

    feature_dim = 128

    def __init__(self, *, channels: int, num_classes: int) -> None:
        super().__init__()
        self.channels, self.num_classes = channels, num_classes
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, self.feature_dim), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, R, R) in [-1, 1] -> (N, 128)."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, R, R) in [-1, 1] -> logits (N, num_classes)."""
        return self.head(self.dropout(self.features(images)))


def weights_id(module: nn.Module) -> str:
    """A short hash of a module's weights: the evaluator id recorded with every metric."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def train_classifier(train: ImageSet, *, epochs: int, seed: int, device: torch.device, batch_size: int = 128,
                     attributes: bool = False) -> DomainClassifier:
    """Fit the domain classifier on labelled images with small random shifts; with ``attributes``, on the
    image set's domains (one-of-K: cross-entropy) or attributes (multi-hot: a binary cross-entropy each)."""
    if attributes:
        assert train.attributes is not None
        exclusive = train.exclusive
        targets = train.attributes.argmax(1) if exclusive else train.attributes.float()
        num_classes = len(train.attribute_names)

        def objective(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits, y) if exclusive else F.binary_cross_entropy_with_logits(logits, y)
    else:
        if train.labels is None:
            raise ValueError("evaluate.features: domain needs labelled data, and data.source has no labels")
        targets, num_classes, objective = train.labels, len(train.classes), F.cross_entropy
    torch.manual_seed(seed)
    model = DomainClassifier(channels=int(train.images.shape[1]), num_classes=num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * -(-len(train) // batch_size))
    images, labels = train.images.to(device), targets.to(device)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(epochs), desc="evaluator", unit="epoch", disable=None):
        for idx in torch.randperm(len(train), generator=g).split(batch_size):
            idx = idx.to(device)
            x = _random_shift(to_float(images[idx]), g)
            loss = objective(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _random_shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift the whole batch by up to ``max_shift`` pixels (padding with -1, the background)."""
    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=g))
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    h, w = x.shape[-2:]
    return padded[..., max_shift + dy: max_shift + dy + h, max_shift + dx: max_shift + dx + w]


@dataclass(frozen=True)
class Features:
    """features: (N, D) float64; logits: (N, K) float64."""

    features: torch.Tensor
    logits: torch.Tensor


class DomainExtractor:
    """Features and logits of the domain classifier, with its weight hash as id."""

    def __init__(self, model: DomainClassifier, device: torch.device) -> None:
        self.model, self.device, self.id = model.to(device).eval(), device, weights_id(model)

    @torch.no_grad()
    def extract(self, images: torch.Tensor, *, batch_size: int, desc: str = "features") -> Features:
        """uint8 (N, C, R, R) -> features (N, 128) and logits (N, K), float64, computed once."""
        feats, logits = [], []
        for chunk in tqdm(images.split(batch_size), desc=desc, unit="batch", disable=None, leave=False):
            f = self.model.features(to_float(chunk.to(self.device)))
            feats.append(f.double().cpu())
            logits.append(self.model.head(f).double().cpu())
        return Features(torch.cat(feats), torch.cat(logits))


def extract(model: DomainClassifier, images: torch.Tensor, *, batch_size: int, device: torch.device,
            desc: str = "features") -> Features:
    """uint8 (N, C, R, R) -> features and logits of the domain classifier."""
    return DomainExtractor(model, device).extract(images, batch_size=batch_size, desc=desc)


def cached_features(extractor, images: torch.Tensor, *, cache_dir: Path, key: str, batch_size: int) -> Features:
    """Features of a fixed real set, cached on disk under ``key`` (data hash + extractor id + count)."""
    from gans.io import load_torch, save_torch

    path = cache_dir / f"{key}.pt"
    if path.is_file():
        try:
            d = load_torch(path)
            return Features(d["features"], d["logits"])
        except Exception:
            path.unlink(missing_ok=True)
    out = extractor.extract(images, batch_size=batch_size, desc="real features")
    save_torch({"features": out.features, "logits": out.logits}, path)
    return out


def accuracy(model: DomainClassifier, data: ImageSet, *, device: torch.device, batch_size: int = 500,
             attributes: bool = False) -> float:
    """Top-1 accuracy on a labelled image set; with ``attributes``, of its domains (one-of-K) or the mean
    accuracy of each attribute (multi-hot)."""
    logits = extract(model, data.images, batch_size=batch_size, device=device, desc="accuracy").logits
    if attributes:
        assert data.attributes is not None
        return attribute_accuracy(logits, data.attributes, exclusive=data.exclusive)
    assert data.labels is not None
    return float((logits.argmax(1) == data.labels).double().mean())


def attribute_accuracy(logits: torch.Tensor, attributes: torch.Tensor, *, exclusive: bool) -> float:
    """Share of images whose domain (argmax) is right, or of attributes (logit > 0) that are right."""
    if exclusive:
        return float((logits.argmax(1) == attributes.argmax(1)).double().mean())
    return float(((logits > 0) == attributes.bool()).double().mean())


class _Precomputed(nn.Module):
    """Identity 'feature network': lets torchmetrics consume features we extracted ourselves."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets (N, D) and (M, D), through torchmetrics.

    The features are complete in this process: torchmetrics must not gather them from other ranks
    (under torchrun only rank 0 evaluates, and a sync would wait for the others forever)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), sync_on_compute=False)
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    return float(fid.compute())


def generative_metrics(real: Features, fake: Features, *, kid_subset_size: int = 1000,
                       prc_neighborhood: int = 3, is_splits: int = 10) -> dict[str, float]:
    """FID, KID (mean, std), IS (mean, std), precision and recall of ``fake`` against ``real``."""
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
    dim = real.features.shape[1]
    subset = min(kid_subset_size, len(real.features), len(fake.features))
    kid = KernelInceptionDistance(feature=_Precomputed(dim), subset_size=subset, sync_on_compute=False)
    kid.update(real.features.float(), real=True)
    kid.update(fake.features.float(), real=False)
    kid_mean, kid_std = kid.compute()
    inception = InceptionScore(feature=_Precomputed(fake.logits.shape[1]), splits=is_splits, sync_on_compute=False)
    inception.update(fake.logits)
    is_mean, is_std = inception.compute()
    return {
        "fid": frechet_distance(real.features, fake.features),
        "kid": float(kid_mean), "kid_std": float(kid_std),
        "is": float(is_mean), "is_std": float(is_std),
        **precision_recall(real, fake, neighborhood=prc_neighborhood),
    }


def precision_recall(real: Features, fake: Features, *, neighborhood: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, torch-fidelity's implementation): the share of
    ``fake`` inside the real k-NN manifold (quality) and of ``real`` inside the fake one (diversity)."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    prc = prc_features_to_metric(fake.features.float(), real.features.float(), prc_neighborhood=neighborhood,
                                 prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    return {"precision": float(prc["precision"]), "recall": float(prc["recall"])}


def classifier_payload(model: DomainClassifier, classes: tuple[str, ...], accuracy_: float) -> dict:
    return {"state_dict": model.state_dict(), "channels": model.channels, "num_classes": model.num_classes,
            "classes": list(classes), "id": weights_id(model), "holdout_accuracy": accuracy_}


def classifier_from_payload(payload: dict, device: torch.device) -> DomainClassifier:
    model = DomainClassifier(channels=payload["channels"], num_classes=payload["num_classes"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()


def cluster_purity(codes: torch.Tensor, predicted: torch.Tensor) -> float:
    """Share of samples whose predicted class is the majority class of their code (InfoGAN).

    codes, predicted: (N,) int. 1.0 when every code maps to one class; about 1/K when codes ignore classes."""
    total = 0
    for c in codes.unique():
        total += int(torch.bincount(predicted[codes == c]).max())
    return total / len(codes)


def cluster_accuracy(codes: torch.Tensor, predicted: torch.Tensor) -> float:
    """Accuracy of the best one-to-one matching of codes to classes (InfoGAN; Hungarian algorithm).

    codes, predicted: (N,) int. Unlike purity, a generator that draws one class for every code
    scores about 1/K, not 1.0: each class can explain one code only."""
    from scipy.optimize import linear_sum_assignment

    k = int(max(codes.max(), predicted.max())) + 1
    counts = torch.zeros(k, k, dtype=torch.long)
    counts.index_put_((codes.long(), predicted.long()), torch.ones_like(codes, dtype=torch.long), accumulate=True)
    rows, cols = linear_sum_assignment(counts.numpy(), maximize=True)
    return float(counts[rows, cols].sum()) / len(codes)
