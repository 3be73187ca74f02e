"""The progressive and style-based family's presets and training recipes: StyleGAN2 (Karras et al. 2020) and,
below, ProGAN (Karras et al. 2018).

Four phases per step: the discriminator's logistic loss; lazy R1 on real images every ``r1_every`` steps
(its weight multiplied by the interval); the generator's non-saturating loss; lazy path-length
regularisation every ``pl_every`` steps (on half a batch). A regularised optimiser has its Adam rate and
betas rescaled by c = every / (every + 1), as the paper does, so the lazy updates cost what a regularised
update every step would. Generated images in every phase mix the styles of two latents at a random layer
with probability ``style_mixing``. The recipe tracks the mean w (the generator's buffer, so the EMA copy and
the artifact carry it) and the path-length mean (its own state, kept in checkpoints).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gans.config import ConfigError, ModelConfig, override_fields, require, to_dict
from gans.data import Dataset, ImageSet
from gans.family import Augment, Batch, Composition, OptimizerSpec, Phase, weights
from gans.families.style.nets import StyleDiscriminator, StyleGenerator, StyleSpec
from gans.families.style.stacked import STACKGAN, Stacked, resolve_stacked
from gans.losses import is_compiled
from gans.sampling import grid_seeds_labels, image_grid

FAMILY = "progressive-style"


@dataclass(frozen=True, kw_only=True)
class Style(Composition):
    """A resolved StyleGAN2 composition."""

    mapping_layers: int = 8
    style_mixing: float = 0.9  # probability that a generated image mixes two latents' styles
    r1_gamma: float = 10.0  # 0: no R1
    r1_every: int = 16
    pl_weight: float = 2.0  # 0: no path-length regularisation
    pl_every: int = 4
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    conditional: bool = False  # label embedding in the mapping network, projection in D
    mbstd_group: int = 4

    def components(self) -> dict[str, str]:
        r1 = f"lazy R1 (gamma {self.r1_gamma:g}, every {self.r1_every})" if self.r1_gamma else "no R1"
        pl = (f"lazy path length (weight {self.pl_weight:g}, every {self.pl_every})" if self.pl_weight
              else "no path length")
        return {"generator": f"stylegan2 skip ({self.mapping_layers}-layer mapping)",
                "discriminator": "stylegan2 resnet (minibatch std" + (", projection)" if self.conditional else ")"),
                "loss": "non-saturating logistic", "regularizers": f"{r1}, {pl}, style mixing {self.style_mixing:g}",
                "conditioning": "projection" if self.conditional else "none",
                "optimizer": self.optimizer_label(), "n_critic": str(self.n_critic)}


PRESETS: dict[str, Any] = {p.name: p for p in [
    Style(name="stylegan2", lr_g=2e-3, lr_d=2e-3, beta1=0.0, beta2=0.99,
          paper="Karras et al. 2020, Analyzing and Improving the Image Quality of StyleGAN (config F: 8-layer mapping, "
                "style mixing 0.9, lazy R1 gamma 10 every 16, path length 2 every 4, Adam 2e-3 (0, 0.99))"),
    Style(name="stylegan2-cifar", mapping_layers=2, style_mixing=0.0, r1_gamma=0.01, pl_weight=0.0, conditional=True,
          lr_g=2.5e-3, lr_d=2.5e-3, beta1=0.0, beta2=0.99,
          paper="Karras et al. 2020b, Training GANs with Limited Data (the cifar setup: class-conditional, 2-layer "
                "mapping, gamma 0.01, no path length or mixing, Adam 2.5e-3 (0, 0.99); train.batch_size 64)"),
]}


def resolve_style(cfg: ModelConfig) -> Any:
    """The preset ``cfg.variant`` with ``cfg.overrides`` applied and checked."""
    require(cfg.variant in PRESETS, "model.variant", f"unknown variant {cfg.variant!r}; allowed values: {', '.join(PRESETS)}")
    where = "model.overrides"
    s = override_fields(PRESETS[cfg.variant], cfg.overrides, where)
    if isinstance(s, Progressive):
        return resolve_progressive(s, where)
    if isinstance(s, Stacked):
        return resolve_stacked(s, where)
    s.check_optimizer(where)
    require(s.mapping_layers >= 1, f"{where}.mapping_layers", f"got {s.mapping_layers}; expected >= 1")
    require(0 <= s.style_mixing <= 1, f"{where}.style_mixing", f"got {s.style_mixing}; expected a probability in 0..1")
    for key in ("r1_gamma", "pl_weight"):
        require(getattr(s, key) >= 0, f"{where}.{key}", f"got {getattr(s, key)}; expected >= 0 (0 turns it off)")
    for key in ("r1_every", "pl_every", "pl_batch_shrink", "mbstd_group"):
        require(getattr(s, key) >= 1, f"{where}.{key}", f"got {getattr(s, key)}; expected >= 1")
    require(0 < s.pl_decay <= 1, f"{where}.pl_decay", f"got {s.pl_decay}; expected in (0, 1]")
    return s


def style_spec(comp: Style, model: ModelConfig, *, channels: int, resolution: int, num_classes: int) -> StyleSpec:
    """The networks of ``comp`` for this data; ``model.width`` sets the channels (4 x width up to 16x16,
    halving with each doubling of the resolution above)."""
    return StyleSpec(channels=channels, resolution=resolution, z_dim=model.z_dim, w_dim=model.z_dim,
                     num_classes=num_classes, mapping_layers=comp.mapping_layers, channel_base=64 * model.width,
                     channel_max=4 * model.width, mbstd_group=comp.mbstd_group,
                     conditioning="projection" if num_classes else "none")


@contextlib.contextmanager
def _exact(device: torch.device, net: nn.Module):
    """float32 and eager for a regulariser that differentiates a gradient: bf16/fp16 would round it away, and
    compiled graphs have no double backward."""
    eager = torch.compiler.set_stance("force_eager") if is_compiled(net) else contextlib.nullcontext()
    with torch.autocast(device.type, enabled=False), eager:
        yield


def image_set(name: str, data: Dataset, network: str) -> ImageSet:
    """The one image set ``name`` trains on, whose side is a power of two >= 4 (``network`` builds it), or a
    ConfigError naming the key."""
    if data.layout != "images":
        raise ConfigError(f"model.variant: {name} ({FAMILY}) trains on one image set; the prepared data has the "
                          f"{data.layout} layout")
    r = int(data.images.images.shape[-1])
    if r < 4 or r & (r - 1):
        raise ConfigError(f"data.resolution: {network} draws square images whose side is a power of two >= 4; the "
                          f"data is {r}x{r}")
    return data.images


def condition_classes(comp: Any, images: ImageSet) -> int:
    """How many classes a recipe of ``comp`` conditions on: the data's when ``comp.conditional`` (at least 2, or
    a ConfigError naming the way out), else 0."""
    classes = len(images.classes) if images.labels is not None else 0
    if comp.conditional and classes < 2:
        raise ConfigError(f"model.variant: {comp.name} is class-conditional and needs labelled data with at least "
                          f"2 classes; data.source has {classes} (or set model.overrides.conditional: false)")
    return classes if comp.conditional else 0


class StyleRecipe:
    """A :class:`gans.family.Recipe` for StyleGAN2 on one image set (stream ``real``)."""

    primary_metric, higher_is_better = "fid", False

    def __init__(self, comp: Style, *, model: ModelConfig, data: Dataset) -> None:
        images = image_set(comp.name, data, "StyleGAN2")
        classes = condition_classes(comp, images)
        self.comp, self.model_cfg, self.variant, self.classes = comp, model, comp.name, images.classes
        self.spec = style_spec(comp, model, channels=int(images.images.shape[1]),
                               resolution=int(images.images.shape[-1]), num_classes=classes)
        self.streams = {"real": {"images": images.images} |
                        ({"labels": images.labels} if comp.conditional else {})}
        phases = [Phase("D", "D", repeats=comp.n_critic)]
        if comp.r1_gamma:
            phases.append(Phase("D_reg", "D", every=comp.r1_every))
        phases.append(Phase("G", "G", new_batch=False, frozen=("D",)))
        if comp.pl_weight:
            phases.append(Phase("G_reg", "G", every=comp.pl_every, new_batch=False, frozen=("D",)))
        self.phases = tuple(phases)
        self.optimizers = {
            "G": self._lazy(OptimizerSpec(("G",), comp.lr_g, "adam", (comp.beta1, comp.beta2), "lr_g"),
                            comp.pl_every if comp.pl_weight else 0),
            "D": self._lazy(OptimizerSpec(("D",), comp.lr_d, "adam", (comp.beta1, comp.beta2), "lr_d"),
                            comp.r1_every if comp.r1_gamma else 0)}
        self.ema = {"G_ema": "G"}
        self.pl_mean = torch.zeros([])

    @staticmethod
    def _lazy(spec: OptimizerSpec, every: int) -> OptimizerSpec:
        """Adam rescaled for a regulariser run every ``every`` steps: rate x c, betas ** c, c = every / (every + 1)."""
        if not every:
            return spec
        c = every / (every + 1)
        return OptimizerSpec(spec.networks, spec.lr, spec.kind, (spec.betas[0] ** c, spec.betas[1] ** c),
                             spec.lr_param, lr_scale=c)

    def describe(self) -> dict[str, Any]:
        return {"variant": {k: v for k, v in asdict(self.comp).items() if k != "paper"}, "spec": asdict(self.spec)}

    def build(self) -> dict[str, nn.Module]:
        return {"G": StyleGenerator(self.spec), "D": StyleDiscriminator(self.spec)}

    def bind(self, networks: dict[str, nn.Module], *, augment: Augment | None, device: torch.device) -> None:
        self.G, self.D, self.device = networks["G"], networks["D"], device
        self.augment = augment or (lambda x: x)
        self.pl_mean = self.pl_mean.to(device)

    def _labels(self, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The reals' labels and labels for the fakes (the same: the fakes follow the batch's class mix)."""
        y = batch["real"].get("labels") if self.comp.conditional else None
        return y, y

    def _ws(self, n: int, y: torch.Tensor | None) -> torch.Tensor:
        """w for ``n`` fresh latents; with probability ``style_mixing`` a row takes a second latent's w from a
        random layer on."""
        z = torch.randn(n, self.spec.z_dim, device=self.device)
        if not self.comp.style_mixing:
            return self.G.ws(z, y)
        num_ws = self.spec.num_ws
        cut = torch.randint(1, num_ws, (n,), device=self.device)
        cut = torch.where(torch.rand(n, device=self.device) < self.comp.style_mixing, cut, num_ws)
        return self.G.ws(z, y, mix_z=torch.randn_like(z), mix_layer=cut)

    def _d(self, images: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.D(self.augment(images), y).float().flatten()

    def loss(self, phase: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real = batch["real"]["images"]
        y, y_fake = self._labels(batch)
        n = len(real)
        if phase == "D":
            with torch.no_grad():
                fake = self.G.synthesis(self._ws(n, y_fake))
            real_logits, fake_logits = self._d(real, y), self._d(fake, y_fake)
            loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
            return loss, {"loss_d": loss.detach(), "d_real": real_logits.detach().mean(),
                          "d_fake": fake_logits.detach().mean(), "d_real_sign": real_logits.detach().sign().mean()}
        if phase == "D_reg":
            with _exact(self.device, self.D):
                x = real.detach().float().requires_grad_(True)
                (grad,) = torch.autograd.grad(self._d(x, y).sum(), x, create_graph=True)
                penalty = grad.square().sum(dim=(1, 2, 3))
                loss = penalty.mean() * (self.comp.r1_gamma / 2) * self.comp.r1_every
            return loss, {"r1_penalty": penalty.detach().mean()}
        if phase == "G":
            ws = self._ws(n, y_fake)
            self.G.mapping.track(ws[:, 0], y_fake)
            loss = F.softplus(-self._d(self.G.synthesis(ws), y_fake)).mean()
            return loss, {"loss_g": loss.detach()}
        if phase == "G_reg":
            m = max(1, n // self.comp.pl_batch_shrink)
            with _exact(self.device, self.G):
                ws = self._ws(m, None if y_fake is None else y_fake[:m])
                img = self.G.synthesis(ws)
                noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
                (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
                lengths = grad.square().sum(2).mean(1).sqrt()
                with torch.no_grad():
                    self.pl_mean.lerp_(lengths.mean(), self.comp.pl_decay)
                loss = (lengths - self.pl_mean).square().mean() * self.comp.pl_weight * self.comp.pl_every
            return loss, {"pl_length": lengths.detach().mean(), "pl_mean": self.pl_mean.clone()}
        raise ValueError(f"unknown phase {phase!r}")

    def after_update(self, phase: str) -> None:
        pass

    def compile(self) -> None:
        """The mapping and synthesis networks and D (the regularisers run them eagerly)."""
        self.G.mapping.compile()
        self.G.synthesis.compile()
        self.D.compile()

    def state_dict(self) -> dict[str, Any]:
        return {"pl_mean": self.pl_mean.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "pl_mean" in state:
            self.pl_mean = state["pl_mean"].to(self.pl_mean.device).clone()

    def export(self, ema: dict[str, nn.Module], step: int) -> dict[str, Any]:
        """``models/generator.pt``: the EMA generator (its w_avg included) and all that rebuilds it."""
        return {"family": FAMILY, "artifact": "generate", "architecture": "stylegan2", "state_dict": weights(ema["G_ema"]),
                "spec": asdict(self.spec), "variant": asdict(self.comp), "model": to_dict(self.model_cfg),
                "classes": list(self.classes), "step": step}

    def sample_grid(self, ema: dict[str, nn.Module], device: torch.device) -> torch.Tensor:
        from gans.sampling import generate

        seeds, labels = grid_seeds_labels(self.spec.num_classes)
        return image_grid(generate(ema["G_ema"], seeds, labels, z_dim=self.spec.z_dim, device=device))


# ---------------------------------------------------------------- ProGAN


@dataclass(frozen=True, kw_only=True)
class Progressive(Composition):
    """A resolved ProGAN composition: the growing schedule in steps (one step = one generator update of
    ``train.batch_size`` images) and the WGAN-GP loss with the drift term."""

    fade_steps: int = 300  # alpha from 0 to 1 while a new resolution fades in
    stable_steps: int = 300  # at alpha 1 before the next resolution (4x4 too)
    gp_weight: float = 10.0
    drift: float = 0.001  # epsilon_drift x E[D(real)^2], keeps the critic's output near 0
    mbstd_group: int = 4

    def components(self) -> dict[str, str]:
        return {"generator": "progan (progressive growing, pixel norm, equalised lr)",
                "discriminator": "progan (minibatch std, equalised lr)",
                "loss": f"wasserstein (gp {self.gp_weight:g}, drift {self.drift:g})",
                "schedule": f"fade-in {self.fade_steps} steps, stable {self.stable_steps} steps per resolution",
                "conditioning": "none", "optimizer": self.optimizer_label(), "n_critic": str(self.n_critic)}


PRESETS["progan"] = Progressive(
    name="progan", lr_g=1e-3, lr_d=1e-3, beta1=0.0, beta2=0.99,
    paper="Karras et al. 2018, Progressive Growing of GANs (4x4 up to the data's side, each resolution faded in then "
          "stabilised; WGAN-GP lambda 10 with drift 0.001, minibatch std, pixel norm, equalised lr, Adam 1e-3 (0, 0.99); "
          "the paper grows per 800k images, here per fade_steps + stable_steps steps)")


PRESETS["stackgan"] = STACKGAN


def resolve_progressive(s: Progressive, where: str) -> Progressive:
    s.check_optimizer(where)
    for key in ("fade_steps", "stable_steps"):
        require(getattr(s, key) >= 0, f"{where}.{key}", f"got {getattr(s, key)}; expected >= 0")
    require(s.stable_steps >= 1, f"{where}.stable_steps", f"got {s.stable_steps}; expected >= 1")
    for key in ("gp_weight", "drift"):
        require(getattr(s, key) >= 0, f"{where}.{key}", f"got {getattr(s, key)}; expected >= 0")
    require(s.mbstd_group >= 1, f"{where}.mbstd_group", f"got {s.mbstd_group}; expected >= 1")
    return s


class ProgressiveRecipe:
    """A :class:`gans.family.Recipe` for ProGAN on one image set (stream ``real``). It counts its steps (one per
    generator update) and keeps the count in checkpoints: the stage and alpha follow from it, so a run killed
    during a fade-in resumes in that fade-in, at that alpha."""

    primary_metric, higher_is_better = "fid", False

    def __init__(self, comp: Progressive, *, model: ModelConfig, data: Dataset) -> None:
        from gans.families.style.progressive import ProgressiveSpec, Schedule

        images = image_set(comp.name, data, "ProGAN")
        r = int(images.images.shape[-1])
        self.comp, self.model_cfg, self.variant, self.classes = comp, model, comp.name, images.classes
        self.spec = ProgressiveSpec(channels=int(images.images.shape[1]), resolution=r, z_dim=model.z_dim,
                                    channel_base=64 * model.width, channel_max=4 * model.width,
                                    mbstd_group=comp.mbstd_group)
        self.schedule = Schedule(self.spec.stages, comp.fade_steps, comp.stable_steps)
        self.streams = {"real": {"images": images.images}}
        self.phases = (Phase("D", "D", repeats=comp.n_critic), Phase("G", "G", new_batch=False, frozen=("D",)))
        self.optimizers = comp.optimizers(("G",), ("D",))
        self.ema = {"G_ema": "G"}
        self.step = 0

    def describe(self) -> dict[str, Any]:
        return {"variant": {k: v for k, v in asdict(self.comp).items() if k != "paper"}, "spec": asdict(self.spec),
                "stage_changes": self.schedule.changes()}

    def build(self) -> dict[str, nn.Module]:
        from gans.families.style.progressive import ProgressiveDiscriminator, ProgressiveGenerator

        return {"G": ProgressiveGenerator(self.spec), "D": ProgressiveDiscriminator(self.spec)}

    def bind(self, networks: dict[str, nn.Module], *, augment: Augment | None, device: torch.device) -> None:
        self.G, self.D, self.device = networks["G"], networks["D"], device
        self.augment = augment or (lambda x: x)
        self._set_stage()

    def _set_stage(self) -> tuple[int, float]:
        stage, alpha = self.schedule.at(self.step)
        self.G.set_stage(stage, alpha)
        self.D.set_stage(stage, alpha)
        return stage, alpha

    def loss(self, phase: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from gans.families.style.progressive import real_at_stage
        from gans.losses import gradient_norm

        stage, alpha = self._set_stage()
        n = len(batch["real"]["images"])
        z = torch.randn(n, self.spec.z_dim, device=self.device)
        if phase == "G":
            self.step += 1  # one generator update per step: the schedule's clock
            loss = -self.D(self.augment(self.G.stage_images(z))).float().mean()
            return loss, {"loss_g": loss.detach()}
        real = real_at_stage(batch["real"]["images"], self.spec.resolution, stage, alpha)
        with torch.no_grad():
            fake = self.G.stage_images(z)
        d_real, d_fake = self.D(self.augment(real)).float(), self.D(self.augment(fake)).float()
        loss = d_fake.mean() - d_real.mean() + self.comp.drift * d_real.square().mean()
        stats = {"d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean(),
                 "d_real_sign": d_real.detach().sign().mean(),
                 "resolution": torch.tensor(float(4 * 2 ** stage)), "alpha": torch.tensor(alpha)}
        if self.comp.gp_weight:
            eps = torch.rand(n, 1, 1, 1, device=self.device)
            mixed = eps * real.detach().float() + (1 - eps) * fake.detach().float()
            gp = (gradient_norm(self.D, mixed, None) - 1).square().mean()
            loss = loss + self.comp.gp_weight * gp
            stats["gp"] = gp.detach()
        return loss, {"loss_d": loss.detach(), **stats}

    def after_update(self, phase: str) -> None:
        pass

    def compile(self) -> None:
        raise ConfigError(f"train.compile: {self.variant} changes its networks' depth during the run (progressive "
                          "growing), which torch.compile would recompile at every stage; set train.compile: false")

    def state_dict(self) -> dict[str, Any]:
        stage, alpha = self.schedule.at(self.step)
        return {"step": self.step, "stage": stage, "alpha": alpha, "stage_changes": self.schedule.changes()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        if hasattr(self, "G"):
            self._set_stage()

    def export(self, ema: dict[str, nn.Module], step: int) -> dict[str, Any]:
        """``models/generator.pt``: the EMA generator at its current stage and alpha, and all that rebuilds it."""
        return {"family": FAMILY, "artifact": "generate", "architecture": "progan", "state_dict": weights(ema["G_ema"]),
                "spec": asdict(self.spec), "variant": asdict(self.comp), "model": to_dict(self.model_cfg),
                "classes": list(self.classes), "step": step}

    def sample_grid(self, ema: dict[str, nn.Module], device: torch.device) -> torch.Tensor:
        from gans.sampling import generate

        seeds, _ = grid_seeds_labels(0)
        return image_grid(generate(ema["G_ema"], seeds, None, z_dim=self.spec.z_dim, device=device))
