"""The StarGAN preset and its training recipe.

Each step: ``n_critic`` discriminator updates (Wasserstein loss with gradient penalty, plus the domain
classification loss on real images and their true domains), then one generator update (fool D, be classified
as the target domain, and come back to the input when translated back to the original domain). Target domains
are the batch's own domain vectors in shuffled order, as the paper samples them.

No augmentation reaches D: ADA's and DiffAugment's colour and geometric operations change the very attributes
its domain head learns (an inverted digit is another domain)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gans.config import ConfigError, ModelConfig, override_fields, require, to_dict
from gans.data import Dataset
from gans.family import Augment, Batch, Composition, StatelessRecipe, Phase, weights
from gans.families.multidomain.nets import (MultiDomainSpec, RealismHead, StarDiscriminator, StarGenerator,
                                            check_geometry)
from gans.losses import gradient_norm

FAMILY = "multidomain"


@dataclass(frozen=True, kw_only=True)
class StarComposition(Composition):
    g_blocks: int = 6
    cls_weight: float = 1.0  # domain classification loss (lambda_cls)
    rec_weight: float = 10.0  # reconstruction G(G(x, c_trg), c_org) ~ x (lambda_rec)
    gp_weight: float = 10.0  # gradient penalty (lambda_gp)
    id_weight: float = 0.0  # identity G(x, c_org) ~ x: not in the paper (CycleGAN's term); 0 is the paper's loss
    decay_start: float = 1.0  # the LR decays linearly to 0 from this fraction of train.steps (1: constant)

    def components(self) -> dict[str, str]:
        return {"generator": f"resnet ({self.g_blocks} blocks, instance norm), target domain tiled over the input",
                "discriminator": "patch realism + domain classification heads",
                "loss": f"wasserstein + gp {self.gp_weight:g}",
                "terms": f"domain classification {self.cls_weight:g}, reconstruction {self.rec_weight:g}"
                         + (f", identity {self.id_weight:g}" if self.id_weight else ""),
                "optimizer": self.optimizer_label(), "n_critic": str(self.n_critic),
                "lr_decay": "none" if self.decay_start >= 1 else f"linear from {self.decay_start:g} of the steps"}


PRESETS: dict[str, StarComposition] = {p.name: p for p in [
    StarComposition(name="stargan", lr_g=1e-4, lr_d=1e-4, beta1=0.5, beta2=0.999, n_critic=5, decay_start=0.5,
                    paper="Choi et al. 2018, StarGAN: one generator over every domain (target vector tiled over the "
                          "image), D with realism and domain heads, WGAN-GP (10), domain classification 1, "
                          "reconstruction 10, 5 critic steps, Adam 1e-4 (0.5, 0.999), LR decay over the second half"),
]}


def resolve_multidomain(cfg: ModelConfig) -> StarComposition:
    require(cfg.variant in PRESETS, "model.variant", f"unknown variant {cfg.variant!r}; allowed values: {', '.join(PRESETS)}")
    where = "model.overrides"
    p = override_fields(PRESETS[cfg.variant], cfg.overrides, where)
    for key in ("cls_weight", "rec_weight", "gp_weight", "id_weight", "g_blocks"):
        require(getattr(p, key) >= 0, f"{where}.{key}", f"got {getattr(p, key)}; expected >= 0")
    p.check_optimizer(where)
    require(0 < p.decay_start <= 1, f"{where}.decay_start", f"got {p.decay_start}; expected (0, 1] (1: no decay)")
    return p


def domain_loss(logits: torch.Tensor, target: torch.Tensor, exclusive: bool) -> torch.Tensor:
    """Cross-entropy against one-of-K domains, or the summed binary cross-entropy of multi-hot attributes
    (per image), as StarGAN trains RaFD and CelebA."""
    if exclusive:
        return F.cross_entropy(logits, target.argmax(1))
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / len(logits)


class StarRecipe(StatelessRecipe):
    """A :class:`gans.family.Recipe` for StarGAN on ``attributes`` data."""

    primary_metric, higher_is_better = "fid", False

    def __init__(self, comp: StarComposition, *, model: ModelConfig, data: Dataset, preview: Dataset | None) -> None:
        if data.layout != "attributes":
            raise ConfigError(f"model.variant: {comp.name} ({FAMILY}) trains on images with domains or attributes; the "
                              f"prepared data has the {data.layout} layout")
        images = data.parts["images"]
        if images.attributes is None or len(images.attribute_names) < 2:
            raise ConfigError(f"data.source: {comp.name} needs at least two domains or attributes")
        self.comp, self.model_cfg, self.variant = comp, model, comp.name
        self.spec = MultiDomainSpec(resolution=int(images.images.shape[-1]), channels=int(images.images.shape[1]),
                                    domains=tuple(images.attribute_names), exclusive=images.exclusive,
                                    width=model.width, g_blocks=comp.g_blocks)
        check_geometry(self.spec)
        self.streams = {"images": {"images": images.images, "attributes": images.attributes.float()}}  # 0/1, not pixels
        self.preview = preview
        self.optimizers = comp.optimizers(("G",), ("D",), comp.decay_start)
        self.phases = (Phase("D", "D", repeats=comp.n_critic), Phase("G", "G", new_batch=False, frozen=("D",)))
        self.ema = {"G_ema": "G"}

    def describe(self) -> dict[str, Any]:
        return {"variant": {k: v for k, v in asdict(self.comp).items() if k != "paper"}, "spec": asdict(self.spec)}

    def build(self) -> dict[str, nn.Module]:
        return {"G": StarGenerator(self.spec), "D": StarDiscriminator(self.spec)}

    def bind(self, networks: dict[str, nn.Module], *, augment: Augment | None, device: torch.device) -> None:
        self.nets, self.device = networks, device
        self.realism = RealismHead(networks["D"])

    def loss(self, phase: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, c = batch["images"]["images"], batch["images"]["attributes"].float()
        target = c[torch.randperm(len(c), device=c.device)]
        return self._d_loss(x, c, target) if phase == "D" else self._g_loss(x, c, target)

    def _d_loss(self, x: torch.Tensor, c: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        comp, D = self.comp, self.nets["D"]
        with torch.no_grad():
            fake = self.nets["G"](x, target)
        src_real, cls_real = D(x)
        src_fake, _ = D(fake)
        real, fake_score = src_real.float().mean(), src_fake.float().mean()
        cls = domain_loss(cls_real.float(), c, self.spec.exclusive)
        eps = torch.rand(len(x), 1, 1, 1, device=x.device)
        norms = gradient_norm(self.realism, eps * x + (1 - eps) * fake, None)
        gp = ((norms - 1) ** 2).mean()
        loss = fake_score - real + comp.cls_weight * cls + comp.gp_weight * gp
        return loss, {"loss_d": loss.detach(), "d_real": real.detach(), "d_fake": fake_score.detach(),
                      "loss_d_cls": cls.detach(), "grad_norm": norms.detach().mean()}

    def _g_loss(self, x: torch.Tensor, c: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        comp, G, D = self.comp, self.nets["G"], self.nets["D"]
        fake = G(x, target)
        src, cls = D(fake)
        adv = -src.float().mean()
        cls_loss = domain_loss(cls.float(), target, self.spec.exclusive)
        rec = (G(fake, c).float() - x.float()).abs().mean()
        loss = adv + comp.cls_weight * cls_loss + comp.rec_weight * rec
        logs = {"loss_g_cls": cls_loss.detach(), "loss_rec": rec.detach()}
        if comp.id_weight:
            idt = (G(x, c).float() - x.float()).abs().mean()
            loss = loss + comp.id_weight * idt
            logs["loss_id"] = idt.detach()
        return loss, {"loss_g": loss.detach(), **logs}

    def export(self, ema: dict[str, nn.Module], step: int) -> dict[str, Any]:
        return {"family": FAMILY, "artifact": "translate",
                "state_dict": weights(ema["G_ema"]),
                "spec": asdict(self.spec), "variant": asdict(self.comp), "model": to_dict(self.model_cfg),
                "step": step}

    def sample_grid(self, ema: dict[str, nn.Module], device: torch.device) -> torch.Tensor:
        from gans.families.multidomain.evaluate import domain_grid

        data = self.preview
        if data is None:
            s = self.streams["images"]
            from gans.data import ImageSet

            data = Dataset("attributes", {"images": ImageSet(s["images"][:8], None, (), s["attributes"][:8],
                                                             self.spec.domains)})
        return domain_grid(ema["G_ema"], data, self.spec, device=device)
