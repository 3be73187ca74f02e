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
    assert p.augment.static == () and p.augment.diffaugment == "" and not p.augment.ada.enabled
    assert p.augment.ada.target == 0.6
    assert p.model.variant == "dcgan" and p.model.z_dim == 64 and p.model.overrides == {}
    assert (p.train.device, p.train.batch_size, p.train.steps, p.train.precision) == ("auto", 64, 3000, "auto")
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
    ("evaluate.truncation=[1, 1.5]", "evaluate.truncation[1]: got 1.5; expected a psi in 0..1"),
    ("evaluate.truncation=[0.5, 0.5]", "evaluate.truncation: got [0.5, 0.5]; each psi once"),
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


# ---------------------------------------------------------------- the params file itself


def test_a_params_file_that_is_not_utf8_names_the_byte_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_bytes("train:\n  steps: 10\n  # réglé\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"params.yaml: not UTF-8 text \(byte 0xe9 at line 3\); save it as UTF-8"):
        load_params(bad)
    bad.write_bytes(b"\xef\xbb\xbftrain: {steps: 10}\n")  # a UTF-8 byte order mark is fine
    assert load_params(bad).train.steps == 10


def test_a_params_file_that_cannot_be_read_is_one_error(tmp_path: Path) -> None:
    """A folder named params.yaml (any user), and a file without read permission: as root, the test drops
    root's permission override around the read (tests/test_data.py's `unreadable`), or skips."""
    from test_data import unreadable

    (tmp_path / "params.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"params file '.*params.yaml' is a folder, not a file"):
        load_params(tmp_path / "params.yaml")
    locked = tmp_path / "locked.yaml"
    locked.write_text("train: {steps: 10}\n")
    with unreadable(locked), pytest.raises(ConfigError, match=r"cannot read params file '.*locked.yaml' "
                                                              r"\(Permission denied\)"):
        load_params(locked)


@pytest.mark.parametrize("text, fragment", [
    ("train:\n  steps: 3000\n  seed: 1\n  steps: 10\n", "duplicate key train.steps (lines 2 and 4)"),
    ("train: {steps: 1, steps: 2}\n", "duplicate key train.steps (line 1)"),
    ("data: {}\ntrain: {}\ndata: {seed: 1}\n", "duplicate key data (lines 1 and 3)"),
    ("model:\n  overrides:\n    reg_args: {gp: {weight: 1.0, weight: 2.0}}\n",
     "duplicate key model.overrides.reg_args.gp.weight (line 3)"),
    ("augment:\n  static: [{a: 1, a: 2}]\n", "duplicate key augment.static[0].a (line 2)"),
])
def test_duplicate_keys_are_refused_with_the_key_and_lines(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert fragment in str(err.value) and "keep one" in str(err.value)


def test_anchors_aliases_and_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("data: &d {seed: 3}\nevaluate: {<<: *d, num_samples: 20}\ntrain: {<<: [*d], steps: 7}\n")
    params = load_params(path)
    assert (params.evaluate.seed, params.evaluate.num_samples, params.train.seed, params.train.steps) == (3, 20, 3, 7)


# ---------------------------------------------------------------- numbers


def _float_keys(cls: type = Params, prefix: str = "") -> list[str]:
    """Every key of a float-valued param (float, or float or null), found from the dataclasses."""
    import dataclasses
    import types
    from typing import Union, get_args, get_origin, get_type_hints

    keys = []
    for name, tp in get_type_hints(cls).items():
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            keys += _float_keys(tp, key + ".")
        elif tp is float or (get_origin(tp) in (Union, types.UnionType) and float in get_args(tp)):
            keys.append(key)
    return keys


FLOAT_KEYS = _float_keys()


def test_the_float_keys_are_the_ones_we_think() -> None:
    assert {"data.holdout_fraction", "augment.ada.target", "augment.ada.speed_kimg", "augment.ada.initial_p",
            "train.lr_g", "train.lr_d", "train.ema_kimg", "train.ema_rampup"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("key", FLOAT_KEYS + ["model.overrides.lr_g", "model.overrides.beta1",
                                              "model.overrides.reg_args.gp.weight",
                                              "model.overrides.loss_args.smoothing"])
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_params(ROOT / "params.yaml", [f"{key}={value}"])
    shown = {".inf": "inf", "-.inf": "-inf", ".nan": "nan"}[value]
    assert str(err.value) == f"{key}: got {shown}; expected a finite number"


def test_non_finite_numbers_of_a_translation_preset_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"model.overrides.cycle_weight: got inf; expected a finite number"):
        load_params(ROOT / "params.yaml", ["model.variant=cyclegan", "data.source=digits-mnist5k",
                                           "model.overrides.cycle_weight=.inf"])


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_an_integer_too_large_for_a_float_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: got an integer of 400 digits; expected a finite number"):
        load_params(ROOT / "params.yaml", [f"{key}={10**399}"])


SEED_KEYS = [k for k in Params().flat() if k.rsplit(".", 1)[-1] == "seed"]


def test_every_seed_is_bounded() -> None:
    assert set(SEED_KEYS) == {"data.seed", "train.seed", "evaluate.seed", "explore.seed"}


@pytest.mark.parametrize("key", SEED_KEYS)
@pytest.mark.parametrize("seed", [-1, 2**32, 2**63, 2**64, 10**30])
def test_seeds_out_of_range_are_refused(key: str, seed: int) -> None:
    with pytest.raises(ConfigError) as err:
        load_params(ROOT / "params.yaml", [f"{key}={seed}"])
    assert str(err.value) == f"{key}: got {seed}; expected a seed in 0..4294967295 (2^32 - 1)"


@pytest.mark.parametrize("key", SEED_KEYS)
def test_the_largest_seed_is_fine_everywhere_it_is_used(key: str) -> None:
    """The largest seed plus the offsets the trainer and the evaluation add stays within torch's range."""
    import torch

    from gans.config import MAX_SEED
    from gans.families.noise.evaluate import SEED_STRIDE
    from gans.trainer import RANK_SEED_STRIDE

    assert load_params(ROOT / "params.yaml", [f"{key}={MAX_SEED}"]).to_dict()[key.split(".")[0]]["seed"] == MAX_SEED
    for seed in (MAX_SEED * SEED_STRIDE + 10**6, MAX_SEED + RANK_SEED_STRIDE * 4096 + 10**9):
        torch.Generator().manual_seed(seed)
        assert seed < 2**63


# ---------------------------------------------------------------- secrets in tracking.uri


@pytest.mark.parametrize("uri, key", [
    ("http://mlflow.example:5000/?token=s3cr3t", "token"),
    ("https://mlflow.example/?access_token=s3cr3t&x=1", "access_token"),
    ("postgresql://me@db.example/mlflow?sslmode=require&password=s3cr3t", "password"),
    ("postgresql://me@db.example/mlflow?sslpassword=s3cr3t", "sslpassword"),
    ("http://mlflow.example:5000/?api_key=s3cr3t", "api_key"),
    ("https://acct.blob.core.windows.net/c?sv=2020&sig=s3cr3t", "sig"),
    ("http://mlflow.example:5000/#token=s3cr3t", "token"),
])
def test_a_secret_in_the_tracking_uri_query_is_refused_without_echoing_it(uri: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_params(ROOT / "params.yaml", [f"tracking.uri={uri}"])
    message = str(err.value)
    assert message.startswith(f"tracking.uri: holds a secret in its query string ({key}=...)")
    assert "s3cr3t" not in message and "MLFLOW_TRACKING_TOKEN" in message


@pytest.mark.parametrize("uri", [
    "postgresql://me@db.example/mlflow?sslmode=require&sslkey=/etc/ssl/me.key&sslrootcert=/etc/ssl/ca.pem",
    "http://mlflow.example:5000/?experiment=3", "sqlite:///mlflow.db", "databricks",
])
def test_uris_without_secrets_load(uri: str) -> None:
    assert load_params(ROOT / "params.yaml", [f"tracking.uri={uri}"]).tracking.uri == uri


def test_a_malformed_tracking_uri_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"tracking.uri: not a valid URI \(Invalid IPv6 URL\)"):
        load_params(ROOT / "params.yaml", ["tracking.uri=http://[::1"])


# ---------------------------------------------------------------- which command applies which override

# One override per distinction the rule makes, and the commands that apply it (flow, sweep and deploy run every
# stage, so they apply all of them). A command outside the set must refuse the override.
OVERRIDES = {
    "data.source=digits": {"prepare"},
    "data.resolution=16": {"prepare", "serve"},
    "data.max_images=100": {"prepare"},
    "data.seed=1": {"prepare"},
    "augment.static=[xflip]": {"augment"},
    "augment.ada.enabled=false": {"augment"},
    "model.variant=lsgan": {"prepare", "augment", "evaluator", "train"},
    "model.z_dim=32": {"train"},
    "model.overrides.lr_g=0.001": {"train"},
    "train.steps=5": {"train"},
    "train.device=cpu": {"evaluator", "train", "evaluate", "explore"},
    "evaluate.evaluator_epochs=2": {"evaluator"},
    "evaluate.seed=1": {"evaluator", "evaluate"},
    "evaluate.features=inception": {"evaluator", "evaluate"},
    "evaluate.num_samples=50": {"evaluate"},
    "explore.alpha=2": {"explore"},
    "register.model_name=other": {"register", "sample", "explore", "export", "serve"},
    "register.promote=always": {"register"},
    "tracking.uri=sqlite:///other.db": {"train", "evaluate", "register", "sample", "explore", "export", "serve",
                                        "summary"},
    "tracking.experiment=other": {"train", "evaluate", "register", "sample", "explore", "export", "serve"},
    "serve.max_rows=8": {"register", "serve"},
    "serve.port=6000": {"serve"},
}
COMMANDS = ["prepare", "augment", "evaluator", "train", "evaluate", "register", "sample", "explore", "export", "serve", "summary",
            "variants", "repair-lock", "flow", "sweep", "deploy"]


def test_every_command_is_in_the_table() -> None:
    from pipeline.cli import READS, build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(READS) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_applies_or_refuses_each_override(command: str, tmp_path: Path, monkeypatch) -> None:
    """In a folder where no stage has run (nothing records what made an output)."""
    from pipeline.cli import check_overrides

    monkeypatch.chdir(tmp_path)
    for override, readers in OVERRIDES.items():
        params = load_params(ROOT / "params.yaml", [override])
        key = override.partition("=")[0]
        if command in readers or command in ("flow", "sweep", "deploy"):
            check_overrides(command, [override], params)
            continue
        with pytest.raises(ConfigError) as err:
            check_overrides(command, [override], params)
        message = str(err.value)
        assert message.startswith(f"{key}: gans {command} does not read it; "), message
        assert f" -S {override}" in message, message


def test_the_refusal_says_who_reads_the_key_and_what_to_run(tmp_path: Path, monkeypatch) -> None:
    from pipeline.cli import check_overrides

    monkeypatch.chdir(tmp_path)

    def refusal(command: str, override: str) -> str:
        with pytest.raises(ConfigError) as err:
            check_overrides(command, [override], load_params(ROOT / "params.yaml", [override]))
        return str(err.value)

    assert refusal("train", "augment.ada.enabled=false") == (
        "augment.ada.enabled: gans train does not read it; the augment stage does: run gans augment -S "
        "augment.ada.enabled=false first, or dvc exp run -S augment.ada.enabled=false, which reruns every stage the "
        "key affects")
    assert refusal("augment", "train.steps=5").endswith(
        "the train stage does: pass it to gans train -S train.steps=5 instead, or dvc exp run -S train.steps=5, "
        "which reruns every stage the key affects")
    assert refusal("prepare", "train.device=cpu").startswith(
        "train.device: gans prepare does not read it; the evaluator, train, evaluate and explore stages do: pass it to "
        "gans evaluator -S train.device=cpu instead")
    assert refusal("summary", "tracking.experiment=x").startswith(
        "tracking.experiment: gans summary does not read it; the train, evaluate, explore and register stages do: run "
        "gans train -S tracking.experiment=x first")
    assert refusal("register", "serve.port=6000") == (
        "serve.port: gans register does not read it; gans serve does: pass it to gans serve -S serve.port=6000 "
        "instead")  # no dvc exp run: no stage reads it
    assert refusal("train", "augment={static: [xflip]}").startswith("augment.static: gans train does not read it")


def _stage_outputs(root: Path, *, data: dict | None = None, spec: dict | None = None, variant: str = "dcgan") -> None:
    """What prepare, augment and train record about the params they ran with (as the stages write it)."""
    import json

    from gans.config import AugmentConfig, DataConfig, to_dict

    (root / "data/prepared").mkdir(parents=True)
    (root / "data/augmented").mkdir(parents=True)
    (root / "metrics").mkdir()
    record = to_dict(DataConfig(**(data or {})))
    meta = {"source": record["source"], "resolution": record["resolution"], "hash": "h1"}
    (root / "data/prepared/meta.json").write_text(json.dumps(meta))
    (root / "data/prepared/params.json").write_text(json.dumps({"hash": "h1", "data": record}))
    (root / "data/augmented/spec.json").write_text(json.dumps(spec or to_dict(AugmentConfig())))
    (root / "metrics/train.json").write_text(json.dumps({"variant": variant, "steps": 5}))


def test_an_earlier_stages_key_is_accepted_when_its_outputs_were_made_with_that_value(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    """`gans prepare -S X` then `gans train -S X`, the same flags on every command: X is in effect."""
    from pipeline.cli import check_overrides

    monkeypatch.chdir(tmp_path)
    _stage_outputs(tmp_path, data={"source": "digits", "resolution": 16, "max_images": 100})

    def check(command: str, *overrides: str) -> None:
        check_overrides(command, list(overrides), load_params(ROOT / "params.yaml", list(overrides)))

    same = ["data.source=digits", "data.resolution=16", "data.max_images=100", "augment.ada.enabled=true",
            "augment.static=[]"]
    for command in ("augment", "evaluator", "train", "evaluate", "register", "sample", "summary"):
        check(command, *[o for o in same if not (command == "augment" and o.startswith("augment."))])
    check("evaluate", "model.variant=dcgan")
    check("train", "augment.ada={enabled: true}")  # the keys it leaves out take their defaults, as in spec.json

    with pytest.raises(ConfigError, match=r"^data.max_images: gans train does not read it; the prepare stage does "
                                          r"\(data/prepared/ was made with 100\): run gans prepare -S "
                                          r"data.max_images=50 first"):
        check("train", "data.max_images=50")
    with pytest.raises(ConfigError, match=r"^augment.ada.enabled: gans train does not read it; the augment stage "
                                          r"does \(data/augmented/spec.json was made with true\)"):
        check("train", "augment.ada.enabled=false")
    with pytest.raises(ConfigError, match=r"^model.variant: gans evaluate does not read it; the train stage does "
                                          r"\(metrics/train.json was made with \"dcgan\"\)"):
        check("evaluate", "model.variant=lsgan")
    with pytest.raises(ConfigError, match=r"^model.z_dim: gans evaluate does not read it"):
        check("evaluate", "model.z_dim=64")  # train.json does not record it: never taken as in effect
    with pytest.raises(ConfigError, match=r"^augment.ada.enabled: gans prepare does not read it; the augment stage "
                                          r"does: pass it to gans augment"):
        check("prepare", "augment.ada.enabled=true")  # spec.json is a later stage's output


def test_a_record_of_other_data_is_not_trusted(tmp_path: Path, monkeypatch) -> None:
    """params.json from an earlier prepare (another content hash) says nothing about data/prepared/ now."""
    import json

    from pipeline.cli import check_overrides

    monkeypatch.chdir(tmp_path)
    _stage_outputs(tmp_path, data={"source": "digits", "max_images": 100})
    meta = json.loads((tmp_path / "data/prepared/meta.json").read_text())
    (tmp_path / "data/prepared/meta.json").write_text(json.dumps({**meta, "hash": "h2"}))
    check_overrides("train", ["data.source=digits"], load_params(ROOT / "params.yaml", ["data.source=digits"]))
    with pytest.raises(ConfigError, match=r"^data.max_images: gans train does not read it; the prepare stage does: "):
        check_overrides("train", ["data.max_images=100"], load_params(ROOT / "params.yaml", ["data.max_images=100"]))


def test_a_spec_that_differs_from_the_override_in_a_key_left_out_is_refused(tmp_path: Path, monkeypatch) -> None:
    from gans.config import ADAConfig, AugmentConfig, to_dict
    from pipeline.cli import check_overrides

    monkeypatch.chdir(tmp_path)
    _stage_outputs(tmp_path, spec=to_dict(AugmentConfig(ada=ADAConfig(target=0.7))))
    override = "augment.ada={enabled: true}"  # target back to its default, 0.6
    with pytest.raises(ConfigError, match=r"^augment.ada.target: gans train does not read it; the augment stage does "
                                          r"\(data/augmented/spec.json was made with 0.7\)"):
        check_overrides("train", [override], load_params(ROOT / "params.yaml", [override]))


def _documented_commands() -> list[tuple[str, list[str]]]:
    """(command, -S overrides) of every `gans COMMAND ... -S ...` in the README."""
    import re
    import shlex

    out = []
    for match in re.finditer(r"gans (\w+)((?: [^`\n#]*?)?)(?:`|\n|  #)", (ROOT / "README.md").read_text()):
        try:
            args = shlex.split(match.group(2))
        except ValueError:
            continue
        sets = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-S", "--set")]
        if sets:
            out.append((match.group(1), sets))
    return out


def test_the_readme_shows_only_overrides_its_commands_apply(tmp_path: Path, monkeypatch) -> None:
    from pipeline.cli import check_overrides

    documented = _documented_commands()
    assert ("train", ["train.precision=fp8"]) in documented and len(documented) >= 5
    refused = ("train", ["augment.ada.enabled=true"])  # the README shows it as the example of a refusal
    assert refused in documented and ("augment", ["augment.ada.enabled=true"]) in documented
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="the augment stage does"):
        check_overrides(*refused, load_params(ROOT / "params.yaml", refused[1]))
    for command, overrides in [d for d in documented if d != refused]:
        overrides = [o.split(",")[0] if command == "sweep" else o for o in overrides]  # a sweep's first value
        try:
            params = load_params(ROOT / "params.yaml", overrides)
        except ConfigError as err:
            assert "got 'fp8'" in str(err), (command, overrides, str(err))  # the README's example of a bad value
            continue
        check_overrides(command, overrides, params)


# ---------------------------------------------------------------- command-line arguments and servers


def test_sample_arguments_out_of_range_are_refused_before_the_model_is_loaded(tmp_path: Path, monkeypatch,
                                                                              capsys) -> None:
    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    for args, line in [(["--count", "0"], "error: --count: got 0; expected an integer >= 1"),
                       (["--count", "-3"], "error: --count: got -3; expected an integer >= 1"),
                       (["--per-row", "0"], "error: --per-row: got 0; expected an integer >= 1"),
                       (["--seed", "-1"], "error: --seed: got -1; the seeds --seed .. --seed + --count - 1 must lie "
                                          "in 0..2^63 - 1"),
                       (["--seed", str(2**63 - 10), "--count", "64"], f"error: --seed: got {2**63 - 10};"),
                       (["--truncation", "1.5"], "error: --truncation: got 1.5; expected a number in 0..1"),
                       (["--truncation", "nan"], "error: --truncation: got nan; expected a number in 0..1")]:
        assert main(["sample", "--checkpoint", "missing.pt", *args]) == 2  # a missing file would be the next error
        err = capsys.readouterr().err
        assert err.startswith(line) and len(err.strip().splitlines()) == 1, err


def test_sample_labels_and_directions_are_checked_against_the_model() -> None:
    from types import SimpleNamespace

    from pipeline.cli import _check_sample_args

    generator = SimpleNamespace(kind="generate", num_classes=10, variant="cgan", truncates=True)
    unconditional = SimpleNamespace(kind="generate", num_classes=0, variant="dcgan", family="noise-to-image",
                                    truncates=True)
    pixels = SimpleNamespace(kind="generate", num_classes=0, variant="pixelcnn", family="pixelcnn")
    translator = SimpleNamespace(kind="translate", variant="cyclegan", family="translation", directions=("a2b", "b2a"))

    def args(**kw):
        return SimpleNamespace(**{"label": None, "direction": None, "truncation": 1.0, "mix_seed": None,
                                  "mix_layer": None, **kw})

    style = SimpleNamespace(kind="generate", num_classes=0, variant="stylegan2", family="progressive-style", truncates=True,
                            mix_layers=6)

    for label in (0, 9):
        _check_sample_args(generator, args(label=label))
    _check_sample_args(unconditional, args())
    _check_sample_args(translator, args(direction="b2a"))
    _check_sample_args(unconditional, args(truncation=0.0))
    _check_sample_args(pixels, args(truncation=1.0))
    _check_sample_args(style, args(mix_seed=3, mix_layer=5))
    for artifact, kw, message in [
        (pixels, {"truncation": 0.5}, "--truncation: pixelcnn (pixelcnn) has no latent to truncate; drop --truncation"),
        (translator, {"truncation": 0.5}, "--truncation: cyclegan (translation) translates images"),
        (generator, {"label": 10}, "--label: got 10; cgan has classes 0..9"),
        (generator, {"label": -1}, "--label: got -1; cgan has classes 0..9"),
        (unconditional, {"label": 0}, "--label: dcgan is unconditional (it was trained without labels); drop --label"),
        (translator, {"label": 1}, "--label: a translation model takes no label"),
        (generator, {"direction": "a2b"}, "--direction: cgan generates from seeds; only translation models take a"),
        (unconditional, {"mix_seed": 3, "mix_layer": 1}, "--mix-seed: dcgan (noise-to-image) has no style layers to mix"),
        (style, {"mix_seed": 3}, "--mix-seed: style mixing needs --mix-layer too"),
        (style, {"mix_layer": 3}, "--mix-layer: style mixing needs --mix-seed too"),
        (style, {"mix_seed": 3, "mix_layer": 0}, "--mix-layer: got 0; stylegan2 has 6 style layers, so 1..5"),
        (style, {"mix_seed": -1, "mix_layer": 2}, "--mix-seed: got -1; expected 0..2^63 - 1"),
    ]:
        with pytest.raises(ConfigError) as err:
            _check_sample_args(artifact, args(**kw))
        assert str(err.value).startswith(message)


@pytest.mark.parametrize("interval, line", [
    ("nan", "error: --interval: got nan; expected a number of seconds > 0"),
    ("inf", "error: --interval: got inf; expected a number of seconds > 0"),
    ("0", "error: --interval: got 0.0; expected a number of seconds > 0"),
    ("-60", "error: --interval: got -60.0; expected a number of seconds > 0"),
])
def test_deploy_refuses_an_interval_that_is_not_a_positive_number(interval: str, line: str, capsys) -> None:
    from pipeline.cli import main

    assert main(["deploy", "--params", str(ROOT / "params.yaml"), "--interval", interval]) == 2
    assert capsys.readouterr().err.strip() == line


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_a_prefect_server_that_is_down_is_one_error_naming_it(monkeypatch) -> None:
    from pipeline.flows import PrefectUnavailable, check_api, prefect_api

    url = f"http://127.0.0.1:{_closed_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    with pytest.raises(PrefectUnavailable, match=rf"^Prefect server {url} \(PREFECT_API_URL\) is unreachable "
                                                 r"\(ConnectionError\); start it"):
        check_api("start it")
    monkeypatch.setattr("pipeline.flows.check_api", lambda hint: None)  # up at first, gone mid-run
    with pytest.raises(PrefectUnavailable, match=rf"^Prefect server {url} \(PREFECT_API_URL\) stopped answering"):
        with prefect_api("start it"):
            raise RuntimeError(f"Failed to reach API at {url}/")
    with pytest.raises(RuntimeError, match="something else"), prefect_api("start it"):
        raise RuntimeError("something else")  # not Prefect's: passed on as it is


@pytest.mark.parametrize("command", [["flow", "-S", "train.steps=1"], ["deploy", "--cron", "0 3 * * *"]])
def test_flow_and_deploy_with_the_prefect_server_down_exit_2_with_one_line(command: list[str], tmp_path: Path) -> None:
    """Through the console script, as a user runs it: PREFECT_API_URL names a closed port."""
    import subprocess

    from conftest import BIN, subprocess_env

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    url = f"http://127.0.0.1:{_closed_port()}/api"
    proc = subprocess.run([f"{BIN}/gans", *command], cwd=tmp_path, env=subprocess_env(PREFECT_API_URL=url),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [last]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: Prefect server {url} (PREFECT_API_URL) is unreachable (ConnectionError); start it (prefect server start)")
    assert not (tmp_path / "data").exists()  # no stage ran
