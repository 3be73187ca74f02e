"""The networks of the semi-supervised family: a K-way classifier that doubles as the discriminator
(ImprovedGAN, CatGAN) or is the third player (Triple-GAN), and the generators and pair discriminator, which
are the noise family's DCGAN networks.

The classifier follows the regularisation Salimans et al. 2016 used for their semi-supervised discriminator,
sized down: Gaussian noise on the input, weight-normalised convolutions with leaky ReLU, dropout between the
blocks, global average pooling (the features the generator matches), and a weight-normalised linear head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


MLP_SIZES = (1000, 500, 250, 250, 250)  # Salimans et al.'s MNIST discriminator


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything that rebuilds a classifier: ``arch`` "mlp" (the paper's MNIST model: Gaussian noise after
    every layer, ``dropout`` unused) or "conv" (noise on the input, dropout between blocks)."""

    channels: int
    resolution: int
    width: int
    num_classes: int
    input_noise: float = 0.3  # std of the Gaussian noise added to the input while training
    dropout: float = 0.5
    arch: str = "conv"
    hidden_noise: float = 0.5  # mlp: std of the noise after each hidden layer

    @property
    def feature_dim(self) -> int:
        return MLP_SIZES[-1] if self.arch == "mlp" else 4 * self.width


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise while training; the identity in eval mode."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x) * self.std if self.training and self.std > 0 else x


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [weight_norm(nn.Conv2d(cin, cout, 3, stride, 1)), nn.LeakyReLU(0.2, inplace=True)]


class Classifier(nn.Module):
    """x (N, C, R, R) in [-1, 1] -> K logits; ``features`` gives the pooled features before the head."""

    def __init__(self, spec: ClassifierSpec) -> None:
        super().__init__()
        self.spec = spec
        w = spec.width
        if spec.arch == "mlp":
            layers: list[nn.Module] = [nn.Flatten(), GaussianNoise(spec.input_noise)]
            sizes = (spec.channels * spec.resolution ** 2,) + MLP_SIZES
            for cin, cout in zip(sizes, sizes[1:]):
                layers += [weight_norm(nn.Linear(cin, cout)), nn.ReLU(inplace=True), GaussianNoise(spec.hidden_noise)]
            self.body = nn.Sequential(*layers)
            self.head = weight_norm(nn.Linear(spec.feature_dim, spec.num_classes))
            return
        self.body = nn.Sequential(
            GaussianNoise(spec.input_noise),
            *_conv(spec.channels, w, 1), *_conv(w, w, 2), nn.Dropout(spec.dropout),
            *_conv(w, 2 * w, 1), *_conv(2 * w, 2 * w, 2), nn.Dropout(spec.dropout),
            *_conv(2 * w, 4 * w, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = weight_norm(nn.Linear(spec.feature_dim, spec.num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def data_init(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of the weight-normalised layers (Salimans and Kingma 2016, as the
        ImprovedGAN code does before training): layer by layer on the batch ``x``, without the training noise,
        scale g and shift the bias so that every unit's pre-activation has mean 0 and std 1. Without it the
        default initialisation shrinks the signal at every ReLU layer while the hidden noise (std 0.5) does not
        shrink, and the classifier learns slowly for hundreds of steps."""
        was_training = self.training
        self.eval()
        h = x.float()
        for layer in [*self.body, self.head]:
            out = layer(h)
            if hasattr(layer, "parametrizations") and "weight" in layer.parametrizations:
                dims = [0] + list(range(2, out.dim()))
                mean, std = out.mean(dims), out.std(dims).clamp_min(1e-6)
                g = layer.parametrizations.weight.original0
                g.div_(std.view(g.shape))
                layer.bias.sub_(mean).div_(std)
                out = layer(h)
            h = out
        self.train(was_training)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) per row, in nats."""
    logp = logits.float().log_softmax(1)
    return -(logp.exp() * logp).sum(1)


def marginal_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H of the batch's mean class distribution (CatGAN's class balance term)."""
    p = logits.float().softmax(1).mean(0)
    return -(p * p.clamp_min(1e-12).log()).sum()
