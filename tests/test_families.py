"""The family registry: every preset in one family, the protocol every family implements, artifacts
loaded by their family (generator files of earlier releases included)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from gans.config import ConfigError, ModelConfig
from gans.families import FAMILIES, PRESETS, family_of, load_artifact, resolve
from gans.family import ARTIFACT_KINDS, Family


def test_every_preset_belongs_to_exactly_one_family() -> None:
    names = [p for f in FAMILIES.values() for p in f.presets]
    assert len(names) == len(set(names)) == len(PRESETS)
    assert family_of("dcgan").name == "noise-to-image" and family_of("cyclegan").name == "translation"
    with pytest.raises(ConfigError, match="model.variant: unknown variant 'stylegan9'; allowed values: gan, dcgan"):
        family_of("stylegan9")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_implements_the_protocol(name: str) -> None:
    family = FAMILIES[name]
    for attr, value in inspect.getmembers(Family):
        if not attr.startswith("_") and callable(value):
            assert callable(getattr(family, attr, None)), f"{name} lacks {attr}"
    for attr in ("name", "artifact", "layouts", "primary_metric", "higher_is_better", "headline",
                 "unused_model_keys", "presets"):
        assert hasattr(family, attr), f"{name} lacks {attr}"
    assert family.artifact in ARTIFACT_KINDS and family.primary_metric in {m.key for m in family.headline}
    for preset in family.presets:
        comp = family.resolve(ModelConfig(variant=preset))
        assert set(family.layouts_of(comp)) <= set(family.layouts)
        assert family.components(comp) and comp.paper


def test_resolve_rejects_model_keys_a_family_does_not_use() -> None:
    assert resolve(ModelConfig(variant="pix2pix")).family.name == "translation"
    with pytest.raises(ConfigError, match=r"model.z_dim: the translation family \(cyclegan\) does not use it; remove it "
                                          r"or leave it at 64"):
        resolve(ModelConfig(variant="cyclegan", z_dim=8))
    assert resolve(ModelConfig(variant="dcgan", z_dim=8)).composition.name == "dcgan"


def test_a_generator_file_of_an_earlier_release_loads_as_noise_to_image(tmp_path: Path) -> None:
    """Files written before families existed have no 'family' key: they are generators."""
    from gans.config import AugmentConfig, DataConfig, TrainConfig
    from gans.data import load_source
    from gans.families import build_trainer

    t = build_trainer(model=ModelConfig(z_dim=8, width=8), train=TrainConfig(batch_size=16, steps=1, eval_every=0),
                      augment=AugmentConfig(), data=load_source(DataConfig(source="digits", resolution=16,
                                                                           max_images=50)),
                      checkpoint_dir=tmp_path)
    t.setup()
    payload = {k: v for k, v in t.export().items() if k not in ("family", "artifact")}
    torch.save(payload, tmp_path / "old.pt")
    artifact = load_artifact(tmp_path / "old.pt")
    assert artifact.kind == "generate" and artifact.family == "noise-to-image"
    assert artifact.generate([0, 1], None).shape == (2, 1, 16, 16)
    torch.save({**payload, "family": "stylegan7"}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="a family this release does not know .'stylegan7'."):
        load_artifact(tmp_path / "future.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a model file written by the train stage"):
        load_artifact(tmp_path / "junk.pt")
