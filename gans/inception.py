"""The standard FID InceptionV3 (torch-fidelity's port of the TF graph, weights
``pt_inception-2015-12-05``) as a feature extractor.

Features are the 2048-d pool features (FID, KID, precision/recall) and the
1008-way unbiased logits (IS), exactly as torch-fidelity computes them: the
same module, the same TF1-style bilinear resize to 299x299 inside it, on
uint8 RGB input (greyscale is repeated to three channels).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from gans.config import ConfigError
from gans.evaluation import Features
from gans.io import file_hash

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILE


def default_weights_path() -> Path:
    """Where torch (and torch-fidelity) cache the weights: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def resolve_weights(path: str) -> Path:
    """The weights file: ``path`` if given, else the torch cache, downloading it there if the network allows."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"evaluate.inception_weights: {p} does not exist")
        return p
    p = default_weights_path()
    if p.is_file():
        return p
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, str(p), progress=False)
        return p
    except Exception as err:
        p.unlink(missing_ok=True)
        raise ConfigError(
            f"evaluate.features: inception needs the FID Inception weights and they could not be downloaded "
            f"({type(err).__name__}). Download {WEIGHTS_URL} on a machine with network access and either put it at "
            f"{p} or set evaluate.inception_weights to its path."
        ) from None


def weights_id(path: Path) -> str:
    return file_hash(path, 12)


def check_weights(weights: Path) -> None:
    """torch-fidelity unpickles the file with weights_only=False: first make sure it holds only tensors."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"evaluate.inception_weights: {weights} is not a PyTorch weights file "
                          f"({type(err).__name__})") from None
    if not isinstance(state, dict) or "fc.weight" not in state or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise ConfigError(f"evaluate.inception_weights: {weights} is not an InceptionV3 state dict "
                          f"(pt_inception-2015-12-05 in torch-fidelity's format)")


class InceptionExtractor:
    """torch-fidelity's FeatureExtractorInceptionV3 with the given weights file."""

    def __init__(self, weights: Path, device: torch.device) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        check_weights(weights)
        self.model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                                 feature_extractor_weights_path=str(weights)).to(device)
        self.device = device
        self.id = weights_id(weights)

    @torch.no_grad()
    def extract(self, images: torch.Tensor, *, batch_size: int, desc: str = "inception") -> Features:
        """uint8 (N, C, H, W), C in {1, 3} -> 2048-d features and 1008 logits (float64)."""
        feats, logits = [], []
        for chunk in tqdm(images.split(batch_size), desc=desc, unit="batch", disable=None, leave=False):
            x = chunk.to(self.device)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            f, lg = self.model(x.contiguous())
            feats.append(f.double().cpu())
            logits.append(lg.double().cpu())
        return Features(torch.cat(feats), torch.cat(logits))
