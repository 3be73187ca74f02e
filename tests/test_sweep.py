"""`gans sweep`: value lists, validation before anything runs, the table, and a real sweep of DVC experiments
nested under one MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import make_project, run, tiny_params

from gans.config import ConfigError
from pipeline.params import parse_override
from pipeline.sweep import (
    Result,
    dvc_override,
    expand,
    format_table,
    run_sweep,
    split_values,
)

# The smallest pipeline that still trains, evaluates and registers (each stage is mostly process start-up).
SMALL = {"train": {"steps": 10, "eval_every": 0}, "evaluate": {"num_samples": 100, "evaluator_epochs": 1},
         "register": {"exports": False}}  # no ONNX files in the versions: nothing here reads them


@pytest.mark.parametrize("raw, values", [
    ("dcgan,wgan-gp,sngan", ["dcgan", "wgan-gp", "sngan"]),
    ("300", ["300"]),
    ("[xflip]", ["[xflip]"]),
    ("[],[xflip]", ["[]", "[xflip]"]),
    ("[r1,gp],[r1]", ["[r1,gp]", "[r1]"]),
    ("{loss: hinge, n_critic: 2},{}", ["{loss: hinge, n_critic: 2}", "{}"]),
    ("'color,cutout',translation", ["'color,cutout'", "translation"]),
    ('"color,cutout"', ['"color,cutout"']),
])
def test_comma_separated_values_split_outside_brackets_and_quotes(raw: str, values: list[str]) -> None:
    assert split_values(raw) == values


def test_grid_is_the_cartesian_product_of_the_swept_keys() -> None:
    grid = expand(["model.variant=dcgan,lsgan", "train.steps=10", "augment.static=[],[xflip]"])
    assert grid.swept == ["model.variant", "augment.static"]
    assert grid.configs == [
        ["model.variant=dcgan", "train.steps=10", "augment.static=[]"],
        ["model.variant=dcgan", "train.steps=10", "augment.static=[xflip]"],
        ["model.variant=lsgan", "train.steps=10", "augment.static=[]"],
        ["model.variant=lsgan", "train.steps=10", "augment.static=[xflip]"],
    ]


@pytest.mark.parametrize("sets, fragment", [
    (["model.variant"], "expected KEY=VALUE"),
    (["model.variant=dcgan", "model.variant=lsgan"], "given twice"),
    (["tracking.experiment=a,b"], "tracking.* cannot be swept"),
    (["model.variant=dcgan,,lsgan"], "an empty value"),
    (["model.variant=dcgan,dcgan"], "repeated"),
])
def test_bad_sweep_arguments_are_named(sets: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("*", r"\*")):
        expand(sets)


@pytest.mark.parametrize("text", [
    "model.variant=dcgan", "augment.static=[xflip]", "augment.static=[]", "model.overrides={loss: hinge}",
    "model.overrides.regularizers=[r1, gp]", "train.lr_g=null", "train.lr_g=0.0002", "train.steps=300",
    "augment.ada.enabled=false", "augment.diffaugment='color,cutout'", "augment.diffaugment=''",
    "data.source=folder:/data/my images", "model.variant=it's",
])
def test_values_reach_dvc_exp_run_unchanged(text: str) -> None:
    """DVC parses -S with Hydra's grammar; each value must come out as `gans -S` reads it (YAML)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = dvc_override(text)
    assert override.startswith("++")  # sets keys params.yaml lacks, like model.overrides.loss
    parsed = OverridesParser.create().parse_override(override)
    assert not parsed.is_sweep_override()
    assert parsed.value() == parse_override(text)[1]


def test_a_bad_configuration_fails_before_anything_starts(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"configuration 2 \(model.variant=bogus\).*unknown variant 'bogus'"):
        run_sweep("params.yaml", ["model.variant=dcgan,bogus"])
    with pytest.raises(ConfigError, match="train.steps"):
        run_sweep("params.yaml", ["model.variant=dcgan,lsgan", "train.steps=many"])
    with pytest.raises(ConfigError, match="runs DVC experiments: run it in a DVC project"):
        run_sweep("params.yaml", ["model.variant=dcgan,lsgan"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no MLflow store, nothing queued


def test_table_sorts_by_fid_and_reports_failures_with_their_error() -> None:
    def ok(name: str, variant: str, fid: float, champion: bool) -> Result:
        return Result(name, [f"model.variant={variant}", "train.steps=10"], ok=True, champion=champion,
                      train={"img_per_s": 350.4}, eval={"fid": fid, "is": 2.0, "kid": 0.01, "extractor": "domain:ab",
                                                        "num_samples": 100})

    failed = Result("s-3-wgan", ["model.variant=wgan", "train.steps=10"],
                    error=["error: training diverged at step 7", "ERROR: failed to reproduce 'train'"])
    table = format_table([ok("s-1-dcgan", "dcgan", 30.5, False), failed, ok("s-2-lsgan", "lsgan", 20.25, True)],
                         ["model.variant"])
    lines = table.splitlines()
    assert lines[0].split() == ["experiment", "model.variant", "FID", "IS", "KID", "img/s", "champion"]
    assert lines[1].split() == ["s-2-lsgan", "lsgan", "20.250", "2.000", "0.01000", "350", "yes"]
    assert lines[2].split() == ["s-1-dcgan", "dcgan", "30.500", "2.000", "0.01000", "350", "no"]
    assert lines[3].split() == ["s-3-wgan", "wgan", "failed", "-", "-", "-", "-"]
    assert "domain:ab features, 100 samples" in table
    assert "s-3-wgan failed:\n    error: training diverged at step 7" in table


@pytest.mark.e2e
def test_sweep_runs_dvc_experiments_nested_under_one_mlflow_run(tmp_path: Path) -> None:
    """Four configurations: two train, two fail in prepare (a missing file passes validation, which cannot
    know): the failures are reported with their error while the others finish."""
    import mlflow

    repo = make_project(tmp_path / "project", tiny_params(SMALL))
    out = run(["gans", "sweep", "-S", "model.variant=dcgan,lsgan", "-S", "data.source=digits,npz:no-such-file.npz"],
              repo, timeout=900, check=False)
    assert out.returncode == 1, out.stderr[-3000:]  # some configurations failed
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("sweep-") and "failed:" not in line]
    assert len(rows) == 4, out.stdout
    good, bad = rows[:2], rows[2:]
    assert sorted(r[1] for r in good) == ["dcgan", "lsgan"] and {r[2] for r in good} == {"digits"}
    fids = [float(r[3]) for r in good]
    assert all(f > 0 for f in fids) and fids == sorted(fids), out.stdout  # best FID first
    assert sorted(r[-1] for r in good) == ["no", "yes"]  # one champion
    assert all(r[3:] == ["failed", "-", "-", "-", "-"] for r in bad), out.stdout
    errors = out.stdout.split("failed:\n", 1)[1]
    assert "npz file 'no-such-file.npz' does not exist" in errors
    names = sorted(r[0] for r in good)

    # MLflow: one parent run, one nested run per experiment, named after it, with its lineage as artifacts.
    uri = f"sqlite:///{repo}/mlflow.db"
    client = mlflow.MlflowClient(uri, uri)
    runs = client.search_runs([client.get_experiment_by_name("gans").experiment_id])
    parents = [r for r in runs if r.data.tags.get("gans.sweep") == "true"]
    assert len(parents) == 1 and parents[0].info.status == "FAILED"  # not every configuration finished
    parent = parents[0]
    assert parent.data.params["sweep.model.variant"] == "dcgan,lsgan"
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(children) == names
    for row in good:
        child = children[row[0]]
        assert child.data.metrics["eval_fid"] == pytest.approx(float(row[3]), abs=1e-3)
        config = {a.path for a in client.list_artifacts(child.info.run_id, "config")}
        metrics = {a.path for a in client.list_artifacts(child.info.run_id, "metrics")}
        assert {"config/params.yaml", "config/dvc.lock", "config/params.resolved.yaml"} <= config
        assert {f"metrics/{m}.json" for m in ("train", "eval", "evaluator", "register")} <= metrics
    assert parent.data.metrics["best_fid"] == pytest.approx(fids[0], abs=1e-3)
    versions = client.search_model_versions("name='gan-generator'")  # each version names its experiment
    assert sorted(v.tags.get("dvc_experiment") for v in versions) == names
    assert all(f"DVC experiment {v.tags['dvc_experiment']}" in v.description for v in versions)
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"sweep.txt", "sweep.json"}

    # DVC: the experiments are git refs that exp show and metrics diff read; the workspace is untouched.
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    exps = {e["revs"][0]["name"] for b in shown for e in (b.get("experiments") or [])}
    assert set(names) <= exps
    diff = run(["dvc", "metrics", "diff", *names], repo).stdout
    assert "metrics/eval.json" in diff and "fid" in diff
    assert run(["git", "status", "--porcelain"], repo).stdout.strip() == ""


def test_table_follows_the_family_of_the_configurations() -> None:
    """Translators: the family's headline columns (FID, label preservation, cycle error), best FID first."""
    def ok(name: str, fid: float, lp: float) -> Result:
        return Result(name, [f"model.overrides.cycle_weight={name[-1]}"], ok=True, train={"img_per_s": 20.0},
                      eval={"family": "translation", "primary_metric": "fid", "higher_is_better": False, "fid": fid,
                            "label_preservation": lp, "cycle_error": 0.05, "extractor": "domain:cd",
                            "num_samples": 680})

    table = format_table([ok("s-1", 9.0, 0.7), ok("s-2", 3.0, 0.9)], ["model.overrides.cycle_weight"])
    lines = table.splitlines()
    assert lines[0].split() == ["experiment", "model.overrides.cycle_weight", "FID", "label", "preservation",
                                "cycle", "error", "img/s", "champion"]
    assert lines[1].split()[:4] == ["s-2", "2", "3.000", "0.900"] and lines[2].split()[0] == "s-1"
