"""The family registry: every preset name maps to one family, and everything outside ``gans/families/``
(the stages, the registry, serving, the CLI) reaches a family through the functions here.

Adding a family: a module or folder under ``gans/families/`` that implements :class:`gans.family.Family`
(presets, resolve, recipe, artifact, evaluation), listed in ``FAMILIES`` below, plus its tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gans.config import AugmentConfig, ConfigError, ModelConfig, TrainConfig, require
from gans.data import Dataset, ImageSet
from gans.family import Artifact, Family, Recipe
from gans.families.coupled import COUPLED
from gans.families.noise import NOISE
from gans.families.multidomain import MULTIDOMAIN
from gans.families.pixelcnn import PIXELCNN
from gans.families.semisup import SEMISUP
from gans.families.style import STYLE
from gans.families.superres import SUPERRES
from gans.families.translation import TRANSLATION
from gans.io import load_torch

FAMILIES: dict[str, Family] = {f.name: f for f in (NOISE, STYLE, TRANSLATION, SUPERRES, MULTIDOMAIN, PIXELCNN,
                                                              SEMISUP, COUPLED)}
PRESETS: dict[str, Family] = {preset: f for f in FAMILIES.values() for preset in f.presets}


def family_named(name: str) -> Family:
    require(name in FAMILIES, "family", f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(variant: str) -> Family:
    """The family of a preset; an unknown preset is an error that lists every preset."""
    require(variant in PRESETS, "model.variant", f"unknown variant {variant!r}; allowed values: {', '.join(PRESETS)}")
    return PRESETS[variant]


@dataclass(frozen=True)
class Resolved:
    """``model.variant`` resolved once: its family and its checked composition (preset + overrides)."""

    family: Family
    composition: Any

    @property
    def variant(self) -> str:
        return self.composition.name

    def components(self) -> dict[str, str]:
        return self.family.components(self.composition)


def resolve(model: ModelConfig) -> Resolved:
    """Resolve ``model.variant`` and ``model.overrides``; reject ``model.*`` keys the family does not use."""
    family = family_of(model.variant)
    defaults = ModelConfig()
    for key in family.unused_model_keys:
        value = getattr(model, key)
        require(value == getattr(defaults, key), f"model.{key}",
                f"the {family.name} family ({model.variant}) does not use it; remove it or leave it at "
                f"{getattr(defaults, key)!r}")
    return Resolved(family, family.resolve(model))


LAYOUT_WORDS = {"images": "one image set", "paired": "paired data (two aligned domains)",
                "unpaired": "unpaired data (two domains)",
                "superres": "super-resolution pairs (data.scale > 0: each image and its downscaled copy)",
                "attributes": "images with domains or attributes (mnist5k-styles, attributes:PATH)"}


def check_layout(resolved: Resolved, layout: str, source: str) -> None:
    """The data source's layout must be one the composition trains on."""
    family, wanted = resolved.family, resolved.family.layouts_of(resolved.composition)
    if layout not in wanted:
        fits = ", ".join(p for p, f in PRESETS.items() if layout in f.layouts_of(f.presets[p]))
        raise ConfigError(f"model.variant: {resolved.variant} ({family.name}) trains on "
                          f"{' or '.join(LAYOUT_WORDS[w] for w in wanted)}, but data.source {source!r} is "
                          f"{LAYOUT_WORDS[layout]}; choose another data.source, or a variant for "
                          f"{LAYOUT_WORDS[layout]}: {fits}")


def recipe(resolved: Resolved, *, model: ModelConfig, data: Dataset | ImageSet, preview: Dataset | None = None,
           features: Mapping[str, nn.Module] | None = None) -> Recipe:
    """The family's training recipe for ``data`` (an ImageSet is the images layout); ``features``: the domain
    classifiers by data part, for a family whose loss uses them."""
    data = Dataset.single(data) if isinstance(data, ImageSet) else data
    partial = [name for name, part in data.parts.items() if part.partly_labelled]
    if partial and not getattr(resolved.family, "partial_labels", False):
        semi = ", ".join(p for p, f in PRESETS.items() if getattr(f, "partial_labels", False))
        raise ConfigError(f"data.labels_per_class: the training set keeps only some of its labels, and "
                          f"{resolved.variant} ({resolved.family.name}) would not know which; set "
                          f"data.labels_per_class: 0, or choose a semi-supervised variant ({semi})")
    return resolved.family.recipe(resolved.composition, model=model, data=data, preview=preview, features=features)


def load_artifact(path: str | Path, device: torch.device | str = "cpu") -> Artifact:
    """The artifact written by the train stage (``models/generator.pt``), rebuilt by its family."""
    try:
        payload = load_torch(path, map_location=device)
    except Exception as err:
        raise ValueError(f"{path} is not a model file written by the train stage ({type(err).__name__})") from None
    if not isinstance(payload, dict) or "spec" not in payload or "variant" not in payload:
        raise ValueError(f"{path} is not a model file written by the train stage")
    family = payload.get("family", NOISE.name)  # generator files of earlier releases are noise-to-image
    if family not in FAMILIES:
        raise ValueError(f"{path} was written by a family this release does not know ({family!r})")
    return FAMILIES[family].load_artifact(payload, device)


def build_trainer(*, model: ModelConfig, train: TrainConfig, augment: AugmentConfig, data: Dataset | ImageSet,
                  checkpoint_dir: str | Path, preview: Dataset | None = None, data_hash: str = "",
                  features: Mapping[str, nn.Module] | None = None, **kwargs: Any):
    """A :class:`gans.trainer.Trainer` for ``model.variant`` on ``data`` (``kwargs``: reporter, evaluate_fn,
    extra)."""
    from gans.trainer import Trainer, training_fingerprint

    r = recipe(resolve(model), model=model, data=data, preview=preview, features=features)
    fp = training_fingerprint(r, model=model, train=train, augment=augment, data_hash=data_hash)
    return Trainer(recipe=r, train=train, augment=augment, checkpoint_dir=checkpoint_dir, fingerprint=fp, **kwargs)
