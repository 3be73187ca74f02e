"""Semi-supervised presets and their training recipe: GANs that turn unlabelled images into classifier
accuracy when only a few labels are known (``data.labels_per_class``).

Two streams: ``labelled`` (the images whose label is known, with their labels, repeated to the size of the
unlabelled stream so both go round at the same pace) and ``unlabelled`` (every training image, without
labels). Beside the GAN, a *baseline* (the same classifier, trained on the labelled images alone with the same
optimiser and batches) trains in its own phase, so every report shows what the unlabelled images bought.

- ``improvedgan`` (Salimans et al. 2016): the discriminator is the classifier, with K logits and the fake
  class as a fixed zero logit; D(x) = Z(x) / (Z(x) + 1) with Z = sum exp(logits). Labelled loss:
  cross-entropy; unlabelled loss: the real/fake split of the same logits; the generator matches the mean
  features of real images (feature matching).
- ``catgan`` (Springenberg 2016): a K-way classifier trained to be certain of real images, uncertain of
  generated ones and to spread real images evenly over the classes (entropy terms), plus cross-entropy on the
  labelled images; the generator wants certain and evenly spread samples.
- ``triplegan`` (Li et al. 2017): a classifier C, a class-conditional generator G and a discriminator D that
  judges (image, label) pairs: real pairs from the labelled data, pairs (G(z, y), y) and pairs (x, y ~ C(x))
  of unlabelled images. C learns from D by the score-function gradient of its sampled labels, from the
  labelled cross-entropy, and (after ``pseudo_start`` of its updates) from G's pairs (the pseudo-label term).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gans.config import ConfigError, ModelConfig, override_fields, require, to_dict
from gans.data import Dataset
from gans.family import Augment, Batch, Composition, OptimizerSpec, Phase, StatelessRecipe, weights
from gans.families.noise.nets import NetSpec, build_networks, check_buildable
from gans.families.semisup.nets import Classifier, ClassifierSpec, entropy, marginal_entropy
from gans.sampling import generate, grid_seeds_labels, image_grid

FAMILY = "semi-supervised"


@dataclass(frozen=True, kw_only=True)
class SemiComposition(Composition):
    """A resolved semi-supervised composition. ``lr_d`` trains the classifier (and Triple-GAN's D) and the
    baseline; ``lr_g`` the generator."""

    method: Literal["improvedgan", "catgan", "triplegan"]
    architecture: Literal["conv", "mlp"] = "conv"  # of the classifier, generator and pair discriminator
    labelled_weight: float = 1.0  # weight of the labelled cross-entropy
    input_noise: float = 0.3  # the classifier's input noise (std) while training
    dropout: float = 0.5
    alpha: float = 0.5  # Triple-GAN: share of D's fake pairs that come from C (the rest from G)
    pseudo_weight: float = 0.1  # Triple-GAN: weight of C's cross-entropy on G's pairs
    pseudo_start: int = 500  # Triple-GAN: classifier updates before the pseudo-label term starts
    data_init: bool = False  # data-dependent initialisation of the weight-normalised classifiers (first batch)

    def components(self) -> dict[str, str]:
        loss = {"improvedgan": "K+1 classes (fake = fixed zero logit), feature matching for G",
                "catgan": "entropy terms: certain on real, uncertain on fake, balanced classes",
                "triplegan": f"D judges (image, label) pairs from data, G and C (alpha {self.alpha:g}); "
                             f"pseudo-labels {self.pseudo_weight:g} after {self.pseudo_start} C updates"}[self.method]
        classifier = (f"wn-mlp 1000-500-250-250-250 + noise {self.input_noise:g} / 0.5" if self.architecture == "mlp"
                      else f"wn-conv + noise {self.input_noise:g} + dropout {self.dropout:g}")
        return {"classifier": classifier,
                "generator": ("mlp" if self.architecture == "mlp" else "dcgan")
                + (" (class-conditional)" if self.method == "triplegan" else ""),
                "loss": loss, "labelled": f"cross-entropy x {self.labelled_weight:g}",
                "initialisation": "data-dependent (first batch)" if self.data_init else "default",
                "optimizer": self.optimizer_label()}


_ADAM = dict(lr_g=1e-3, lr_d=1e-3, beta1=0.5, beta2=0.999)  # 3e-4 left the labelled loss near log K for 300 steps
PRESETS: dict[str, SemiComposition] = {p.name: p for p in [
    # the paper's MNIST model: weight-normalised MLP with data-dependent initialisation, Adam 3e-3; on the
    # default budget it beat the conv classifier at Adam 1e-3 (bench/RESULTS.md, "ImprovedGAN: the paper's MNIST model")
    SemiComposition(name="improvedgan", method="improvedgan", architecture="mlp", data_init=True,
                    **{**_ADAM, "lr_g": 3e-3, "lr_d": 3e-3},
                    paper="Salimans et al. 2016, Improved Techniques for Training GANs (semi-supervised: K+1-way "
                          "discriminator, feature matching, Gaussian noise and weight normalisation in D)"),
    SemiComposition(name="catgan", method="catgan", **_ADAM,
                    paper="Springenberg 2016, Unsupervised and Semi-supervised Learning with Categorical GANs "
                          "(entropy terms on a K-way discriminator, cross-entropy on the labelled images)"),
    SemiComposition(name="triplegan", method="triplegan", **_ADAM,
                    paper="Li et al. 2017, Triple Generative Adversarial Nets (classifier, conditional generator "
                          "and a discriminator of (image, label) pairs; pseudo-labels from G)"),
]}


def resolve_semisup(cfg: ModelConfig) -> SemiComposition:
    """The preset ``cfg.variant`` with ``cfg.overrides`` applied and checked."""
    require(cfg.variant in PRESETS, "model.variant", f"unknown variant {cfg.variant!r}; allowed values: {', '.join(PRESETS)}")
    where = "model.overrides"
    p = override_fields(PRESETS[cfg.variant], cfg.overrides, where)
    for key in ("labelled_weight", "input_noise", "pseudo_weight"):
        require(getattr(p, key) >= 0, f"{where}.{key}", f"got {getattr(p, key)}; expected >= 0")
    require(0 <= p.dropout < 1, f"{where}.dropout", f"got {p.dropout}; expected a number in [0, 1)")
    require(0 <= p.alpha <= 1, f"{where}.alpha", f"got {p.alpha}; expected a number in [0, 1]")
    require(p.pseudo_start >= 0, f"{where}.pseudo_start", f"got {p.pseudo_start}; expected >= 0")
    p.check_optimizer(where)
    return p


def known_part(data: Dataset, variant: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """(all images, the images whose label is known, their labels, class names), or a ConfigError."""
    if data.layout != "images":
        raise ConfigError(f"model.variant: {variant} ({FAMILY}) trains on one image set; the prepared data has the "
                          f"{data.layout} layout")
    images = data.images
    if images.labels is None or len(images.classes) < 2:
        raise ConfigError(f"model.variant: {variant} ({FAMILY}) learns a classifier and needs labelled data with at "
                          f"least 2 classes (some labels: data.labels_per_class); data.source has none")
    known = images.known if images.known is not None else torch.ones(len(images), dtype=torch.bool)
    return images.images, images.images[known], images.labels[known], images.classes


class SemiRecipe(StatelessRecipe):
    """A :class:`gans.family.Recipe` for one semi-supervised composition on one partly labelled image set."""

    primary_metric, higher_is_better = "error", False

    def __init__(self, comp: SemiComposition, *, model: ModelConfig, data: Dataset) -> None:
        everything, x_known, y_known, classes = known_part(data, comp.name)
        self.comp, self.model_cfg, self.variant, self.classes = comp, model, comp.name, classes
        k, channels, res = len(classes), int(everything.shape[1]), int(everything.shape[-1])
        self.c_spec = ClassifierSpec(channels, res, model.width, k, comp.input_noise, comp.dropout, comp.architecture)
        conditional = comp.method == "triplegan"
        self.g_spec = NetSpec(channels=channels, resolution=res, z_dim=model.z_dim, width=model.width,
                              num_classes=k if conditional else 0, conditioning="concat" if conditional else "none",
                              d_norm="none")
        self.g_arch = "dcgan" if comp.architecture == "conv" else "mlp"
        check_buildable(self.g_arch, self.g_spec)
        self.known_count = len(y_known)
        repeats = -(-len(everything) // max(len(y_known), 1))  # both streams go round at the same pace
        self.streams = {"unlabelled": {"images": everything},
                        "labelled": {"images": x_known.repeat(repeats, 1, 1, 1), "labels": y_known.repeat(repeats)}}
        self.c_name = "C" if conditional else "D"  # the network that classifies
        gan = (Phase("discriminator", "D"),)
        if conditional:
            gan += (Phase("classifier", "C", frozen=("D",)),)
        self.phases = gan + (Phase("generator", "G", frozen=("D",)), Phase("baseline", "B"))
        betas = (comp.beta1, comp.beta2)
        self.optimizers = {"G": OptimizerSpec(("G",), comp.lr_g, comp.optimizer, betas, "lr_g"),
                           "D": OptimizerSpec(("D",), comp.lr_d, comp.optimizer, betas, "lr_d"),
                           "B": OptimizerSpec(("B",), comp.lr_d, comp.optimizer, betas, "lr_d")}
        if conditional:
            self.optimizers["C"] = OptimizerSpec(("C",), comp.lr_d, comp.optimizer, betas, "lr_d")
        self.ema = {"C_ema": self.c_name, "G_ema": "G", "B_ema": "B"}
        self.classifier_updates = 0
        self.initialised = False  # the classifiers' data-dependent initialisation, done on the first batch

    def describe(self) -> dict[str, Any]:
        return {"variant": {k: v for k, v in asdict(self.comp).items() if k != "paper"},
                "classifier": asdict(self.c_spec), "generator": asdict(self.g_spec), "generator_arch": self.g_arch,
                "known": self.known_count}

    def build(self) -> dict[str, nn.Module]:
        g, d = build_networks(self.g_arch, self.g_spec)
        nets: dict[str, nn.Module] = {"G": g, "B": Classifier(self.c_spec)}
        if self.comp.method == "triplegan":
            nets.update(C=Classifier(self.c_spec), D=d)
        else:
            nets["D"] = Classifier(self.c_spec)
        return nets

    def bind(self, networks: dict[str, nn.Module], *, augment: Augment | None, device: torch.device) -> None:
        if augment is not None:  # params.yaml turns ADA on for the GANs: a note, not an error
            print(f"note: augment: {self.variant} trains its classifier on the images as they are (ADA and "
                  "DiffAugment are tuned for an adversarial discriminator, not a K-way classifier); they are off "
                  "for this run", file=sys.stderr)
        self.nets, self.device = networks, device

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.g_spec.z_dim, device=self.device)

    def loss(self, phase: str, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lab, unl = batch["labelled"], batch["unlabelled"]
        if not self.initialised:
            if self.comp.data_init:
                self._data_init(lab, unl)
            self.initialised = True
        if phase == "baseline":
            ce = F.cross_entropy(self.nets["B"](lab["images"]).float(), lab["labels"])
            return ce, {"loss_baseline": ce.detach()}
        return getattr(self, f"_{self.comp.method}")(phase, lab, unl)

    def _data_init(self, lab: dict, unl: dict) -> None:
        """Initialise the weight-normalised classifiers from the first batch (Classifier.data_init): the
        classifier on the unlabelled images it sees most, the baseline on the labelled ones it trains on."""
        with torch.autocast(self.device.type, enabled=False):
            self.nets[self.c_name].data_init(unl["images"])
            self.nets["B"].data_init(lab["images"])

    def _labelled(self, net: nn.Module, lab: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(net(lab["images"]).float(), lab["labels"])

    def _improvedgan(self, phase: str, lab: dict, unl: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        d, g, x = self.nets["D"], self.nets["G"], unl["images"]
        if phase == "generator":  # feature matching: the mean features of real and generated images
            with torch.no_grad():
                real = d.features(x).float().mean(0)
            fake = d.features(g(self._z(len(x)))).float().mean(0)
            loss = (real - fake).pow(2).mean()
            return loss, {"loss_g": loss.detach()}
        with torch.no_grad():
            fake = g(self._z(len(x)))
        # log Z of the K logits is the logit of "real" against the fixed zero logit of the fake class
        real_logit = d(x).float().logsumexp(1)
        fake_logit = d(fake).float().logsumexp(1)
        unsup = F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
        sup = self._labelled(d, lab)
        loss = self.comp.labelled_weight * sup + unsup
        return loss, {"loss_d": loss.detach(), "loss_labelled": sup.detach(),
                      "d_real": torch.sigmoid(real_logit).mean().detach(),
                      "d_fake": torch.sigmoid(fake_logit).mean().detach()}

    def _catgan(self, phase: str, lab: dict, unl: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        d, g, x = self.nets["D"], self.nets["G"], unl["images"]
        if phase == "generator":  # certain of each sample, and the samples spread over the classes
            fake = d(g(self._z(len(x))))
            loss = entropy(fake).mean() - marginal_entropy(fake)
            return loss, {"loss_g": loss.detach()}
        with torch.no_grad():
            fake_images = g(self._z(len(x)))
        real, fake = d(x), d(fake_images)
        sup = self._labelled(d, lab)
        loss = entropy(real).mean() - marginal_entropy(real) - entropy(fake).mean() + self.comp.labelled_weight * sup
        return loss, {"loss_d": loss.detach(), "loss_labelled": sup.detach(),
                      "entropy_real": entropy(real).mean().detach(), "entropy_fake": entropy(fake).mean().detach()}

    def _triplegan(self, phase: str, lab: dict, unl: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c, g, d, x = self.nets["C"], self.nets["G"], self.nets["D"], unl["images"]
        k, n, alpha = self.c_spec.num_classes, len(x), self.comp.alpha
        y_g = torch.randint(0, k, (n,), device=self.device)
        if phase == "generator":
            loss = (1 - alpha) * F.softplus(-d(g(self._z(n), y_g), y_g).float()).mean()
            return loss, {"loss_g": loss.detach()}
        if phase == "discriminator":
            with torch.no_grad():
                fake = g(self._z(n), y_g)
                y_c = torch.multinomial(c(x).float().softmax(1), 1).squeeze(1)
            real = F.softplus(-d(lab["images"], lab["labels"]).float()).mean()
            from_g = F.softplus(d(fake, y_g).float()).mean()
            from_c = F.softplus(d(x, y_c).float()).mean()
            loss = real + (1 - alpha) * from_g + alpha * from_c
            return loss, {"loss_d": loss.detach(), "d_real": real.detach(), "d_fake_g": from_g.detach(),
                          "d_fake_c": from_c.detach()}
        # the classifier: score-function gradient of E_{y ~ C(x)} log(1 - D(x, y)), with the batch mean as baseline
        logp = c(x).float().log_softmax(1)
        y_c = torch.multinomial(logp.exp().detach(), 1).squeeze(1)
        with torch.no_grad():
            reward = -F.softplus(d(x, y_c).float())  # log(1 - D(x, y_c))
        adversarial = alpha * (logp.gather(1, y_c[:, None]).squeeze(1) * (reward - reward.mean())).mean()
        sup = self._labelled(c, lab)
        loss = adversarial + self.comp.labelled_weight * sup
        stats = {"loss_c": loss.detach(), "loss_labelled": sup.detach()}
        if self.comp.pseudo_weight and self.classifier_updates >= self.comp.pseudo_start:
            with torch.no_grad():
                fake = g(self._z(n), y_g)
            pseudo = F.cross_entropy(c(fake).float(), y_g)
            loss = loss + self.comp.pseudo_weight * pseudo
            stats["loss_pseudo"] = pseudo.detach()
        return loss, stats

    def after_update(self, phase: str) -> None:
        if phase == "classifier":
            self.classifier_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"classifier_updates": self.classifier_updates, "initialised": self.initialised}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.classifier_updates = int(state.get("classifier_updates", 0))
        self.initialised = bool(state.get("initialised", True))  # checkpoints from before it: trained weights

    def export(self, ema: dict[str, nn.Module], step: int) -> dict[str, Any]:
        """What ``models/generator.pt`` holds for a semi-supervised model: the EMA classifier (the artifact),
        the baseline beside it, the generator, and all that rebuilds them."""
        return {"family": FAMILY, "artifact": "classify", "classifier": weights(ema["C_ema"]),
                "baseline": weights(ema["B_ema"]), "generator": weights(ema["G_ema"]),
                "spec": {"classifier": asdict(self.c_spec), "generator": asdict(self.g_spec), "generator_arch": self.g_arch},
                "variant": asdict(self.comp), "model": to_dict(self.model_cfg), "classes": list(self.classes),
                "known_labels": self.known_count, "step": step}

    def sample_grid(self, ema: dict[str, nn.Module], device: torch.device) -> torch.Tensor:
        seeds, labels = grid_seeds_labels(self.g_spec.num_classes)
        return image_grid(generate(ema["G_ema"], seeds, labels, z_dim=self.g_spec.z_dim, device=device))
