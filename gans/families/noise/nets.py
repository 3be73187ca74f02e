"""Generator and discriminator architectures, registered by name.

An architecture supplies two *bodies*: a generator body mapping an input
vector (N, in_dim) to images (N, C, R, R) in [-1, 1], and a discriminator
body mapping images (N, C_in, R, R) to features (N, F). The wrappers
:class:`Generator` and :class:`Discriminator` add what every architecture
shares: label conditioning (concatenation, projection, auxiliary classifier,
InfoGAN codes), minibatch discrimination, the output heads and spectral
normalisation. So G(z, labels) -> (N, C, R, R) and D(images, labels) -> (N,)
logits for every composition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gans.config import ConfigError
from gans.layers import apply_spectral_norm, init_normal, init_orthogonal, init_xavier, norm2d


@dataclass(frozen=True, kw_only=True)
class NetSpec:
    """Everything needed to rebuild a generator/discriminator pair."""

    channels: int
    resolution: int
    z_dim: int
    width: int
    num_classes: int = 0  # labels the networks take (InfoGAN: categories of its code)
    conditioning: str = "none"  # none | concat | projection | acgan | infogan
    info_continuous: int = 0  # InfoGAN continuous codes
    d_norm: str = "batch"  # batch | layer | none: normalisation inside the discriminator body
    d_dropout: float = 0.0  # dropout on discriminator features (CT-GAN's perturbation)
    minibatch_features: int = 0  # minibatch discrimination outputs (Salimans et al. 2016)
    spectral_norm_d: bool = False
    spectral_norm_g: bool = False
    attention_res: int = 16  # SAGAN: resolution of the self-attention block

    @property
    def g_input_dim(self) -> int:
        """z plus a one-hot label (conditional) or InfoGAN codes."""
        extra = self.num_classes if self.conditioning in ("concat", "acgan", "projection", "infogan") else 0
        return self.z_dim + extra + self.info_continuous


def _geometry(resolution: int, arch: str) -> tuple[int, int]:
    """(base, n): the image is built from a base x base map by n doublings (base 4, or 7 for 28/56)."""
    for base in (4, 7):
        n = math.log2(resolution / base)
        if n >= 1 and n == int(n):
            return base, int(n)
    raise ConfigError(f"data.resolution: {arch} builds sides of 4*2^n or 7*2^n pixels (8, 14, 16, 28, 32, 56, 64, "
                      f"128, ...); got {resolution}")


# ---------------------------------------------------------------- MLP (Goodfellow et al. 2014)


class MLPGeneratorBody(nn.Module):
    def __init__(self, *, spec: NetSpec) -> None:
        super().__init__()
        self.shape = (spec.channels, spec.resolution, spec.resolution)
        h = spec.width * 4
        self.net = nn.Sequential(
            nn.Linear(spec.g_input_dim, h), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(h, 2 * h), nn.BatchNorm1d(2 * h), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(2 * h, 4 * h), nn.BatchNorm1d(4 * h), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(4 * h, math.prod(self.shape)), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1, *self.shape)


class MLPDiscriminatorBody(nn.Module):
    def __init__(self, *, spec: NetSpec, in_channels: int) -> None:
        super().__init__()
        h = spec.width * 4
        self.feature_dim = h
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * spec.resolution ** 2, 2 * h), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(2 * h, h), nn.LeakyReLU(0.2, inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---------------------------------------------------------------- DCGAN (Radford et al. 2015)


class DCGANGeneratorBody(nn.Module):
    """Transposed convolutions, batch norm, ReLU, tanh output."""

    def __init__(self, *, spec: NetSpec) -> None:
        super().__init__()
        base, n = _geometry(spec.resolution, "dcgan")
        ch = spec.width * 2 ** (n - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(spec.g_input_dim, ch, base, 1, 0, bias=False),
                                   nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, spec.channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, :, None, None])


class DCGANDiscriminatorBody(nn.Module):
    """Strided convolutions with LeakyReLU(0.2); normalisation (none on the first layer) per spec."""

    def __init__(self, *, spec: NetSpec, in_channels: int) -> None:
        super().__init__()
        base, n = _geometry(spec.resolution, "dcgan")
        ch = spec.width
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(n - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=spec.d_norm == "none"), norm2d(spec.d_norm, ch * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        layers += [nn.Conv2d(ch, ch, base, 1, 0), nn.LeakyReLU(0.2, inplace=True), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.feature_dim = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---------------------------------------------------------------- ResNet (Gulrajani et al. 2017; Miyato et al. 2018)


class _UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class _DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, *, norm: str, first: bool, down: bool) -> None:
        super().__init__()
        self.first, self.down = first, down
        self.norm1, self.conv1 = norm2d(norm, cin) if not first else nn.Identity(), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = norm2d(norm, cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(self.norm1(x))
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        skip = self.skip(x)
        if self.down:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + skip


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019): x + gamma * attention(x), gamma starts at 0."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 8, 1)
        self.query, self.key = nn.Conv2d(channels, inner, 1), nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (N, HW, c')
        k = self.key(x).flatten(2)  # (N, c', HW)
        attn = torch.softmax(q @ k, dim=-1)  # (N, HW, HW)
        out = (self.value(x).flatten(2) @ attn.transpose(1, 2)).view(n, c, h, w)
        return x + self.gamma * out


class ResNetGeneratorBody(nn.Module):
    """Linear to a base x base map, then residual up-blocks; optional self-attention (SAGAN)."""

    def __init__(self, *, spec: NetSpec, attention: bool = False) -> None:
        super().__init__()
        base, n = _geometry(spec.resolution, "resnet")
        ch = spec.width * 2
        self.base, self.ch = base, ch
        self.fc = nn.Linear(spec.g_input_dim, ch * base * base)
        blocks: list[nn.Module] = []
        res = base
        for _ in range(n):
            blocks.append(_UpBlock(ch, ch))
            res *= 2
            if attention and res == spec.attention_res:
                blocks.append(SelfAttention(ch))
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(inplace=True), nn.Conv2d(ch, spec.channels, 3, 1, 1),
                                 nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.fc(x).view(-1, self.ch, self.base, self.base)))


class ResNetDiscriminatorBody(nn.Module):
    """Residual down-blocks, ReLU and global sum pooling; optional self-attention (SAGAN, BigGAN)."""

    def __init__(self, *, spec: NetSpec, in_channels: int, attention: bool = False, mult: int = 2) -> None:
        super().__init__()
        _, n = _geometry(spec.resolution, "resnet")
        ch = spec.width * mult
        # One down-sampling input block, n-2 more down blocks, then two blocks at 2x the base size.
        plan = [True] * max(n - 1, 1) + [False, False]
        blocks: list[nn.Module] = []
        res, cin = spec.resolution, in_channels
        for i, down in enumerate(plan):
            blocks.append(_DownBlock(cin, ch, norm=spec.d_norm, first=i == 0, down=down))
            cin = ch
            if down:
                res //= 2
                if attention and res == spec.attention_res:
                    blocks.append(SelfAttention(ch))
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.blocks(x)).sum(dim=(2, 3))


def _sagan_g(*, spec: NetSpec) -> nn.Module:
    return ResNetGeneratorBody(spec=spec, attention=True)


def _sagan_d(*, spec: NetSpec, in_channels: int) -> nn.Module:
    return ResNetDiscriminatorBody(spec=spec, in_channels=in_channels, attention=True)


# ---------------------------------------------------------------- BigGAN (Brock et al. 2019), sized down

BIGGAN_MULT = 4  # channels = 4 x model.width in every block: BigGAN's 32x32 (CIFAR) layout, at every size


def biggan_chunks(spec: NetSpec) -> int:
    """How many pieces z splits into: one for the first linear layer and one per up-block."""
    return _geometry(spec.resolution, "biggan")[1] + 1


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose gain (1 + W_g c) and bias (W_b c) are linear in a conditioning vector c."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain, self.bias = nn.Linear(cond_dim, channels, bias=False), nn.Linear(cond_dim, channels, bias=False)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * (1 + self.gain(c))[:, :, None, None] + self.bias(c)[:, :, None, None]


class _BigGANUp(nn.Module):
    """BN(c) - ReLU - upsample - conv - BN(c) - ReLU - conv, plus an upsampled 1x1-conv skip."""

    def __init__(self, cin: int, cout: int, cond_dim: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = ConditionalBatchNorm(cin, cond_dim), nn.Conv2d(cin, cout, 3, 1, 1)
        self.bn2, self.conv2 = ConditionalBatchNorm(cout, cond_dim), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2))
        h = self.conv2(F.relu(self.bn2(h, c)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class BigGANGeneratorBody(nn.Module):
    """Hierarchical latents and class-conditional batch norm with a shared embedding.

    z splits into ``biggan_chunks`` pieces: the first feeds the linear layer that makes the base map, each
    other one joins the shared class embedding as the conditioning vector of one up-block's batch norms.
    The embedding is one matrix (labels and InfoGAN codes in, ``z_dim`` out), shared by every block and
    left out of spectral norm and the orthogonal penalty, as in the paper."""

    def __init__(self, *, spec: NetSpec) -> None:
        super().__init__()
        base, n = _geometry(spec.resolution, "biggan")
        self.z_dim, self.base, self.ch = spec.z_dim, base, spec.width * BIGGAN_MULT
        self.split = [len(c) for c in torch.arange(spec.z_dim).tensor_split(n + 1)]
        extra = spec.g_input_dim - spec.z_dim  # one-hot label or InfoGAN codes
        self.embed_dim = spec.z_dim if extra else 0
        self.shared = nn.Parameter(torch.randn(extra, self.embed_dim) * 0.02) if extra else None
        self.fc = nn.Linear(self.split[0], self.ch * base * base)
        blocks: list[nn.Module] = []
        self.attention_after = -1
        res = base
        for i in range(n):
            blocks.append(_BigGANUp(self.ch, self.ch, self.split[i + 1] + self.embed_dim))
            res *= 2
            if res == spec.attention_res:
                self.attention_after = i
        self.blocks = nn.ModuleList(blocks)
        self.attention = SelfAttention(self.ch) if self.attention_after >= 0 else None
        self.out = nn.Sequential(nn.BatchNorm2d(self.ch), nn.ReLU(inplace=True),
                                 nn.Conv2d(self.ch, spec.channels, 3, 1, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x[:, : self.z_dim].split(self.split, dim=1)
        shared = x[:, self.z_dim:] @ self.shared if self.shared is not None else None
        h = self.fc(chunks[0]).view(-1, self.ch, self.base, self.base)
        for i, block in enumerate(self.blocks):
            c = chunks[i + 1] if shared is None else torch.cat([chunks[i + 1], shared], dim=1)
            h = block(h, c)
            if i == self.attention_after:
                h = self.attention(h)
        return self.out(h)

    def z_weight(self) -> torch.Tensor:
        """(outputs, z_dim): every linear map that reads z, each in its own chunk's columns (zeros elsewhere),
        for SeFa and GANSpace, which factorise what the latent first drives."""
        rows, start = [], 0
        maps = [[self.fc]] + [[blk.bn1.gain, blk.bn1.bias, blk.bn2.gain, blk.bn2.bias] for blk in self.blocks]
        for width, layers in zip(self.split, maps):
            for layer in layers:
                w = layer.weight.detach()[:, :width]
                rows.append(F.pad(w, (start, self.z_dim - start - width)))
            start += width
        return torch.cat(rows)


def _biggan_d(*, spec: NetSpec, in_channels: int) -> nn.Module:
    return ResNetDiscriminatorBody(spec=spec, in_channels=in_channels, attention=True, mult=BIGGAN_MULT)


# ---------------------------------------------------------------- shared wrappers


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016: per-sample closeness to the rest of the batch, appended to the features."""

    def __init__(self, in_features: int, out_features: int, kernel_dim: int = 8) -> None:
        super().__init__()
        self.T = nn.Parameter(torch.randn(in_features, out_features * kernel_dim) * 0.1)
        self.out_features, self.kernel_dim = out_features, kernel_dim

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (N, F) -> (N, F + out_features)."""
        m = (h @ self.T).view(-1, self.out_features, self.kernel_dim)  # (N, B, K)
        l1 = (m[:, None] - m[None]).abs().sum(-1)  # (N, N, B)
        closeness = (torch.exp(-l1).sum(1) - 1) / max(len(h) - 1, 1)  # mean over the others: in [0, 1]
        return torch.cat([h, closeness], dim=1)


class Generator(nn.Module):
    """G(z, labels): concatenates a one-hot label (or InfoGAN codes) to z, then runs the body."""

    def __init__(self, *, body: nn.Module, spec: NetSpec) -> None:
        super().__init__()
        self.body, self.spec = body, spec
        self.z_dim, self.num_classes = spec.z_dim, spec.num_classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z: (N, z_dim [+ info_continuous]), labels: (N,) int -> (N, C, R, R) in [-1, 1].

        For InfoGAN, ``labels`` is the categorical code and the continuous codes
        are the last ``info_continuous`` columns of z (zero when z has none)."""
        parts = [z[:, : self.z_dim]]
        if self.num_classes:
            if labels is None:
                raise ValueError("this generator is class-conditional: labels are required")
            parts.append(F.one_hot(labels, self.num_classes).to(z.dtype))
        if self.spec.info_continuous:
            codes = z[:, self.z_dim:]
            if codes.shape[1] == 0:
                codes = z.new_zeros(z.shape[0], self.spec.info_continuous)  # shape[0]: a batch of any size in exports
            parts.append(codes)
        return self.body(torch.cat(parts, dim=1))


class Discriminator(nn.Module):
    """D(images, labels) -> logits (N,), plus ``features`` and the auxiliary heads."""

    def __init__(self, *, make_body: Callable[..., nn.Module], spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.concat = spec.conditioning == "concat"
        self.body = make_body(spec=spec, in_channels=spec.channels + (spec.num_classes if self.concat else 0))
        dim = self.body.feature_dim
        self.dropout = nn.Dropout(spec.d_dropout) if spec.d_dropout > 0 else nn.Identity()
        # Concatenated labels also join D's last hidden layer (CGAN's joint maxout layer; LSGAN's conditional D):
        # at the input alone, a discriminator can learn realness and ignore the label.
        self.joint = nn.Sequential(nn.Linear(dim + spec.num_classes, dim), nn.LeakyReLU(0.2, inplace=True)) \
            if self.concat else None
        self.minibatch = MinibatchDiscrimination(dim, spec.minibatch_features) if spec.minibatch_features else None
        self.out = nn.Linear(dim + spec.minibatch_features, 1)
        self.embed = nn.Embedding(spec.num_classes, dim) if spec.conditioning == "projection" else None
        self.aux = nn.Linear(dim, spec.num_classes) if spec.conditioning == "acgan" else None
        if spec.conditioning == "infogan":
            self.q = nn.Sequential(nn.Linear(dim, 128), nn.LeakyReLU(0.2, inplace=True),
                                   nn.Linear(128, spec.num_classes + spec.info_continuous))
        else:
            self.q = None

    def features(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, R, R) -> (N, F), the body's output before the heads."""
        if self.concat:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: labels are required")
            maps = F.one_hot(labels, self.spec.num_classes).to(images.dtype)[:, :, None, None]
            images = torch.cat([images, maps.expand(-1, -1, *images.shape[2:])], dim=1)
        return self.dropout(self.body(images))

    def logits(self, h: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Features (N, F) -> adversarial logits (N,)."""
        if self.joint is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: labels are required")
            h = self.joint(torch.cat([h, F.one_hot(labels, self.spec.num_classes).to(h.dtype)], dim=1))
        out = self.out(self.minibatch(h) if self.minibatch is not None else h).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: labels are required")
            out = out + (self.embed(labels) * h).sum(1)
        return out

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(self.features(images, labels), labels)


Builder = Callable[..., nn.Module]

ARCHITECTURES: dict[str, tuple[Builder, Builder, Callable[[nn.Module], None]]] = {
    "mlp": (MLPGeneratorBody, MLPDiscriminatorBody, init_normal),
    "dcgan": (DCGANGeneratorBody, DCGANDiscriminatorBody, init_normal),
    "resnet": (ResNetGeneratorBody, ResNetDiscriminatorBody, init_xavier),
    "sagan": (_sagan_g, _sagan_d, init_xavier),
    "biggan": (BigGANGeneratorBody, _biggan_d, init_orthogonal),
}


def check_buildable(architecture: str, spec: NetSpec) -> None:
    """Fail early (before data or models are touched) if ``architecture`` cannot build ``spec``."""
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"model.overrides.architecture: unknown {architecture!r}; allowed: {', '.join(ARCHITECTURES)}")
    if architecture != "mlp":
        _geometry(spec.resolution, architecture)
    if architecture == "biggan" and spec.z_dim < biggan_chunks(spec):
        raise ConfigError(f"model.z_dim: biggan at {spec.resolution}x{spec.resolution} splits z into "
                          f"{biggan_chunks(spec)} pieces (one for the first layer, one per block); got {spec.z_dim}")


def build_networks(architecture: str, spec: NetSpec) -> tuple[Generator, Discriminator]:
    """Build (generator, discriminator) of a registered architecture for ``spec``."""
    check_buildable(architecture, spec)
    make_g, make_d, init = ARCHITECTURES[architecture]
    generator = Generator(body=make_g(spec=spec), spec=spec)
    discriminator = Discriminator(make_body=make_d, spec=spec)
    init(generator)
    init(discriminator)
    if spec.spectral_norm_g:
        apply_spectral_norm(generator)
    if spec.spectral_norm_d:
        apply_spectral_norm(discriminator)
    return generator, discriminator
