"""StyleGAN2's networks (Karras et al. 2020), in plain PyTorch (no custom CUDA kernels to build).

- Mapping network: z (normalised; with a label, its normalised embedding beside it) through ``mapping_layers``
  fully connected layers at a hundredth of the learning rate, to w. The average w is a buffer the training
  recipe tracks (truncation pulls towards it).
- Synthesis network ("skip" generator): a learned 4x4 constant, then per resolution an upsampling modulated
  3x3 convolution and a plain one, each with a per-pixel noise input (a learned strength per layer), and a
  1x1 modulated ``to_rgb`` whose output is upsampled and summed into the image. Modulation scales the input
  channels by the style (an affine map of w), demodulation rescales each output channel to unit expected
  variance. Every block reads its own w (``num_ws`` in all), which style mixing swaps from a second latent.
- Discriminator ("resnet"): 1x1 from_rgb, per resolution two 3x3 convolutions (the second downsamples) with a
  1x1 residual path, sums scaled by 1/sqrt(2); at 4x4 the minibatch standard deviation, a 3x3 convolution
  and two dense layers; conditional: a projection of a label embedding (Miyato and Koyama 2018) on the last
  features.

Every weight is stored at unit variance and scaled at run time (equalised learning rate, Karras et al. 2018).
Up- and downsampling are bilinear interpolation and 2x2 average pooling rather than the paper's FIR filters
and transposed convolutions: simpler, exportable to ONNX, and the same image sizes.

The modulation is the "unfused" form (scale the input channels, one convolution shared by the batch, scale
the output channels): equal to a per-sample convolution with modulated weights, without grouped convolutions
whose group count would be the batch size (which neither ONNX export nor a varying batch would like).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

GAIN = math.sqrt(2.0)  # leaky ReLU's gain: activations keep unit variance


@dataclass(frozen=True, kw_only=True)
class StyleSpec:
    """What rebuilds the networks. ``channel_max`` caps the channels at low resolutions; the channels at
    resolution r are min(channel_max, channel_base // r)."""

    channels: int
    resolution: int
    z_dim: int
    w_dim: int
    num_classes: int = 0
    mapping_layers: int = 8
    channel_base: int = 2048
    channel_max: int = 256
    mbstd_group: int = 4
    conditioning: str = "none"  # "projection" when num_classes > 0

    def width(self, res: int) -> int:
        return max(1, min(self.channel_max, self.channel_base // res))

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        """The synthesis network's w inputs: two per resolution (4x4: its conv and to_rgb; above: the upsampling
        conv, the second conv and to_rgb share the count, as in the paper's layer numbering)."""
        return 2 * len(self.block_resolutions)


class EqualLinear(nn.Linear):
    """A dense layer with equalised learning rate (a subclass of ``nn.Linear``, so tools that read a
    generator's first linear layer, such as SeFa, find the mapping network's). ``lr_mul`` scales the
    learning rate of this layer (the mapping network trains at 0.01), ``act`` applies leaky ReLU x sqrt(2)."""

    def __init__(self, cin: int, cout: int, *, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False) -> None:
        super().__init__(cin, cout)
        with torch.no_grad():
            self.weight.normal_().div_(lr_mul)
            self.bias.fill_(bias_init / lr_mul)
        self.scale, self.lr_mul, self.act = lr_mul / math.sqrt(cin), lr_mul, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(out, 0.2) * GAIN if self.act else out


class EqualConv2d(nn.Module):
    """A convolution with equalised learning rate; ``down`` average-pools the input by 2 first (a 2x2 box filter,
    then the convolution at the lower resolution: the cost of the paper's blurred stride-2 convolution);
    ``act`` as above."""

    def __init__(self, cin: int, cout: int, kernel: int, *, bias: bool = True, act: bool = True,
                 down: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale, self.pad, self.act, self.down = 1 / math.sqrt(cin * kernel * kernel), kernel // 2, act, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)
        x = F.conv2d(x, (self.weight * self.scale).to(x.dtype), None if self.bias is None else self.bias.to(x.dtype),
                     padding=self.pad)
        return F.leaky_relu(x, 0.2) * GAIN if self.act else x


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z (and a label) -> w. ``w_avg``: the average w the training recipe tracks (:meth:`track`), one per class
    for a conditional generator, so that truncation keeps the class (psi 0 draws the class's mean image)."""

    def __init__(self, spec: StyleSpec, lr_mul: float = 0.01) -> None:
        super().__init__()
        self.z_dim, self.num_classes = spec.z_dim, spec.num_classes
        dims = [spec.z_dim + (spec.w_dim if spec.num_classes else 0)] + [spec.w_dim] * spec.mapping_layers
        # the first layer registered first: its first z_dim input columns are z's (SeFa reads them)
        self.layers = nn.Sequential(*[EqualLinear(a, b, lr_mul=lr_mul, act=True) for a, b in zip(dims, dims[1:])])
        self.embed = EqualLinear(spec.num_classes, spec.w_dim) if spec.num_classes else None
        self.register_buffer("w_avg", torch.zeros(max(1, spec.num_classes), spec.w_dim))  # one per class

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = normalize_2nd_moment(z.float())
        if self.embed is not None:
            if y is None:
                raise ValueError("this generator is class-conditional: it needs labels")
            e = self.embed(F.one_hot(y, self.num_classes).to(x.dtype))
            x = torch.cat([x, normalize_2nd_moment(e)], dim=1)
        return self.layers(x)

    @torch.no_grad()
    def track(self, w: torch.Tensor, y: torch.Tensor | None = None, beta: float = 0.995) -> None:
        """Move ``w_avg`` towards the batch mean of ``w`` (the paper's decay: 0.995 per minibatch); per class,
        for the classes in the batch, when conditional."""
        w = w.detach().float()
        if self.embed is None:
            self.w_avg.lerp_(w.mean(0, keepdim=True), 1 - beta)
            return
        sums = torch.zeros_like(self.w_avg).index_add_(0, y, w)
        counts = torch.bincount(y, minlength=self.num_classes)[:, None]
        moved = self.w_avg.lerp(sums / counts.clamp_min(1), 1 - beta)
        self.w_avg.copy_(torch.where(counts > 0, moved, self.w_avg))

    def truncate(self, w: torch.Tensor, psi: torch.Tensor | float, y: torch.Tensor | None = None) -> torch.Tensor:
        """w moved towards the mean w (of its class, when conditional): psi 1 keeps w, psi 0 gives the mean (psi
        a float or one per row)."""
        if isinstance(psi, torch.Tensor):
            psi = psi.to(w.device, w.dtype).reshape(-1, *([1] * (w.dim() - 1)))
        centre = (self.w_avg[0] if self.embed is None else self.w_avg[y]).to(w.dtype)
        return centre + psi * (w - centre)


BLUR = torch.tensor([1.0, 2.0, 1.0])


class ModulatedConv(nn.Module):
    """A convolution whose input channels are scaled by the style (affine(w), bias 1 at the start) and whose
    output channels are demodulated; ``up``: a stride-2 transposed convolution (the cost of a convolution at the
    input resolution), then a [1, 2, 1] blur against its checkerboard, as the paper's upsampling layers do."""

    def __init__(self, cin: int, cout: int, kernel: int, w_dim: int, *, demodulate: bool = True,
                 up: bool = False) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.scale, self.pad, self.demodulate, self.up = 1 / math.sqrt(cin * kernel * kernel), kernel // 2, demodulate, up
        if up:
            self.register_buffer("blur", (BLUR[:, None] * BLUR[None, :] / 16).expand(cout, 1, 3, 3).clone(),
                                 persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # (N, cin)
        weight = self.weight * self.scale
        x = x * styles[:, :, None, None].to(x.dtype)
        if self.up:  # transposed: weight (cout, cin, k, k) read as (in = cout, out = cin) backwards
            x = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2, padding=self.pad,
                                   output_padding=1)
            x = F.conv2d(x, self.blur.to(x.dtype) * 4, padding=1, groups=x.shape[1])
        else:
            x = F.conv2d(x, weight.to(x.dtype), padding=self.pad)
        if self.demodulate:  # 1 / sqrt(sum over cin, k, k of (weight * style)^2), per sample and output channel
            coef = (styles.square() @ weight.square().sum(dim=(2, 3)).T + 1e-8).rsqrt()  # (N, cout)
            x = x * coef[:, :, None, None].to(x.dtype)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution, noise (random while training, a fixed draw otherwise: the same seed draws
    the same image), bias, leaky ReLU."""

    def __init__(self, cin: int, cout: int, w_dim: int, res: int, *, up: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv(cin, cout, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("noise_const", torch.randn(1, 1, res, res))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, w)
        if self.training:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype)
        x = x + noise * self.noise_strength.to(x.dtype) + self.bias.to(x.dtype)[None, :, None, None]
        return F.leaky_relu(x, 0.2) * GAIN


class ToRGB(nn.Module):
    def __init__(self, cin: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv(cin, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias.to(x.dtype)[None, :, None, None]


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> image (N, C, R, R), unbounded (about [-1, 1] once trained)."""

    def __init__(self, spec: StyleSpec) -> None:
        super().__init__()
        res = spec.block_resolutions
        self.num_ws = spec.num_ws
        self.const = nn.Parameter(torch.randn(spec.width(4), 4, 4))
        self.convs = nn.ModuleList([SynthesisLayer(spec.width(4), spec.width(4), spec.w_dim, 4)])
        self.to_rgbs = nn.ModuleList([ToRGB(spec.width(4), spec.channels, spec.w_dim)])
        for r in res[1:]:
            self.convs.append(SynthesisLayer(spec.width(r // 2), spec.width(r), spec.w_dim, r, up=True))
            self.convs.append(SynthesisLayer(spec.width(r), spec.width(r), spec.w_dim, r))
            self.to_rgbs.append(ToRGB(spec.width(r), spec.channels, spec.w_dim))

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        x = self.convs[0](x, ws[:, 0])
        img = self.to_rgbs[0](x, ws[:, 1])
        for b in range(1, len(self.to_rgbs)):  # block b reads ws 2b - 1 (upsampling conv), 2b (conv, to_rgb) and 2b + 1
            x = self.convs[2 * b - 1](x, ws[:, 2 * b - 1])
            x = self.convs[2 * b](x, ws[:, 2 * b])
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
            img = img + self.to_rgbs[b](x, ws[:, 2 * b + 1])
        return img


class StyleGenerator(nn.Module):
    """G(z, label) = synthesis(mapping(z, label) at every layer); :meth:`ws` adds truncation and mixing."""

    def __init__(self, spec: StyleSpec) -> None:
        super().__init__()
        self.spec, self.num_ws = spec, spec.num_ws
        self.mapping = MappingNetwork(spec)
        self.synthesis = SynthesisNetwork(spec)

    def ws(self, z: torch.Tensor, y: torch.Tensor | None = None, *, psi: torch.Tensor | float = 1.0,
           mix_z: torch.Tensor | None = None, mix_layer: torch.Tensor | None = None) -> torch.Tensor:
        """(N, num_ws, w_dim): w of ``z`` at every layer, truncated by ``psi``; with ``mix_z`` and ``mix_layer``
        (one per row, 1..num_ws - 1) the layers from ``mix_layer`` on take the w of ``mix_z`` instead (style
        mixing; a row whose mix_layer is num_ws keeps its own)."""
        w = self.mapping(z, y)
        if not (isinstance(psi, float) and psi == 1.0):
            w = self.mapping.truncate(w, psi, y)
        ws = w[:, None].expand(-1, self.num_ws, -1)
        if mix_z is not None:
            w2 = self.mapping(mix_z, y)
            if not (isinstance(psi, float) and psi == 1.0):
                w2 = self.mapping.truncate(w2, psi, y)
            later = torch.arange(self.num_ws, device=ws.device)[None] >= mix_layer.to(ws.device)[:, None]
            ws = torch.where(later[:, :, None], w2[:, None], ws)
        return ws

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.synthesis(self.ws(z, y))


class MinibatchStd(nn.Module):
    """Appends the standard deviation of each feature over groups of ``group`` samples, averaged to one
    channel (Karras et al. 2018): the discriminator sees how varied a batch is."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = math.gcd(self.group, n)  # a batch not divisible by the group size uses the largest group that fits
        y = x.reshape(g, -1, c, h, w).float()
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n / g,)
        y = y.to(x.dtype).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(cin, cin, 3)
        self.conv1 = EqualConv2d(cin, cout, 3, down=True)
        self.skip = EqualConv2d(cin, cout, 1, bias=False, act=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) / math.sqrt(2)


class StyleDiscriminator(nn.Module):
    """D(x, label) -> one logit per image (a projection on the label when conditional)."""

    def __init__(self, spec: StyleSpec) -> None:
        super().__init__()
        res = spec.block_resolutions[::-1]
        self.from_rgb = EqualConv2d(spec.channels, spec.width(res[0]), 1)
        self.blocks = nn.Sequential(*[DBlock(spec.width(r), spec.width(r // 2)) for r in res[:-1]])
        c4 = spec.width(4)
        self.mbstd = MinibatchStd(spec.mbstd_group)
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4, act=True)
        self.out = EqualLinear(c4, 1)
        self.embed = nn.Embedding(spec.num_classes, c4) if spec.num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(self.conv(self.mbstd(self.blocks(self.from_rgb(x)))).flatten(1))
        out = self.out(h)
        if self.embed is not None:
            if y is None:
                raise ValueError("this discriminator is class-conditional: it needs labels")
            out = out + (self.embed(y).to(h.dtype) * h).sum(1, keepdim=True) / math.sqrt(h.shape[1])
        return out
