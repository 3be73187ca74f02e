"""params.yaml loading: defaults, overrides and one clear message per kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gans.config import ConfigError
from pipeline.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]


def test_repo_params_load_with_contract_defaults() -> None:
    p = load_params(ROOT / "params.yaml")
    assert isinstance(p, Params)
    assert p.data.source == "mnist5k" and p.data.resolution == 32 and p.data.holdout_fraction == 0.1
    assert p.augment.static == () and p.augment.diffaugment == "" and p.augment.ada.enabled
    assert p.augment.ada.target == 0.6
    assert p.model.variant == "dcgan" and p.model.z_dim == 64 and p.model.overrides == {}
    assert (p.train.device, p.train.batch_size, p.train.steps, p.train.precision) == ("auto", 64, 1500, "auto")
    assert p.evaluate.features == "domain" and p.evaluate.num_samples == 5000
    assert p.register.model_name == "gan-generator" and p.register.promote == "if_better"
    assert p.tracking.uri == "sqlite:///mlflow.db" and p.tracking.experiment == "gans"


def test_overrides_are_typed_as_yaml() -> None:
    p = load_params(ROOT / "params.yaml", ["train.steps=10", "augment.ada.enabled=false",
                                           "augment.static=[xflip]", "model.overrides.lr_g=0.001"])
    assert p.train.steps == 10 and p.augment.ada.enabled is False
    assert p.augment.static == ("xflip",) and p.model.overrides == {"lr_g": 0.001}


@pytest.mark.parametrize("override, fragment", [
    ("train.stpes=10", "train.stpes: unknown key; allowed keys in 'train': device, batch_size, steps"),
    ("bogus.x=1", "bogus: unknown key; allowed keys at the top level: data, augment"),
    ("train.steps=ten", "train.steps: got 'ten'; expected an integer"),
    ("train.steps=1.5", "train.steps: got 1.5; expected an integer"),
    ("train.steps=0", "train.steps: got 0; expected an integer >= 1"),
    ("train.batch_size=true", "train.batch_size: got True; expected an integer"),
    ("train.precision=fp8", "train.precision: got 'fp8'; allowed values: auto, fp32, bf16, fp16"),
    ("train.device=tpu", "train.device: got 'tpu'; allowed values: auto, cpu, cuda, cuda:N, mps"),
    ("model.variant=stylegan9", "model.variant: unknown variant 'stylegan9'; allowed values: gan, dcgan, cgan"),
    ("model.overrides.loss=magic", "model.overrides.loss: got 'magic'; allowed values: non-saturating"),
    ("model.overrides.colour=1", "model.overrides.colour: unknown axis"),
    ("data.source=imagenet", "data.source: unknown source 'imagenet'; allowed values: mnist5k, digits, mnist"),
    ("data.holdout_fraction=0.7", "data.holdout_fraction: got 0.7; expected a number in (0, 0.5)"),
    ("augment.static=[rotate]", "augment.static[0]: got 'rotate'; allowed values: xflip"),
    ("augment.diffaugment=color,blur", "augment.diffaugment: unknown policy 'blur'"),
    ("augment.ada.target=1.5", "augment.ada.target: got 1.5; expected a number in (0, 1)"),
    ("augment.ada.pipeline=xyz", "augment.ada.pipeline: got 'xyz'; allowed values: b, bg, bgc, c"),
    ("evaluate.features=clip", "evaluate.features: got 'clip'; allowed values: domain, inception"),
    ("register.promote=sometimes", "register.promote: got 'sometimes'; allowed values: if_better, always, never"),
    ("train=5", "train: expected a mapping of keys"),
    ("steps", "expected KEY=VALUE"),
])
def test_bad_values_name_the_key(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_params(ROOT / "params.yaml", [override])
    assert fragment in str(err.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    bad.write_text(yaml.safe_dump(["a", "b"]))
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_params(bad)


def test_cli_reports_user_errors_without_traceback(capsys: pytest.CaptureFixture) -> None:
    from pipeline.cli import main

    assert main(["prepare", "--params", str(ROOT / "params.yaml"), "-S", "data.resolution=4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.resolution: got 4; expected 8..256") and "Traceback" not in err
