"""Super-resolution presets and their training recipe.

A composition trains one generator G (low resolution -> high resolution). Its pixel phase (``pixel``: the
pixel loss alone, its own Adam) runs for the first ``pretrain_steps`` steps: SRGAN's SRResNet and ESRGAN's
PSNR-oriented RRDBNet, which both papers train first and start the GAN from. Then the GAN phases: D on real
high-resolution images against G's outputs, and G on the content loss (features of a fixed network), the
adversarial loss and, for ESRGAN, a small pixel loss. A composition without a discriminator (adv_weight 0,
the ``srresnet`` preset) runs the pixel phase for the whole run: the PSNR-oriented model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from gans.config import ConfigError, ModelConfig, override_fields, require, to_dict
from gans.data import Dataset
from gans.family import Augment, Batch, Composition, StatelessRecipe, OptimizerSpec, Phase, weights
from gans.families.superres.nets import (GENERATORS, PAPER_BLOCKS, SuperresSpec, build_discriminator, build_generator,
                                         check_geometry, domain_features, vgg19_features)
from gans.losses import check_loss, LOSSES

FAMILY = "superres"


@dataclass(frozen=True, kw_only=True)
class Superres(Composition):
    """A resolved super-resolution composition. Weights of 0 switch a term off."""

    generator: Literal["srresnet", "rrdb"] = "srresnet"
    g_blocks: int = 0  # residual blocks (srresnet) or RRDBs; 0: the paper's 16 or 23
    g_norm: Literal["batch", "none"] = "batch"  # srresnet's batch norm (rrdb has none)
    d_norm: Literal["batch", "none"] = "batch"
    loss: str = "non-saturating"
    loss_args: dict[str, Any] = field(default_factory=dict)
    adv_weight: float = 1e-3  # 0: no discriminator, only the pixel phase (the PSNR-oriented model)
    content: Literal["domain", "vgg19", "pixel"] = "domain"  # the feature network of the content loss
    content_layer: Literal["after", "before"] = "after"  # its last layer's activation: after (SRGAN), before (ESRGAN)
    content_distance: Literal["l1", "l2"] = "l2"
    content_weight: float = 1.0
    vgg19_weights: str = ""  # content: vgg19: path of torchvision's ImageNet VGG19 weights
    pixel_loss: Literal["l1", "l2"] = "l2"  # of the pixel phase and of the GAN phase's pixel term
    pixel_weight: float = 0.0  # pixel term in the GAN phase (ESRGAN 1e-2)
    pretrain_steps: int = 1000  # pixel-phase steps before the GAN phases start
    lr_pixel: float = 1e-4  # the pixel phase's learning rate (train.lr_g overrides it too)

    @property
    def adversarial(self) -> bool:
        return self.adv_weight > 0

    def blocks(self) -> int:
        return self.g_blocks or PAPER_BLOCKS[self.generator]

    def components(self) -> dict[str, str]:
        norm = "batch norm" if self.g_norm == "batch" and self.generator == "srresnet" else "no norm"
        out = {"generator": f"{self.generator} ({self.blocks()} blocks, {norm})",
               "pixel_phase": f"{self.pixel_loss} pixel loss, lr {self.lr_pixel:g}"
                              + ("" if not self.adversarial else f", first {self.pretrain_steps} steps")}
        if self.adversarial:
            content = "pixel" if self.content == "pixel" else f"{self.content} features ({self.content_layer} activation)"
            out.update({"discriminator": f"vgg ({self.d_norm} norm)", "loss": self.loss,
                        "terms": f"content {self.content_weight:g} ({content}, {self.content_distance}), adversarial "
                                 f"{self.adv_weight:g}" + (f", pixel {self.pixel_weight:g}" if self.pixel_weight else ""),
                        "optimizer": self.optimizer_label(), "n_critic": str(self.n_critic)})
        return out


PRESETS: dict[str, Superres] = {s.name: s for s in [
    Superres(name="srresnet", adv_weight=0.0, pixel_loss="l2", lr_pixel=1e-4, beta1=0.9, beta2=0.999,
             paper="Ledig et al. 2017, SRResNet: the PSNR-oriented residual network of the SRGAN paper (16 residual "
                   "blocks with batch norm, pixel shuffle x2 upsampling, MSE, Adam 1e-4 (0.9, 0.999))"),
    Superres(name="srgan", content="domain", content_layer="after", content_distance="l2", adv_weight=1e-3,
             loss="non-saturating", pixel_loss="l2", lr_pixel=1e-4, lr_g=1e-4, lr_d=1e-4, beta1=0.9, beta2=0.999,
             paper="Ledig et al. 2017, SRGAN: SRResNet pre-trained on MSE, then content loss on fixed features (VGG54 "
                   "in the paper; here the evaluator's classifier unless VGG19 weights are given) + 1e-3 adversarial, "
                   "VGG-style discriminator, Adam 1e-4 (0.9, 0.999)"),
    Superres(name="esrgan", generator="rrdb", g_norm="none", content="domain", content_layer="before",
             content_distance="l1", adv_weight=5e-3, loss="ragan", pixel_loss="l1", pixel_weight=1e-2,
             lr_pixel=2e-4, lr_g=1e-4, lr_d=1e-4, beta1=0.9, beta2=0.99,
             paper="Wang et al. 2018, ESRGAN: RRDB generator without batch norm (23 blocks, residual scaling 0.2), "
                   "L1 pre-training at 2e-4, then content loss before activation (L1) + 5e-3 relativistic average "
                   "adversarial + 1e-2 L1 pixel loss, Adam 1e-4 (0.9, 0.99)"),
]}

NORMS = ("batch", "none")
CONTENTS = ("domain", "vgg19", "pixel")


def resolve_superres(cfg: ModelConfig) -> Superres:
    """The preset ``cfg.variant`` with ``cfg.overrides`` applied and checked."""
    require(cfg.variant in PRESETS, "model.variant", f"unknown variant {cfg.variant!r}; allowed values: {', '.join(PRESETS)}")
    where = "model.overrides"
    s = override_fields(PRESETS[cfg.variant], cfg.overrides, where)
    require(s.generator in GENERATORS, f"{where}.generator", f"got {s.generator!r}; allowed values: {', '.join(GENERATORS)}")
    for key in ("g_norm", "d_norm"):
        require(getattr(s, key) in NORMS, f"{where}.{key}", f"got {getattr(s, key)!r}; allowed values: {', '.join(NORMS)}")
    require(s.content in CONTENTS, f"{where}.content", f"got {s.content!r}; allowed values: {', '.join(CONTENTS)}")
    require(s.content_layer in ("after", "before"), f"{where}.content_layer", f"got {s.content_layer!r}; allowed values: after, before")
    for key in ("content_distance", "pixel_loss"):
        require(getattr(s, key) in ("l1", "l2"), f"{where}.{key}", f"got {getattr(s, key)!r}; allowed values: l1, l2")
    check_loss(s.loss, s.loss_args, where)
    for key in ("adv_weight", "content_weight", "pixel_weight", "g_blocks", "pretrain_steps"):
        require(getattr(s, key) >= 0, f"{where}.{key}", f"got {getattr(s, key)}; expected >= 0")
    require(s.lr_pixel > 0, f"{where}.lr_pixel", f"got {s.lr_pixel}; expected > 0")
    s.check_optimizer(where)
    if s.content == "vgg19" and not s.vgg19_weights:
        raise ConfigError(f"{where}.vgg19_weights: content: vgg19 needs the path of ImageNet VGG19 weights "
                          "(torchvision's vgg19-dcbe5e0d.pth); or use content: domain")
    if s.adversarial and not (s.content_weight or s.pixel_weight):
        raise ConfigError(f"{where}: the GAN phase has only the adversarial term (content_weight and pixel_weight are "
                          "0); nothing ties the output to the low-resolution input")
    return s


def _distance(kind: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).abs().mean() if kind == "l1" else ((x - y) ** 2).mean()


class SuperresRecipe(StatelessRecipe):
    """A :class:`gans.family.Recipe` for one super-resolution composition on ``superres`` data."""

    primary_metric, higher_is_better = "fid", False

    def __init__(self, comp: Superres, *, model: ModelConfig, data: Dataset, preview: Dataset | None,
                 features: Mapping[str, nn.Module] | None = None) -> None:
        if data.layout != "superres":
            raise ConfigError(f"model.variant: {comp.name} ({FAMILY}) trains on super-resolution pairs (set data.scale); "
                              f"the prepared data has the {data.layout} layout")
        self.comp, self.model_cfg, self.variant = comp, model, comp.name
        lr, hr = data.parts["lr"], data.parts["hr"]
        r = int(hr.images.shape[-1])
        scale = r // int(lr.images.shape[-1])
        self.spec = SuperresSpec(resolution=r, scale=scale, channels=int(hr.images.shape[1]), width=model.width,
                                 generator=comp.generator, g_blocks=comp.blocks(), g_norm=comp.g_norm, d_norm=comp.d_norm)
        check_geometry(self.spec)
        self.streams = {"pairs": {"lr": lr.images, "hr": hr.images}}
        self.preview = preview
        self.direction = f"x{scale}"
        self.content_net = self._content_network(features) if comp.adversarial and comp.content != "pixel" else None
        self._plan()

    def _content_network(self, features: Mapping[str, nn.Module] | None) -> nn.Module:
        comp = self.comp
        before = comp.content_layer == "before"
        if comp.content == "vgg19":
            return vgg19_features(comp.vgg19_weights, before_activation=before)
        classifier = (features or {}).get("hr")
        if classifier is None:
            raise ConfigError("model.overrides.content: domain takes its features from the evaluator stage's classifier "
                              "of the high-resolution images, and there is none (unlabelled data, or no "
                              "models/evaluator.pt); give VGG19 weights (content: vgg19, vgg19_weights: PATH) or use "
                              "content: pixel")
        return domain_features(classifier, before_activation=before)

    def _plan(self) -> None:
        comp = self.comp
        betas = (comp.beta1, comp.beta2)
        self.optimizers = {"pixel": OptimizerSpec(("G",), comp.lr_pixel, comp.optimizer, betas, "lr_g")}
        if not comp.adversarial:
            self.phases: tuple[Phase, ...] = (Phase("pixel", "pixel"),)
        else:
            self.optimizers.update(comp.optimizers(("G",), ("D",)))
            start, key = comp.pretrain_steps, "model.overrides.pretrain_steps"
            gan = (Phase("D", "D", repeats=comp.n_critic, start=start, start_key=key),
                   Phase("G", "G", new_batch=False, frozen=("D",), start=start, start_key=key))
            self.phases = ((Phase("pixel", "pixel", stop=start),) if start else ()) + gan
        self.ema = {"G_ema": "G"}
        self.keep_graph = comp.n_critic == 1

    def describe(self) -> dict[str, Any]:
        return {"variant": {k: v for k, v in asdict(self.comp).items() if k != "paper"}, "spec": asdict(self.spec)}

    def build(self) -> dict[str, nn.Module]:
        nets = {"G": build_generator(self.spec)}
        if self.comp.adversarial:
            nets["D"] = build_discriminator(self.spec)
        return nets

    def bind(self, networks: dict[str, nn.Module], *, augment: Augment | None, device: torch.device) -> None:
        self.nets, self.device = networks, device
        self.augment = augment or (lambda x: x)
        self.loss_fn = LOSSES[self.comp.loss](**self.comp.loss_args)
        if self.content_net is not None:
            self.content_net = self.content_net.to(device)
        self.fake: torch.Tensor | None = None  # the D phase's outputs, with their graph, for the G phase

    # ------------------------------------------------------------------ losses

    def loss(self, phase: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lr, hr = batch["pairs"]["lr"], batch["pairs"]["hr"]
        if phase == "pixel":
            loss = _distance(self.comp.pixel_loss, self.nets["G"](lr).float(), hr.float())
            return loss, {"loss_pixel": loss.detach(), "loss_g": loss.detach()}
        return self._d_loss(lr, hr) if phase == "D" else self._g_loss(lr, hr)

    def _d_loss(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.set_grad_enabled(self.keep_graph):
            fake = self.nets["G"](lr)
        self.fake = fake if self.keep_graph else None
        D = self.nets["D"]
        real_logits = D(self.augment(hr)).float().flatten()
        fake_logits = D(self.augment(fake.detach())).float().flatten()
        loss = self.loss_fn.d_loss(real_logits, fake_logits)
        return loss, {"loss_d": loss.detach(), "d_real_sign": real_logits.detach().sign().mean(),
                      "d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean()}

    def _g_loss(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        comp = self.comp
        fake = self.fake if self.fake is not None else self.nets["G"](lr)
        self.fake = None
        terms: dict[str, torch.Tensor] = {}
        if comp.content_weight:
            if self.content_net is None:  # content: pixel
                content = _distance(comp.content_distance, fake.float(), hr.float())
            else:
                with torch.no_grad():
                    target = self.content_net(hr).float()
                content = _distance(comp.content_distance, self.content_net(fake).float(), target)
            terms["loss_content"] = comp.content_weight * content
        D = self.nets["D"]
        fake_logits = D(self.augment(fake)).float().flatten()
        real_logits = None
        if self.loss_fn.needs_real_in_g:
            with torch.no_grad():
                real_logits = D(self.augment(hr)).float().flatten()
        terms["loss_adv"] = comp.adv_weight * self.loss_fn.g_loss(fake_logits, real_logits)
        if comp.pixel_weight:
            terms["loss_pixel"] = comp.pixel_weight * _distance(comp.pixel_loss, fake.float(), hr.float())
        loss = sum(terms.values())
        return loss, {**{k: v.detach() for k, v in terms.items()}, "loss_g": loss.detach()}

    # ------------------------------------------------------------------ artifact

    def export(self, ema: dict[str, nn.Module], step: int) -> dict[str, Any]:
        """What ``models/generator.pt`` holds for an upscaler: the EMA generator and all that rebuilds it."""
        return {"family": FAMILY, "artifact": "translate",
                "state_dict": weights(ema["G_ema"]),
                "directions": [self.direction], "spec": asdict(self.spec),
                "variant": {k: v for k, v in asdict(self.comp).items() if k != "vgg19_weights"},
                "model": to_dict(self.model_cfg), "step": step}

    def sample_grid(self, ema: dict[str, nn.Module], device: torch.device) -> torch.Tensor:
        from gans.families.superres.evaluate import superres_grid

        data = self.preview
        if data is None:
            pairs = self.streams["pairs"]
            from gans.data import ImageSet

            data = Dataset("superres", {"lr": ImageSet(pairs["lr"][:8], None, ()), "hr": ImageSet(pairs["hr"][:8], None, ())})
        return superres_grid(ema["G_ema"], data, scale=self.spec.scale, device=device)
