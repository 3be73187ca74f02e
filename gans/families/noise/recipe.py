"""The noise-to-image training recipe: one generator G(z[, label]) and one discriminator D, an n_critic loop
of D updates then one G update, an EMA copy of G, and the generator file as the artifact."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from gans.config import ConfigError, ModelConfig, to_dict
from gans.data import Dataset, to_float
from gans.family import Augment, Batch, Phase
from gans.families.noise.nets import NetSpec, build_networks, check_buildable
from gans.families.noise.objective import GANObjective, Extras
from gans.families.noise.variants import Variant, check_variant_fits
from gans.losses import LOSSES, REGULARIZERS
from gans.sampling import generate, grid_seeds_labels, image_grid

FAMILY = "noise-to-image"
PROBE_IMAGES = 64  # images per set of the overfitting probe (one batch each: training, validation, generated)


def build_spec(variant: Variant, model: ModelConfig, *, channels: int, resolution: int, data_classes: int) -> NetSpec:
    """The network spec of ``variant`` for images of this shape and label count."""
    cond = variant.conditioning
    num_classes = data_classes if variant.conditional else variant.info_categories if cond == "infogan" else 0
    return NetSpec(channels=channels, resolution=resolution, z_dim=model.z_dim, width=model.width,
                   num_classes=num_classes, conditioning=cond,
                   info_continuous=variant.info_continuous if cond == "infogan" else 0,
                   d_norm=variant.d_norm, d_dropout=variant.d_dropout, minibatch_features=variant.minibatch_features,
                   spectral_norm_d="spectral-norm" in variant.regularizers,
                   spectral_norm_g="spectral-norm" in variant.regularizers and variant.architecture in ("sagan", "biggan"),
                   attention_res=variant.attention_res or resolution // 2)


def build_objective(variant: Variant, G: nn.Module, D: nn.Module, augment: Augment | None = None) -> GANObjective:
    """The loss, regularizers and auxiliary objectives of ``variant`` bound to G and D."""
    regs = tuple(REGULARIZERS[r](**variant.reg_args.get(r, {})) for r in variant.regularizers if r in REGULARIZERS)
    extras = Extras(acgan=variant.conditioning == "acgan", infogan=variant.conditioning == "infogan",
                    info_categories=variant.info_categories, info_continuous=variant.info_continuous,
                    info_weight=variant.info_weight, info_continuous_weight=variant.info_continuous_weight,
                    feature_matching=variant.feature_matching, ortho_weight=variant.ortho_weight)
    return GANObjective(generator=G, discriminator=D, loss=LOSSES[variant.loss](**variant.loss_args),
                        regularizers=regs, extras=extras, **({"augment": augment} if augment else {}))


class NoiseRecipe:
    """A :class:`gans.family.Recipe` for one noise-to-image variant on one image set (stream ``real``)."""

    primary_metric, higher_is_better = "fid", False

    def __init__(self, variant: Variant, *, model: ModelConfig, data: Dataset,
                 validation: Dataset | None = None) -> None:
        if data.layout != "images":
            raise ConfigError(f"model.variant: {variant.name} ({FAMILY}) trains on one image set; the prepared "
                              f"data has the {data.layout} layout")
        images = data.images
        data_classes = len(images.classes) if images.labels is not None else 0
        check_variant_fits(variant, num_classes=data_classes)
        self.variant_cfg, self.model_cfg, self.classes = variant, model, images.classes
        self.spec = build_spec(variant, model, channels=int(images.images.shape[1]),
                               resolution=int(images.images.shape[-1]), data_classes=data_classes)
        check_buildable(variant.architecture, self.spec)
        self.variant = variant.name
        self.streams = {"real": {"images": images.images} | ({} if images.labels is None else {"labels": images.labels})}
        self.phases = (Phase("D", "D", repeats=variant.n_critic),
                       Phase("G", "G", new_batch=False, frozen=("D",)))
        self.optimizers = variant.optimizers(("G",), ("D",))
        self.ema = {"G_ema": "G"}
        self.probe_sets = self._probe_sets(data, validation)

    def _probe_sets(self, data: Dataset, validation: Dataset | None) -> dict[str, dict[str, torch.Tensor]]:
        """Fixed training and validation images (and labels) for :meth:`probe`, drawn once with seed 0; none
        without a validation split of the same shape."""
        if validation is None or validation.layout != "images" or len(validation.images.images) == 0 or \
                validation.images.images.shape[1:] != data.images.images.shape[1:]:
            return {}
        gen = torch.Generator().manual_seed(0)
        out = {}
        for name, part in (("train", data.images), ("val", validation.images)):
            idx = torch.randperm(len(part.images), generator=gen)[:PROBE_IMAGES]
            out[name] = {"images": part.images[idx]}
            if part.labels is not None and self.variant_cfg.conditional:
                out[name]["labels"] = part.labels[idx]
        gen_z = torch.Generator().manual_seed(1)
        spec, n = self.spec, len(out["train"]["images"])
        z = torch.randn(n, spec.z_dim, generator=gen_z)
        if spec.info_continuous:
            z = torch.cat([z, torch.rand(n, spec.info_continuous, generator=gen_z) * 2 - 1], dim=1)
        out["gen"] = {"z": z} | ({"labels": torch.randint(0, spec.num_classes, (n,), generator=gen_z)}
                                 if spec.num_classes else {})
        return out

    def probe(self) -> dict[str, torch.Tensor]:
        """Karras et al. 2020's overfitting heuristics on fixed, un-augmented batches (the trainer calls this
        without gradients, keeping the networks' buffers and the random streams as they were): D's mean
        output on training images (``d_train``), on the validation split (``d_val``, images D never trains
        on) and on generated images (``d_gen``); ``r_v`` = (d_train - d_val) / (d_train - d_gen), 0 while D
        tells training and validation images apart no better than chance, 1 when it treats the validation
        images as fakes; and E[sign D] on the training and validation images (``sign_train``, ``sign_val``),
        to read beside r_t (E[sign D] on the augmented training batches, ADA's heuristic). Empty without a
        validation split."""
        if not self.probe_sets:
            return {}
        dev = self.device

        def mean_logit(x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
            return self.D.logits(self.D.features(x, y), y).float().flatten()

        def real(name: str) -> torch.Tensor:
            part = self.probe_sets[name]
            y = part["labels"].to(dev) if "labels" in part else None
            return mean_logit(to_float(part["images"]).to(dev), y)

        gen = self.probe_sets["gen"]
        y_gen = gen["labels"].to(dev) if "labels" in gen else None
        d_train, d_val = real("train"), real("val")
        d_gen = mean_logit(self.G(gen["z"].to(dev), y_gen), y_gen)
        mt, mv, mg = d_train.mean(), d_val.mean(), d_gen.mean()
        gap = mt - mg
        r_v = torch.where(gap.abs() > 1e-6, (mt - mv) / torch.where(gap.abs() > 1e-6, gap, torch.ones_like(gap)),
                          torch.zeros_like(gap))
        return {"d_train": mt, "d_val": mv, "d_gen": mg, "r_v": r_v,
                "sign_train": d_train.sign().mean(), "sign_val": d_val.sign().mean()}

    def describe(self) -> dict[str, Any]:
        composition = {k: v for k, v in asdict(self.variant_cfg).items() if k != "paper"}
        return {"variant": composition, "spec": asdict(self.spec)}

    def build(self) -> dict[str, nn.Module]:
        G, D = build_networks(self.variant_cfg.architecture, self.spec)
        return {"G": G, "D": D}

    def bind(self, networks: dict[str, nn.Module], *, augment: Augment | None, device: torch.device) -> None:
        self.G, self.D, self.device = networks["G"], networks["D"], device
        self.objective = build_objective(self.variant_cfg, self.G, self.D, augment)

    def _latents(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z (N, z_dim [+ InfoGAN continuous codes in U(-1, 1)]) and labels (or the categorical code)."""
        spec = self.spec
        z = torch.randn(n, spec.z_dim, device=self.device)
        if spec.info_continuous:
            z = torch.cat([z, torch.rand(n, spec.info_continuous, device=self.device) * 2 - 1], dim=1)
        y = torch.randint(0, spec.num_classes, (n,), device=self.device) if spec.num_classes else None
        return z, y

    def loss(self, phase: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D: fresh latents against the batch's reals; G: fresh latents (the reals serve relativistic losses
        and feature matching)."""
        real = batch["real"]["images"]
        real_y = batch["real"].get("labels") if self.variant_cfg.conditional else None
        z, fake_y = self._latents(len(real))
        if phase == "D":
            return self.objective.d_phase(real, real_y, z, fake_y)
        return self.objective.g_phase(z, fake_y, real, real_y)

    def after_update(self, phase: str) -> None:
        if phase == "D":
            self.objective.after_d_step()

    def compile(self) -> None:
        """G whole; D at its body, since the objective calls ``features``/``logits``, not ``forward``."""
        self.G.compile()
        self.D.body.compile()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def export(self, ema: dict[str, nn.Module], step: int) -> dict[str, Any]:
        """What ``models/generator.pt`` holds: EMA weights plus everything needed to rebuild G."""
        return {
            "family": FAMILY, "artifact": "generate",
            "state_dict": {k: v.contiguous() for k, v in ema["G_ema"].state_dict().items()},
            "spec": asdict(self.spec),
            "variant": {**asdict(self.variant_cfg), "regularizers": list(self.variant_cfg.regularizers)},
            "model": to_dict(self.model_cfg),
            "classes": list(self.classes),
            "step": step,
        }

    def sample_grid(self, ema: dict[str, nn.Module], device: torch.device) -> torch.Tensor:
        """uint8 (C, H, W) grid of EMA samples with fixed seeds (one row per class when conditional)."""
        seeds, labels = grid_seeds_labels(self.spec.num_classes)
        return image_grid(generate(ema["G_ema"], seeds, labels, z_dim=self.spec.z_dim, device=device))
