"""StackGAN-v2 (Zhang et al. 2018), class-conditional: one generator tree that draws the same image at several
resolutions (for 32x32 data: 8, 16 and 32), a discriminator per resolution, and the colour-consistency term
between neighbouring resolutions.

The generator maps z and the conditioning vector c to a 4x4 map, grows it to the first resolution and draws
an image there; each later stage joins c to the features again, refines them with residual blocks and
doubles the side, drawing the next image. c comes from a learned class embedding through conditioning
augmentation: a linear map gives a mean and a log-variance, c = mean + sigma * eps while training, with the
KL divergence to N(0, I) in the generator's loss (the paper's text embedding stands where the class
embedding is; the bundled data has no captions). eps is part of the latent: the last ``ca_dim`` entries of
z, the rest is the noise the generator's first layer sees. So drawing samples draws c the way training did
(a seed and a label still give one image), and truncation pulls c towards its mean with the rest of z.
Drawing c at its mean instead collapses each class to nearly one image: the generator learns to take most
of a class's variety from eps (bench/RESULTS.md, "StackGAN: drawing c as training did": recall 0.09 with
c = mean, 0.61 with c drawn, the same weights). Artifacts written before eps joined the latent
(spec without ``latent_ca``) keep their layout: z and c side by side, c = mean when drawing.

Each discriminator is a joint conditional and unconditional one (the paper's JCU): strided convolutions to
4x4, an unconditional logit, and a conditional logit after c's class embedding joins the 4x4 features. Real
images reach the lower-resolution discriminators as 2x2-averaged copies.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gans.config import ConfigError, ModelConfig, require, to_dict
from gans.data import Dataset, to_uint8
from gans.family import Augment, Batch, Composition, Phase, weights
from gans.layers import init_normal
from gans.sampling import grid_seeds_labels, image_grid, latents_for_seeds

COLOR_MEAN, COLOR_COV = 1.0, 5.0  # the paper's lambda_1 and lambda_2 within the colour-consistency term


@dataclass(frozen=True, kw_only=True)
class StackedSpec:
    channels: int
    resolution: int
    z_dim: int
    width: int
    num_classes: int = 0  # 0: unconditional (no conditioning augmentation, unconditional logits only)
    stages: int = 3
    ca_dim: int = 16  # size of the conditioning vector c
    conditioning: str = "none"  # or "conditioning-augmentation" (with num_classes)
    latent_ca: bool = False  # the last ca_dim entries of z are c's noise eps (False: the layout of older artifacts)

    @property
    def noise_dim(self) -> int:
        """The entries of z that reach the first layer as noise (z_dim less eps's, when eps is in z)."""
        return self.z_dim - self.ca_dim if self.num_classes and self.latent_ca else self.z_dim

    @property
    def sides(self) -> list[int]:
        """The resolutions the generator draws at, lowest first (8, 16, 32 for 32x32 data and 3 stages)."""
        return [self.resolution // 2 ** (self.stages - 1 - k) for k in range(self.stages)]


def check_spec(spec: StackedSpec, where: str) -> None:
    """The stages fit the data's side: the first one draws at least 4x4."""
    r = spec.resolution
    if spec.sides[0] < 4:
        raise ConfigError(f"{where}.stages: {spec.stages} stages at {r}x{r} would start at "
                          f"{spec.sides[0]}x{spec.sides[0]}; the first stage needs at least 4x4 (at most "
                          f"{int(math.log2(r)) - 1} stages)")
    if spec.num_classes and spec.latent_ca and spec.z_dim <= spec.ca_dim:
        raise ConfigError(f"model.z_dim: got {spec.z_dim} with {where}.ca_dim {spec.ca_dim}; the last ca_dim entries "
                          f"of the latent are the conditioning noise, so z_dim must exceed ca_dim (raise "
                          f"model.z_dim or lower {where}.ca_dim)")


class _GLUBlock(nn.Sequential):
    """conv 3x3 to twice the channels, batch norm, gated linear unit (StackGAN-v2's building block)."""

    def __init__(self, cin: int, cout: int, *, up: bool = False) -> None:
        layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")] if up else []
        super().__init__(*layers, nn.Conv2d(cin, 2 * cout, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * cout), nn.GLU(1))


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_GLUBlock(ch, ch), nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConditioningAugmentation(nn.Module):
    """class -> (mean, log-variance) of c: the class embedding through a linear map and a GLU."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, 2 * dim)
        self.fc = nn.Linear(2 * dim, 4 * dim)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = F.glu(self.fc(self.embed(y)), dim=1).chunk(2, dim=1)
        return mu, logvar


class StackedGenerator(nn.Module):
    """G(z, y) -> the last stage's image; ``stage_images(z, y)`` -> every stage's, lowest first, and the
    conditioning's (mean, log-variance) for the KL term."""

    def __init__(self, spec: StackedSpec) -> None:
        super().__init__()
        self.spec = spec
        ch = spec.width
        n0 = int(math.log2(spec.sides[0] // 4))  # up-blocks from 4x4 to the first stage
        c4 = ch * 2 ** n0
        cond = spec.ca_dim if spec.num_classes else 0
        self.fc = nn.Sequential(nn.Linear(spec.noise_dim + cond, 2 * c4 * 16, bias=False), nn.BatchNorm1d(2 * c4 * 16),
                                nn.GLU(1))
        self.first = nn.Sequential(*[_GLUBlock(c4 // 2 ** k, c4 // 2 ** (k + 1), up=True) for k in range(n0)])
        self.joins = nn.ModuleList([_GLUBlock(ch + cond, ch) for _ in range(spec.stages - 1)])
        self.refine = nn.ModuleList([nn.Sequential(_Residual(ch), _Residual(ch), _GLUBlock(ch, ch, up=True))
                                     for _ in range(spec.stages - 1)])
        self.to_images = nn.ModuleList([nn.Sequential(nn.Conv2d(ch, spec.channels, 3, 1, 1), nn.Tanh())
                                        for _ in range(spec.stages)])
        self.ca = ConditioningAugmentation(spec.num_classes, spec.ca_dim) if spec.num_classes else None
        init_normal(self)
        if self.ca is not None:  # the class embedding stands for a text embedding: unit scale, not N(0, 0.02)
            nn.init.normal_(self.ca.embed.weight)

    def condition(self, y: torch.Tensor | None, eps: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(c, mean, log-variance): c = mean + sigma * eps, eps the latent's last ``ca_dim`` entries
        (``latent_ca``); without eps (an artifact from before that layout, never trained again) c = mean."""
        if self.ca is None:
            return None, None, None
        if y is None:
            raise ValueError("this generator is class-conditional: labels are required")
        mu, logvar = self.ca(y)
        c = mu if eps is None else mu + eps.to(mu.dtype) * (0.5 * logvar).exp()
        return c, mu, logvar

    def z_weight(self) -> torch.Tensor:
        """(outputs, z_dim): the first layer's response to the latent, for SeFa. The noise entries reach it as
        they are; eps reaches it through c = mean + sigma * eps, so its columns are c's scaled by sigma (the
        mean over classes: sigma depends on the class)."""
        weight = self.fc[0].weight.detach()
        n = self.spec.noise_dim
        if self.ca is None or n == self.spec.z_dim:
            return weight[:, :self.spec.z_dim]
        with torch.no_grad():
            _, logvar = self.ca(torch.arange(self.spec.num_classes, device=weight.device))
        return torch.cat([weight[:, :n], weight[:, n:] * (0.5 * logvar).exp().mean(0)], dim=1)

    def stage_images(self, z: torch.Tensor, y: torch.Tensor | None = None
                     ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        n = self.spec.noise_dim
        c, mu, logvar = self.condition(y, z[:, n:] if n < self.spec.z_dim else None)
        z = z[:, :n]
        h = self.fc(z if c is None else torch.cat([z, c], dim=1)).unflatten(1, (-1, 4, 4))
        h = self.first(h)
        images = [self.to_images[0](h)]
        for k in range(1, self.spec.stages):
            if c is not None:
                h = torch.cat([h, c[:, :, None, None].expand(-1, -1, *h.shape[2:])], dim=1)
            h = self.refine[k - 1](self.joins[k - 1](h))
            images.append(self.to_images[k](h))
        return images, mu, logvar

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.stage_images(z, y)[0][-1]


class ScaleDiscriminator(nn.Module):
    """Images at one side -> (unconditional logits, conditional logits or None)."""

    def __init__(self, spec: StackedSpec, side: int) -> None:
        super().__init__()
        ch = spec.width
        layers: list[nn.Module] = [nn.Conv2d(spec.channels, ch, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)] \
            if side > 4 else [nn.Conv2d(spec.channels, ch, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
        s = max(side // 2, 4)
        while s > 4:
            layers += [nn.Conv2d(ch, 2 * ch, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * ch), nn.LeakyReLU(0.2, inplace=True)]
            ch, s = 2 * ch, s // 2
        self.body = nn.Sequential(*layers)
        self.uncond = nn.Conv2d(ch, 1, 4)
        if spec.num_classes:
            self.embed = nn.Embedding(spec.num_classes, spec.ca_dim)
            self.joint = nn.Sequential(nn.Conv2d(ch + spec.ca_dim, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch),
                                       nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ch, 1, 4))
        else:
            self.embed = self.joint = None

    def forward(self, images: torch.Tensor, y: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.body(images)
        uncond = self.uncond(h).flatten()
        if self.joint is None or y is None:
            return uncond, None
        e = self.embed(y)[:, :, None, None].expand(-1, -1, *h.shape[2:])
        return uncond, self.joint(torch.cat([h, e], dim=1)).flatten()


class StackedDiscriminators(nn.Module):
    """One discriminator per stage: ``self[k](images_at_side_k, y)``."""

    def __init__(self, spec: StackedSpec) -> None:
        super().__init__()
        self.scales = nn.ModuleList([ScaleDiscriminator(spec, side) for side in spec.sides])
        init_normal(self)
        for d in self.scales:
            if d.embed is not None:
                nn.init.normal_(d.embed.weight)

    def forward(self, images: list[torch.Tensor], y: torch.Tensor | None = None
                ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [d(x, y) for d, x in zip(self.scales, images)]


def color_consistency(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The colour-consistency term between two stages' images of the same latents: per image, the squared
    distance of the pixels' mean colour (weight 1) and of their colour covariance (weight 5), batch mean."""
    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = x.float().flatten(2)  # (N, C, P)
        mu = pixels.mean(2)
        centred = pixels - mu[:, :, None]
        return mu, centred @ centred.transpose(1, 2) / pixels.shape[2]

    (mu_l, cov_l), (mu_h, cov_h) = stats(low), stats(high)
    return (COLOR_MEAN * (mu_h - mu_l).square().sum(1) + COLOR_COV * (cov_h - cov_l).square().sum((1, 2))).mean()


@dataclass(frozen=True, kw_only=True)
class Stacked(Composition):
    """A resolved StackGAN-v2 composition."""

    stages: int = 3
    ca_dim: int = 16
    conditional: bool = True
    kl_weight: float = 1.0
    color_weight: float = 1.0  # x (1 x mean term + 5 x covariance term)
    uncond_weight: float = 1.0  # the unconditional logits' share of a conditional model's losses

    def components(self) -> dict[str, str]:
        cond = f"conditioning augmentation (c of {self.ca_dim}, KL {self.kl_weight:g})" if self.conditional else "none"
        return {"generator": f"stackgan-v2 tree ({self.stages} stages)",
                "discriminator": f"{self.stages} discriminators, one per resolution" +
                                 (", joint conditional/unconditional" if self.conditional else ""),
                "loss": "non-saturating", "regularizers": f"colour consistency {self.color_weight:g}",
                "conditioning": cond, "optimizer": self.optimizer_label(), "n_critic": str(self.n_critic)}


STACKGAN = Stacked(
    name="stackgan", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999,
    paper="Zhang et al. 2018, StackGAN++ (generator tree with a discriminator per resolution, joint conditional and "
          "unconditional losses, colour consistency lambda 1 and 5, conditioning augmentation with KL weight 1; a "
          "class embedding stands for the text embedding; Adam 2e-4 (0.5, 0.999))")


def resolve_stacked(s: Stacked, where: str) -> Stacked:
    s.check_optimizer(where)
    require(s.stages >= 1, f"{where}.stages", f"got {s.stages}; expected >= 1")
    require(s.ca_dim >= 1, f"{where}.ca_dim", f"got {s.ca_dim}; expected >= 1")
    for key in ("kl_weight", "color_weight", "uncond_weight"):
        require(getattr(s, key) >= 0, f"{where}.{key}", f"got {getattr(s, key)}; expected >= 0")
    return s


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


class StackedRecipe:
    """A :class:`gans.family.Recipe` for StackGAN-v2 on one image set (stream ``real``): phase D updates every
    discriminator (one optimiser; their losses are separate), phase G the generator tree."""

    primary_metric, higher_is_better = "fid", False

    def __init__(self, comp: Stacked, *, model: ModelConfig, data: Dataset) -> None:
        from gans.families.style.recipe import FAMILY, condition_classes, image_set

        self.family = FAMILY
        images = image_set(comp.name, data, "StackGAN")
        classes = condition_classes(comp, images)
        self.comp, self.model_cfg, self.variant, self.classes = comp, model, comp.name, images.classes
        self.spec = StackedSpec(channels=int(images.images.shape[1]), resolution=int(images.images.shape[-1]),
                                z_dim=model.z_dim, width=model.width, num_classes=classes,
                                stages=comp.stages, ca_dim=comp.ca_dim,
                                conditioning="conditioning-augmentation" if comp.conditional else "none",
                                latent_ca=True)
        check_spec(self.spec, "model.overrides")
        self.streams = {"real": {"images": images.images} | ({"labels": images.labels} if comp.conditional else {})}
        self.phases = (Phase("D", "D", repeats=comp.n_critic), Phase("G", "G", new_batch=False, frozen=("D",)))
        self.optimizers = comp.optimizers(("G",), ("D",))
        self.ema = {"G_ema": "G"}

    def describe(self) -> dict[str, Any]:
        return {"variant": {k: v for k, v in asdict(self.comp).items() if k != "paper"}, "spec": asdict(self.spec),
                "sides": self.spec.sides}

    def build(self) -> dict[str, nn.Module]:
        return {"G": StackedGenerator(self.spec), "D": StackedDiscriminators(self.spec)}

    def bind(self, networks: dict[str, nn.Module], *, augment: Augment | None, device: torch.device) -> None:
        self.G, self.D, self.device = networks["G"], networks["D"], device
        self.augment = augment or (lambda x: x)

    def _reals(self, images: torch.Tensor) -> list[torch.Tensor]:
        r = self.spec.resolution
        return [F.avg_pool2d(images, r // side) if side < r else images for side in self.spec.sides]

    def loss(self, phase: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real = batch["real"]["images"]
        y = batch["real"].get("labels") if self.comp.conditional else None
        n = len(real)
        z = torch.randn(n, self.spec.z_dim, device=self.device)
        w = self.comp.uncond_weight if y is not None else 1.0
        if phase == "D":
            with torch.no_grad():
                fakes, _, _ = self.G.stage_images(z, y)
            # a real image with another class: the conditional logit must call the pair fake (matching-aware)
            wrong = None if y is None else (y + torch.randint(1, len(self.classes), y.shape, device=y.device)) % len(self.classes)
            total, stats = 0.0, {}
            reals = self._reals(real)
            real_outs = self.D([self.augment(x) for x in reals], y)
            fake_outs = self.D([self.augment(x) for x in fakes], y)
            wrong_outs = self.D([self.augment(x) for x in reals], wrong) if y is not None else None
            for k, ((ru, rc), (fu, fc)) in enumerate(zip(real_outs, fake_outs)):
                loss = w * (_bce(ru, 1.0) + _bce(fu, 0.0))
                if rc is not None:
                    loss = loss + _bce(rc, 1.0) + 0.5 * (_bce(fc, 0.0) + _bce(wrong_outs[k][1], 0.0))
                total = total + loss
                stats[f"loss_d{k}"] = loss.detach()
            top = real_outs[-1][1] if real_outs[-1][1] is not None else real_outs[-1][0]
            stats.update({"loss_d": total.detach(), "d_real": top.detach().float().mean(),
                          "d_fake": (fake_outs[-1][1] if fake_outs[-1][1] is not None else fake_outs[-1][0])
                          .detach().float().mean(), "d_real_sign": real_outs[-1][0].detach().float().sign().mean()})
            return total, stats
        if phase == "G":
            fakes, mu, logvar = self.G.stage_images(z, y)
            total, stats = 0.0, {}
            for k, (fu, fc) in enumerate(self.D([self.augment(x) for x in fakes], y)):
                adv = w * _bce(fu, 1.0) + (_bce(fc, 1.0) if fc is not None else 0.0)
                total, stats[f"loss_g{k}"] = total + adv, adv.detach()
            if mu is not None and self.comp.kl_weight:
                kl = (0.5 * (mu.float().square() + logvar.float().exp() - 1 - logvar.float())).sum(1).mean()
                total, stats["kl"] = total + self.comp.kl_weight * kl, kl.detach()
            if self.comp.color_weight and len(fakes) > 1:
                color = sum(color_consistency(a, b) for a, b in zip(fakes, fakes[1:]))
                total, stats["color"] = total + self.comp.color_weight * color, color.detach()
            stats["loss_g"] = total.detach()
            return total, stats
        raise ValueError(f"unknown phase {phase!r}")

    def after_update(self, phase: str) -> None:
        pass

    def compile(self) -> None:
        """The generator's ``stage_images`` (what the phases call; ``forward`` only draws the last stage) and each
        discriminator; the EMA copy was made before and stays eager."""
        self.G.stage_images = torch.compile(self.G.stage_images)
        for d in self.D.scales:
            d.compile()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def export(self, ema: dict[str, nn.Module], step: int) -> dict[str, Any]:
        """``models/generator.pt``: the EMA generator tree and all that rebuilds it."""
        return {"family": self.family, "artifact": "generate", "architecture": "stackgan",
                "state_dict": weights(ema["G_ema"]), "spec": asdict(self.spec), "variant": asdict(self.comp),
                "model": to_dict(self.model_cfg), "classes": list(self.classes), "step": step}

    def sample_grid(self, ema: dict[str, nn.Module], device: torch.device) -> torch.Tensor:
        """Every stage of the same latents side by side (lower stages upsampled): 8 samples, one row of stages
        per sample pair (a conditional model: classes 0..7)."""
        g = ema["G_ema"].eval()
        seeds, labels = grid_seeds_labels(self.spec.num_classes)
        seeds = seeds[::8][:8] if labels else seeds[:8]
        labels = labels[::8][:8] if labels else None
        with torch.no_grad():
            y = None if labels is None else torch.as_tensor(labels, device=device)
            images, _, _ = g.stage_images(latents_for_seeds(seeds, self.spec.z_dim).to(device), y)
        r = self.spec.resolution
        up = [F.interpolate(x, scale_factor=r // x.shape[-1], mode="nearest") if x.shape[-1] < r else x for x in images]
        rows = torch.stack(up, dim=1).flatten(0, 1)  # sample 0's stages, then sample 1's, ...
        return image_grid(to_uint8(rows).cpu(), per_row=2 * len(images))


def stacked_generator(payload: dict[str, Any]) -> StackedGenerator:
    g = StackedGenerator(StackedSpec(**payload["spec"]))
    g.load_state_dict(payload["state_dict"])
    return g


