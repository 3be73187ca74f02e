"""Small building blocks that several families' networks share: normalisation by name, weight
initialisation, spectral normalisation."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

NORMS = ("batch", "instance", "layer", "none")


def norm2d(kind: str, channels: int) -> nn.Module:
    """A 2-d normalisation layer by name: batch, instance (without affine parameters or running
    statistics, as in pix2pix/CycleGAN), layer (one group), or none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def init_normal(module: nn.Module) -> None:
    """N(0, 0.02) weights and zero biases (DCGAN, pix2pix, CycleGAN), N(1, 0.02) normalisation scales."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _init_conv_linear(module: nn.Module, init_weight) -> None:
    """``init_weight`` on every convolution's and linear layer's weight, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            init_weight(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_xavier(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for convolutions and linear layers (ResNet GANs)."""
    _init_conv_linear(module, nn.init.xavier_uniform_)


def init_orthogonal(module: nn.Module) -> None:
    """Orthogonal weights and zero biases for convolutions and linear layers (BigGAN)."""
    _init_conv_linear(module, nn.init.orthogonal_)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every conv, linear and embedding layer."""
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            setattr(module, name, spectral_norm(child))
        else:
            apply_spectral_norm(child)
    return module
