"""The translation training recipe: generators G_ab (and G_ba), discriminators D_b (and D_a), a D phase
(n_critic updates of both discriminators) then a G phase (both generators), the image pools, and the
translator file as the artifact.

With one critic update per step the D phase translates the batch once, keeps the graph, and judges the
detached (pooled) translations; the G phase then back-propagates through those same translations, as
pix2pix's reference step does: one generator forward per step, not two."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from gans.config import ConfigError, ModelConfig, to_dict
from gans.data import Dataset
from gans.family import Augment, Batch, Phase
from gans.families.translation.nets import (TranslationSpec, build_discriminator, build_generator, check_geometry,
                                            patch_layers)
from gans.families.translation.presets import Translation
from gans.losses import LOSSES, REGULARIZERS, RegContext

FAMILY = "translation"
SOURCE = {"a2b": "a", "b2a": "b"}
TARGET = {"a2b": "b", "b2a": "a"}
REVERSE = {"a2b": "b2a", "b2a": "a2b"}


class ImagePool:
    """A history of generated images for one discriminator (Shrivastava et al. 2017; CycleGAN): until the
    pool is full every image goes in and out; then each image is, with probability 1/2, swapped for a
    random stored one. Its draws come from torch's RNG, which checkpoints carry."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: torch.Tensor | None = None  # (n <= size, C, R, R)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, R, R), detached -> N images to show the discriminator."""
        if self.size == 0:
            return images
        out = []
        for img in images:
            img = img[None]
            n = 0 if self.images is None else len(self.images)
            if n < self.size:
                self.images = img.clone() if self.images is None else torch.cat([self.images, img])
                out.append(img)
            elif float(torch.rand(())) < 0.5:
                i = int(torch.randint(0, self.size, ()))
                out.append(self.images[i:i + 1].clone())
                self.images[i] = img[0]
            else:
                out.append(img)
        return torch.cat(out)

    def state_dict(self) -> dict[str, Any]:
        return {"images": None if self.images is None else self.images.cpu()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.images = None if state["images"] is None else state["images"].to(device)


def resnet_blocks(resolution: int) -> int:
    """CycleGAN's residual blocks by image size: 9 from 256 pixels, 6 from 128, and 3 below (the 8x8 or 16x16
    bottleneck of a small image is covered by fewer 3x3 blocks)."""
    return 9 if resolution >= 256 else 6 if resolution >= 128 else 3


def _distance(kind: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).abs().mean() if kind == "l1" else ((x - y) ** 2).mean()


class TranslationRecipe:
    """A :class:`gans.family.Recipe` for one translation composition on paired or unpaired data."""

    primary_metric, higher_is_better = "fid", False

    def __init__(self, comp: Translation, *, model: ModelConfig, data: Dataset, preview: Dataset | None) -> None:
        self.comp, self.model_cfg, self.variant = comp, model, comp.name
        self._check_data(comp, data)
        a, b = data.parts["a"], data.parts["b"]
        r = int(a.images.shape[-1])
        self.spec = TranslationSpec(
            resolution=r, channels_a=int(a.images.shape[1]), channels_b=int(b.images.shape[1]), width=model.width,
            generator=comp.generator, g_norm=comp.g_norm, g_blocks=comp.g_blocks or resnet_blocks(r),
            g_dropout=comp.g_dropout, discriminator=comp.discriminator, d_layers=comp.d_layers or patch_layers(r),
            d_norm=comp.d_norm, conditional_d=comp.conditional_d, two_way=comp.two_way)
        check_geometry(self.spec)
        if comp.identity_weight and comp.cycle_weight and self.spec.channels_a != self.spec.channels_b:
            raise ConfigError(f"model.overrides.identity_weight: the identity term feeds domain b to G_ab, which needs "
                              f"as many channels in both domains (a has {self.spec.channels_a}, b "
                              f"{self.spec.channels_b}); set identity_weight: 0")
        self.paired = data.layout == "paired"
        self.streams = ({"pairs": {"a": a.images, "b": b.images}} if self.paired
                        else {"a": {"images": a.images}, "b": {"images": b.images}})
        self.preview = preview
        self.directions = ("a2b", "b2a") if comp.two_way else ("a2b",)
        self.adversarial = comp.adv_weight > 0
        self._plan()

    @staticmethod
    def _check_data(comp: Translation, data: Dataset) -> None:
        if data.layout not in ("paired", "unpaired"):
            raise ConfigError(f"model.variant: {comp.name} ({FAMILY}) translates between two domains; the prepared "
                              f"data has the {data.layout} layout")
        if comp.needs_pairs and data.layout != "paired":
            raise ConfigError(f"model.variant: {comp.name} needs paired data (its L1 term or conditional "
                              "discriminator compares each output with its target); the prepared data is unpaired")
        if data.parts["a"].images.shape[-1] != data.parts["b"].images.shape[-1]:
            raise ConfigError("data.resolution: the two domains were prepared at different sizes")

    def _plan(self) -> None:
        """Networks G_ab, D_b (and G_ba, D_a), optimisers over all generators and all discriminators, phases."""
        comp = self.comp
        self.g_names = [f"G_{d[0]}{d[2]}" for d in self.directions]  # G_ab, G_ba
        self.d_names = [f"D_{TARGET[d]}" for d in self.directions] if self.adversarial else []  # D_b, D_a
        self.optimizers = comp.optimizers(tuple(self.g_names), tuple(self.d_names), comp.decay_start)
        g_phase = Phase("G", "G", new_batch=not self.adversarial, frozen=tuple(self.d_names))
        self.phases: tuple[Phase, ...] = (Phase("D", "D", repeats=comp.n_critic), g_phase) if self.adversarial \
            else (g_phase,)
        self.ema = {f"{g}_ema": g for g in self.g_names}
        self.keep_graph = comp.n_critic == 1

    def describe(self) -> dict[str, Any]:
        return {"variant": {k: v for k, v in asdict(self.comp).items() if k != "paper"}, "spec": asdict(self.spec)}

    def build(self) -> dict[str, nn.Module]:
        nets = {f"G_{d[0]}{d[2]}": build_generator(self.spec, d) for d in self.directions}
        if self.adversarial:
            nets.update({f"D_{TARGET[d]}": build_discriminator(self.spec, d) for d in self.directions})
        return nets

    def bind(self, networks: dict[str, nn.Module], *, augment: Augment | None, device: torch.device) -> None:
        comp = self.comp
        self.nets, self.device = networks, device
        self.augment = augment or (lambda x: x)
        self.loss_fn = LOSSES[comp.loss](**comp.loss_args)
        self.regs = tuple(REGULARIZERS[r](**comp.reg_args.get(r, {})) for r in comp.regularizers)
        self.pools = {d: ImagePool(comp.pool_size) for d in self.directions}
        self.fakes: dict[str, torch.Tensor] = {}  # this step's translations, with their graph, for the G phase

    # ------------------------------------------------------------------ losses

    def _domains(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.paired:
            return {"a": batch["pairs"]["a"], "b": batch["pairs"]["b"]}
        return {"a": batch["a"]["images"], "b": batch["b"]["images"]}

    def _generator(self, direction: str) -> nn.Module:
        return self.nets[f"G_{direction[0]}{direction[2]}"]

    def _judge(self, direction: str, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """D's (augmented) input for ``image`` in ``direction``'s output domain, paired with its source when
        the discriminator is conditional (one augmentation for both halves)."""
        x = torch.cat([source, image], dim=1) if self.comp.conditional_d else image
        return self.augment(x)

    def loss(self, phase: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        real = self._domains(batch)
        return self._d_loss(real) if phase == "D" else self._g_loss(real)

    def _d_loss(self, real: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Each discriminator: real target-domain images against (pooled) translations."""
        total, stats, signs, d_real, d_fake = 0.0, {}, [], [], []
        self.fakes = {}
        for d in self.directions:
            src, tgt = real[SOURCE[d]], real[TARGET[d]]
            with torch.set_grad_enabled(self.keep_graph):
                fake = self._generator(d)(src)
            if self.keep_graph:
                self.fakes[d] = fake
            D = self.nets[f"D_{TARGET[d]}"]
            real_in, fake_in = self._judge(d, src, tgt), self._judge(d, src, self.pools[d].query(fake.detach()))
            real_logits, fake_logits = D(real_in).float().flatten(), D(fake_in).float().flatten()
            loss = self.loss_fn.d_loss(real_logits, fake_logits)
            ctx = RegContext(D, real_in, fake_in, None, None)
            for reg in self.regs:
                for name, value in reg(ctx).items():
                    if name == "grad_norm":
                        stats[f"grad_norm_{d}"] = value
                    else:
                        loss = loss + value
            total = total + loss
            signs.append(real_logits.detach().sign().mean())
            d_real.append(real_logits.detach().mean())
            d_fake.append(fake_logits.detach().mean())
        stats.update({"loss_d": total.detach(), "d_real_sign": torch.stack(signs).mean(),
                      "d_real": torch.stack(d_real).mean(), "d_fake": torch.stack(d_fake).mean()})
        return total, stats

    def _g_loss(self, real: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Adversarial terms, L1 to the target (paired), cycle and identity reconstruction."""
        comp = self.comp
        fakes = self.fakes or {d: self._generator(d)(real[SOURCE[d]]) for d in self.directions}
        self.fakes = {}
        terms: dict[str, torch.Tensor] = {}
        for d in self.directions:
            src, tgt, fake = real[SOURCE[d]], real[TARGET[d]], fakes[d]
            if self.adversarial:
                terms[f"adv_{d}"] = comp.adv_weight * self._adversarial(d, src, tgt, fake)
            if comp.paired_weight and self.paired:
                terms[f"l1_{d}"] = comp.paired_weight * (fake.float() - tgt.float()).abs().mean()
            if comp.cycle_weight:
                back = self._generator(REVERSE[d])(fake)
                terms[f"cycle_{d}"] = comp.cycle_weight * _distance(comp.reconstruction, back.float(), src.float())
                if comp.identity_weight:
                    same = self._generator(d)(tgt)
                    terms[f"identity_{d}"] = (comp.identity_weight * comp.cycle_weight
                                              * _distance(comp.reconstruction, same.float(), tgt.float()))
        loss = sum(terms.values())
        return loss, {**{k: v.detach() for k, v in terms.items()}, "loss_g": loss.detach()}

    def _adversarial(self, d: str, src: torch.Tensor, tgt: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        D = self.nets[f"D_{TARGET[d]}"]
        fake_logits = D(self._judge(d, src, fake)).float().flatten()
        real_logits = None
        if self.loss_fn.needs_real_in_g:
            with torch.no_grad():
                real_logits = D(self._judge(d, src, tgt)).float().flatten()
        return self.loss_fn.g_loss(fake_logits, real_logits)

    def after_update(self, phase: str) -> None:
        if phase == "D":
            for reg in self.regs:
                hook = getattr(reg, "after_step", None)
                if hook is not None:
                    for name in self.d_names:
                        hook(self.nets[name])

    def compile(self) -> None:
        for net in self.nets.values():
            net.compile()

    # ------------------------------------------------------------------ state and artifact

    def state_dict(self) -> dict[str, Any]:
        return {"pools": {d: p.state_dict() for d, p in self.pools.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for d, pool in self.pools.items():
            pool.load_state_dict(state["pools"][d], self.device)

    def export(self, ema: dict[str, nn.Module], step: int) -> dict[str, Any]:
        """What ``models/generator.pt`` holds for a translator: the EMA generators by direction and all that
        rebuilds them."""
        return {
            "family": FAMILY, "artifact": "translate",
            "state_dicts": {d: {k: v.contiguous() for k, v in ema[f"G_{d[0]}{d[2]}_ema"].state_dict().items()}
                            for d in self.directions},
            "directions": list(self.directions), "spec": asdict(self.spec),
            "variant": {**asdict(self.comp), "regularizers": list(self.comp.regularizers)},
            "model": to_dict(self.model_cfg), "step": step,
        }

    def sample_grid(self, ema: dict[str, nn.Module], device: torch.device) -> torch.Tensor:
        """input | output (| target) over the first held-out images (training images without a preview)."""
        from gans.families.translation.evaluate import translation_grid

        generators = {d: ema[f"G_{d[0]}{d[2]}_ema"] for d in self.directions}
        return translation_grid(generators, self.preview or self._training_preview(), device=device)

    def _training_preview(self) -> Dataset:
        """The first training images, when the recipe was built without held-out ones."""
        from gans.data import ImageSet

        if self.paired:
            a, b = self.streams["pairs"]["a"], self.streams["pairs"]["b"]
        else:
            a, b = self.streams["a"]["images"], self.streams["b"]["images"]
        layout = "paired" if self.paired else "unpaired"
        return Dataset(layout, {"a": ImageSet(a[:8], None, ()), "b": ImageSet(b[:8], None, ())})
