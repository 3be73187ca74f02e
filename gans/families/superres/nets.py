"""Super-resolution networks: SRGAN's residual generator (SRResNet), ESRGAN's RRDB generator, the VGG-style
discriminator both papers use, and the fixed feature networks of the content loss (the evaluator's domain
classifier, or ImageNet VGG19 from a weights file).

Generators map low-resolution images (N, C, R/s, R/s) in [-1, 1] to (N, C, R, R); in eval mode the output
is clamped to [-1, 1] (training sees the unclamped values, as both papers' linear output layers give)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gans.config import ConfigError

GENERATORS = ("srresnet", "rrdb")
PAPER_BLOCKS = {"srresnet": 16, "rrdb": 23}  # Ledig et al.: 16 residual blocks; Wang et al.: 23 RRDBs


@dataclass(frozen=True, kw_only=True)
class SuperresSpec:
    """Everything needed to rebuild a super-resolution model's networks."""

    resolution: int  # of the high-resolution output
    scale: int
    channels: int
    width: int  # feature channels of the generator's trunk and the discriminator's first layer (64 in both papers)
    generator: str = "srresnet"
    g_blocks: int = 16
    g_norm: str = "batch"  # srresnet: batch (SRGAN) or none
    d_norm: str = "batch"

    @property
    def lr_resolution(self) -> int:
        return self.resolution // self.scale


def check_geometry(spec: SuperresSpec) -> None:
    if spec.scale & (spec.scale - 1) or spec.scale < 2:
        raise ConfigError(f"data.scale: the generators upsample in x2 steps; use 2, 4 or 8, got {spec.scale}")
    if spec.resolution < 16 or spec.resolution % 16:
        raise ConfigError(f"data.resolution: the VGG-style discriminator halves the image four times; use a "
                          f"multiple of 16, got {spec.resolution}")


def _eval_clamped(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The output clamped to [-1, 1] in eval mode (served and exported images), left alone while training."""
    return y if module.training else y.clamp(-1.0, 1.0)


# ---------------------------------------------------------------- SRResNet (SRGAN)


class _ResidualBlock(nn.Module):
    """conv3-BN-PReLU-conv3-BN with an identity skip (Ledig et al., fig. 4)."""

    def __init__(self, ch: int, norm: bool) -> None:
        super().__init__()
        bn = (lambda: nn.BatchNorm2d(ch)) if norm else nn.Identity
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), bn(), nn.PReLU(ch),
                                  nn.Conv2d(ch, ch, 3, padding=1), bn())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """9x9 head with PReLU, B residual blocks, a conv-BN with a skip over the whole trunk, log2(s) upsampling
    blocks (conv to 4C, pixel shuffle x2, PReLU), 9x9 output convolution."""

    def __init__(self, *, channels: int, width: int, blocks: int, scale: int, norm: bool) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(channels, width, 9, padding=4), nn.PReLU(width))
        self.trunk = nn.Sequential(*[_ResidualBlock(width, norm) for _ in range(blocks)],
                                   nn.Conv2d(width, width, 3, padding=1),
                                   nn.BatchNorm2d(width) if norm else nn.Identity())
        up: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            up += [nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(width)]
        self.up = nn.Sequential(*up)
        self.tail = nn.Conv2d(width, channels, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return _eval_clamped(self, self.tail(self.up(h + self.trunk(h))))


# ---------------------------------------------------------------- RRDB (ESRGAN)


class _DenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing every earlier output (growth ``width // 2``), LeakyReLU 0.2 after
    the first four, the output scaled by 0.2 and added to the input (Wang et al., fig. 4)."""

    def __init__(self, ch: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(ch + i * growth, growth if i < 4 else ch, 3, padding=1) for i in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, 1))
            if i < 4:
                feats.append(F.leaky_relu(out, 0.2))
        return x + 0.2 * out


class _RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, their output scaled by 0.2 and added to the input."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[_DenseBlock(ch, ch // 2) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.body(x)


class RRDBNet(nn.Module):
    """3x3 head, B RRDBs and a 3x3 convolution with a skip over the trunk, log2(s) nearest-neighbour x2
    upsamplings each followed by a conv and LeakyReLU, then two 3x3 convolutions; no batch norm."""

    def __init__(self, *, channels: int, width: int, blocks: int, scale: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(channels, width, 3, padding=1)
        self.trunk = nn.Sequential(*[_RRDB(width) for _ in range(blocks)], nn.Conv2d(width, width, 3, padding=1))
        self.ups = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(int(math.log2(scale))))
        self.hr = nn.Conv2d(width, width, 3, padding=1)
        self.tail = nn.Conv2d(width, channels, 3, padding=1)
        for m in self.trunk.modules():  # ESRGAN scales the trunk's Kaiming initialisation by 0.1
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                m.weight.data.mul_(0.1)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        h = h + self.trunk(h)
        for conv in self.ups:
            h = F.leaky_relu(conv(F.interpolate(h, scale_factor=2, mode="nearest")), 0.2)
        return _eval_clamped(self, self.tail(F.leaky_relu(self.hr(h), 0.2)))


# ---------------------------------------------------------------- discriminator


class VGGDiscriminator(nn.Module):
    """SRGAN's discriminator: eight 3x3 convolutions (widths w, w, 2w, 2w, 4w, 4w, 8w, 8w; stride 2 at every
    second), LeakyReLU 0.2, batch norm after all but the first, then dense 1024, LeakyReLU, dense 1."""

    def __init__(self, *, channels: int, width: int, resolution: int, norm: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = channels
        for i in range(8):
            ch = width * 2 ** (i // 2)
            layers.append(nn.Conv2d(prev, ch, 3, stride=1 + i % 2, padding=1, bias=i == 0 or norm != "batch"))
            if i and norm == "batch":
                layers.append(nn.BatchNorm2d(ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            prev = ch
        side = resolution // 16
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(prev * side * side, 1024), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Linear(1024, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, R, R) -> (N, 1) logits (``labels`` is accepted for the shared regularizers and unused)."""
        return self.head(self.body(x))


def build_generator(spec: SuperresSpec) -> nn.Module:
    if spec.generator == "rrdb":
        return RRDBNet(channels=spec.channels, width=spec.width, blocks=spec.g_blocks, scale=spec.scale)
    return SRResNet(channels=spec.channels, width=spec.width, blocks=spec.g_blocks, scale=spec.scale,
                    norm=spec.g_norm == "batch")


def build_discriminator(spec: SuperresSpec) -> nn.Module:
    return VGGDiscriminator(channels=spec.channels, width=spec.width, resolution=spec.resolution, norm=spec.d_norm)


# ---------------------------------------------------------------- content-loss features


class ContentFeatures(nn.Module):
    """A fixed feature map of (N, C, R, R) images in [-1, 1]: the layers of ``body`` up to the last
    convolution before the network's second pooling (the domain classifier; SRGAN's "VGG54" analogue) or VGG19's
    conv5_4, after its ReLU (SRGAN) or before it (ESRGAN)."""

    def __init__(self, body: nn.Module, *, imagenet: bool) -> None:
        super().__init__()
        self.body, self.imagenet = body.eval().requires_grad_(False), imagenet
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "ContentFeatures":
        return super().train(False)  # always eval: batch statistics and dropout never change the target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.imagenet:
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = ((x + 1) / 2 - self.mean) / self.std
        return self.body(x)


def domain_features(classifier: nn.Module, *, before_activation: bool) -> ContentFeatures:
    """The evaluator's domain classifier (gans.evaluation.DomainClassifier) up to its fourth convolution."""
    layers = list(classifier.body)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    end = convs[3] + (1 if before_activation else 2)
    import copy

    return ContentFeatures(nn.Sequential(*copy.deepcopy(layers[:end])), imagenet=False)


VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbe5e0d.pth"


def vgg19_features(path: str, *, before_activation: bool) -> ContentFeatures:
    """ImageNet VGG19 (torchvision's layout) from ``path`` up to conv5_4 (pre- or post-ReLU). The file may hold
    the whole network's state dict (``vgg19-dcbe5e0d.pth``) or only its ``features.*`` entries."""
    from torchvision.models import vgg19

    where = "model.overrides.vgg19_weights"
    if not path:
        raise ConfigError(f"{where}: the vgg19 content loss needs ImageNet VGG19 weights; download {VGG19_URL} on a "
                          "machine with network access and give its path, or use content: domain")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{where}: {path!r} does not exist; download {VGG19_URL} and give its path")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file
        raise ConfigError(f"{where}: {path!r} is not a PyTorch weights file ({type(err).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")} \
        if isinstance(state, dict) else {}
    net = vgg19().features
    try:
        net.load_state_dict(features)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "mismatch"
        raise ConfigError(f"{where}: {path!r} does not hold torchvision VGG19 weights (features.*): {first}") from None
    end = 35 if before_activation else 36  # features[34] is conv5_4, [35] its ReLU
    return ContentFeatures(net[:end], imagenet=True)
