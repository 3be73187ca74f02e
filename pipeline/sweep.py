"""``gans sweep``: a grid of configurations, each a DVC experiment and a nested MLflow run, compared in a table.

    gans sweep -S model.variant=dcgan,lsgan -S train.steps=300 --jobs 1

Comma-separated values expand into the cartesian product of configurations (a
value that is a YAML list or mapping, like ``[xflip]``, is one value; commas
inside brackets or quotes never split). Every configuration is validated
before anything starts. Each is queued as ``dvc exp run --queue -n NAME -S
...`` and the queue runs with ``dvc exp run --run-all -j JOBS``, so DVC
records every result as an experiment (``dvc exp show``, ``dvc metrics diff``)
and reuses unchanged stages from its cache. The sweep opens a parent MLflow
run and names it in ``$GANS_PARENT_RUN_ID``; the train, evaluate and register
stages nest their run under it. The table lists FID, IS, KID, img/s and the
champion per configuration, best FID first, failures last with their error.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gans.config import ConfigError
from pipeline import dvcrun
from pipeline.params import Params, load_params, parse_override
from pipeline.stages import StageError
from pipeline.tracking import PARENT_RUN_ENV

OPEN, CLOSE = "[{", "]}"


def split_values(raw: str) -> list[str]:
    """``'dcgan,lsgan'`` -> ``['dcgan', 'lsgan']``. Commas inside ``[...]``, ``{...}`` or quotes do not split:
    ``'[xflip],[]'`` -> ``['[xflip]', '[]']``, ``'[r1,gp]'`` and ``'"color,cutout"'`` stay one value."""
    values, depth, quote, current = [], 0, "", ""
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in OPEN:
            depth += 1
        elif ch in CLOSE:
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(current)
            current = ""
            continue
        current += ch
    values.append(current)
    return [v.strip() for v in values]


@dataclass(frozen=True)
class Grid:
    """The swept keys (more than one value) and every configuration as ``key=value`` overrides."""

    swept: list[str]
    configs: list[list[str]]


def expand(sets: Sequence[str]) -> Grid:
    """``['model.variant=dcgan,lsgan', 'train.steps=10']`` -> two configurations of two overrides each."""
    axes: dict[str, list[str]] = {}
    for text in sets:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"-S {text!r}: expected KEY=VALUE or KEY=V1,V2,..., for example -S model.variant=dcgan,lsgan")
        if key in axes:
            raise ConfigError(f"-S {key}: given twice; list its values once, comma-separated")
        if key.split(".")[0] == "tracking":
            raise ConfigError(f"-S {key}: tracking.* cannot be swept or overridden by a sweep: every configuration "
                              "logs to the sweep's MLflow store (set it in params.yaml)")
        values = split_values(raw)
        if len(values) > 1 and any(not v for v in values):
            raise ConfigError(f"-S {text!r}: an empty value in the list (write '' for an empty string)")
        if len(set(values)) != len(values):
            raise ConfigError(f"-S {text!r}: a value is repeated")
        axes[key] = values
    swept = [k for k, v in axes.items() if len(v) > 1]
    configs = [[f"{k}={v}" for k, v in zip(axes, combo)] for combo in itertools.product(*axes.values())]
    return Grid(swept, configs)


def hydra_literal(value: Any) -> str:
    """``value`` written in the Hydra override grammar that ``dvc exp run -S`` parses (strings always quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if "${" in value:
            raise ConfigError(f"{value!r}: '${{' would be read as an interpolation by dvc exp run")
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ",".join(hydra_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_literal(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"{value!r}: a {type(value).__name__} cannot be passed to dvc exp run -S")


def dvc_override(text: str) -> str:
    """``'augment.static=[xflip]'`` -> ``"++augment.static=['xflip']"``, for ``dvc exp run -S``: ``++`` sets a
    key that params.yaml lacks (like ``model.overrides.loss``). Checked by parsing it back as DVC will."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path, value = parse_override(text)
    key = ".".join(path)
    try:
        literal = hydra_literal(value)
        parsed = OverridesParser.create().parse_override(f"++{key}={literal}")
        same = not parsed.is_sweep_override() and parsed.value() == value
    except ConfigError as err:
        raise ConfigError(f"-S {text}: {err}") from None
    except Exception as err:  # noqa: BLE001 - any parser error means DVC cannot take this value
        raise ConfigError(f"-S {text}: dvc exp run cannot take this value ({type(err).__name__})") from None
    if not same:
        raise ConfigError(f"-S {text}: dvc exp run would read this value as {parsed.value()!r}, not {value!r}")
    return f"++{key}={literal}"


def validate(params_file: str, grid: Grid) -> list[Params]:
    """Every configuration loaded and checked, before anything runs; the error names the configuration."""
    out = []
    for i, config in enumerate(grid.configs, 1):
        try:
            out.append(load_params(params_file, config))
            for text in config:
                dvc_override(text)
        except ConfigError as err:
            raise ConfigError(f"configuration {i} ({' '.join(config)}): {err}") from None
    return out


# ---------------------------------------------------------------- running


@dataclass
class Result:
    """One configuration: its experiment, and what it wrote (or why it failed)."""

    name: str
    config: list[str]
    ok: bool = False
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    register: dict[str, Any] = field(default_factory=dict)
    champion: bool = False
    note: str = ""
    error: list[str] = field(default_factory=list)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60, check=False)


def preflight(root: Path, params_file: str) -> str:
    """Fail early, naming the fix, where ``dvc exp run`` would fail later. Returns the baseline commit."""
    if not dvcrun.is_dvc_project(root):
        raise ConfigError("gans sweep runs DVC experiments: run it in a DVC project (a .dvc folder and dvc.yaml; "
                          "`dvc init`)")
    if Path(params_file).resolve() != root / "params.yaml":
        raise ConfigError(f"--params {params_file}: dvc exp run reads the project's params.yaml; put the base "
                          "values there and sweep with -S")
    head = _git(root, "rev-parse", "--verify", "HEAD")
    if head.returncode != 0:
        raise ConfigError("gans sweep needs a git repository with at least one commit (DVC keeps experiments as "
                          "git refs): git init && git add -A && git commit -m init")
    if _git(root, "var", "GIT_COMMITTER_IDENT").returncode != 0:
        raise ConfigError("git has no identity to commit experiments with: set git config user.name and "
                          "user.email")
    _wait_for_idle_queue(root)
    return head.stdout.strip()


def _wait_for_idle_queue(root: Path, timeout: float = 60) -> None:
    """The sweep runs DVC's queue: it must hold nothing else, and workers left from an earlier run (which
    carry that run's environment) must have gone (they exit a few seconds after the queue empties)."""
    deadline = time.monotonic() + timeout
    while True:
        out = dvcrun.run("queue", "status", cwd=root).stdout
        busy = [line for line in out.splitlines() if re.search(r"\s(Queued|Running)\s*$", line)]
        if busy:
            raise ConfigError("the DVC experiment queue already holds queued or running experiments "
                              f"({len(busy)}; see `dvc queue status`): let them finish or `dvc queue remove "
                              "--queued`, then run the sweep")
        workers = re.search(r"Worker status: (\d+) active, (\d+) idle", out)
        if not workers or workers.group(1) == workers.group(2) == "0":
            return
        if time.monotonic() > deadline:
            raise ConfigError("DVC queue workers of an earlier run are still up; wait a little or `dvc queue stop`")
        time.sleep(2)


def experiment_name(prefix: str, index: int, config: list[str], swept: list[str]) -> str:
    """``sweep-3f9a1c-1-dcgan``: unique per sweep, readable in ``dvc exp show``, a valid git ref name."""
    values = [c.partition("=")[2] for c in config if c.partition("=")[0] in swept]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(values)).strip("._-")[:40].rstrip("._-")
    return f"{prefix}-{index}" + (f"-{slug}" if slug else "")


@dataclass(frozen=True)
class Sweep:
    parent_run_id: str
    swept: list[str]
    results: list[Result]

    def table(self) -> str:
        return format_table(self.results, self.swept)


def run_sweep(params_file: str, sets: Sequence[str], *, jobs: int = 1, pool: str | None = None,
              heartbeat: int | None = None, log: TextIO = sys.stderr) -> Sweep:
    """Validate, queue every configuration, run the queue under a parent MLflow run, collect the results.
    With ``pool``, each configuration is a flow run on that Prefect work pool instead (pipeline.sweep_pool),
    sending a heartbeat every ``heartbeat`` s (a run that stops sending them is marked crashed)."""
    if jobs < 1:
        raise ConfigError(f"--jobs: got {jobs}; expected 1 or more")
    if pool and jobs != 1:
        raise ConfigError("--jobs: with --pool the pool's workers (and its concurrency limit) decide how many run "
                          "at a time; leave --jobs out")
    if heartbeat is not None and not pool:
        raise ConfigError("--heartbeat: only with --pool (runs on workers send heartbeats)")
    if pool:
        from pipeline.flows import HEARTBEAT_DEFAULT, heartbeat_env

        heartbeat = HEARTBEAT_DEFAULT if heartbeat is None else heartbeat
        heartbeat_env(heartbeat)  # a bad value fails before anything starts
    grid = expand(sets)
    params = validate(params_file, grid)
    root = Path.cwd().resolve()
    baseline = preflight(root, params_file)
    if pool:
        from pipeline.flows import check_api, pinned_source, require_shared_tracking

        require_shared_tracking(params[0].tracking.uri, "--pool")
        check_api("start it (prefect server start), then run the sweep again")
        pinned_source(root)  # uncommitted changes would not reach the workers
    client, parent = _open_parent(params[0], grid, baseline)
    # On a pool, names follow the commit and the grid, so that running the same sweep again reuses what an
    # earlier one finished (a lost worker's configuration runs again, the others do not); locally, the parent.
    prefix = f"sweep-{_grid_key(baseline, grid) if pool else parent[:6]}"
    results = [Result(experiment_name(prefix, i, c, grid.swept), c) for i, c in enumerate(grid.configs, 1)]
    print(f"sweep: {len(results)} configurations as DVC experiments ({jobs} at a time); MLflow parent run "
          f"{parent} in experiment {params[0].tracking.experiment!r}", file=log, flush=True)
    status = "FAILED"
    try:
        errors, done = None, []
        if pool:
            from pipeline.sweep_pool import run_on_pool

            done = [r for r in results if _finished(root, baseline, r.name)]
            for r in done:
                print(f"{r.name}: finished by an earlier sweep of this commit and grid, reused", file=log, flush=True)
            errors = run_on_pool(root, pool, {r.name: r.config for r in results if r not in done}, parent, log,
                                 heartbeat) if len(done) < len(results) else {}
        else:
            _queue(root, results, log)
            for line in dvcrun.stream("exp", "run", "--run-all", "-j", str(jobs), cwd=root,
                                      **{PARENT_RUN_ENV: parent}):
                print(line, file=log, flush=True)
        _collect(root, baseline, results, params, client, parent, errors)
        for r in done:
            if r.ok:
                r.note = f"reused: finished by an earlier sweep of this commit (MLflow run {str(r.train['run_id'])[:8]})"
        status = "FINISHED" if all(r.ok for r in results) else "FAILED"
        _log_parent(client, parent, results, grid.swept)
    except KeyboardInterrupt:
        status = "KILLED"
        print("interrupted: flow runs on the pool keep running (cancel them in Prefect's UI or with `prefect "
              "flow-run cancel ID`)" if pool else "interrupted: queued experiments keep running in the background "
              "(`dvc queue status`, `dvc queue kill`)", file=log)
        raise
    except dvcrun.DvcFailed as err:
        raise StageError(str(err)) from None
    finally:
        client.set_terminated(parent, status)
    return Sweep(parent, grid.swept, results)


def _open_parent(params: Params, grid: Grid, baseline: str) -> tuple[Any, str]:
    import mlflow
    from mlflow.entities import Param

    from pipeline import tracking

    exp_id = tracking.configure(params.tracking)
    client = mlflow.MlflowClient()
    name = "sweep " + ", ".join(grid.swept) if grid.swept else "sweep"
    tags = {**tracking.system_tags("sweep"), "mlflow.source.git.commit": baseline, "gans.sweep": "true",
            "sweep.keys": ",".join(grid.swept)}
    run = client.create_run(exp_id, run_name=name, tags=tags)
    values: dict[str, list[str]] = {}
    for config in grid.configs:
        for text in config:
            key, _, value = text.partition("=")
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    client.log_batch(run.info.run_id, params=[Param(f"sweep.{k}", ",".join(v)[:6000]) for k, v in values.items()])
    return client, run.info.run_id


def _queue(root: Path, results: list[Result], log: TextIO) -> None:
    queued: list[str] = []
    for r in results:
        args = ["exp", "run", "--queue", "-n", r.name]
        for text in r.config:
            args += ["-S", dvc_override(text)]
        out = dvcrun.run(*args, cwd=root)
        if out.returncode != 0:
            if queued:
                dvcrun.run("queue", "remove", *queued, cwd=root)
            raise StageError(f"could not queue {r.name} ({' '.join(r.config)}):\n{out.stdout[-2000:]}")
        queued.append(r.name)
        print(f"queued {r.name}: {' '.join(r.config)}", file=log, flush=True)


def _grid_key(baseline: str, grid: Grid) -> str:
    import hashlib

    return hashlib.sha1(json.dumps([baseline, grid.configs]).encode()).hexdigest()[:6]


def _exp_ref(baseline: str, name: str) -> str:
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def _finished(root: Path, baseline: str, name: str) -> bool:
    """The experiment ``name`` of ``baseline`` exists and holds every stage's metrics."""
    return all(_git(root, "cat-file", "-e", f"{_exp_ref(baseline, name)}:metrics/{k}.json").returncode == 0
               for k in ("train", "eval", "register"))


def _show(root: Path, ref: str, path: str) -> dict[str, Any] | None:
    out = _git(root, "show", f"{ref}:{path}")
    return json.loads(out.stdout) if out.returncode == 0 else None


def _collect(root: Path, baseline: str, results: list[Result], params: list[Params], client: Any,
             parent: str, errors: dict[str, list[str]] | None = None) -> None:
    """Read each experiment's metrics from its git ref; the error tail of each that failed (``errors``: what
    the pool's flow runs said, else DVC's queue logs)."""
    champions: dict[str, str | None] = {}
    for r, p in zip(results, params):
        ref = _exp_ref(baseline, r.name)
        files = {k: _show(root, ref, f"metrics/{k}.json") for k in ("train", "eval", "register")}
        if not all(files.values()):
            if errors is not None:
                r.error = errors.get(r.name) or ["the flow run completed but pushed no experiment"]
                continue
            lines = [ln for ln in dvcrun.run("queue", "logs", r.name, cwd=root).stdout.splitlines() if ln.strip()]
            r.error = list(dict.fromkeys(lines[-8:]))[-4:] or ["no experiment was recorded (see `dvc queue status`)"]
            continue
        r.ok, r.train, r.eval, r.register = True, files["train"], files["eval"], files["register"]
        name = r.register["model_name"]
        if name not in champions:
            try:
                champions[name] = str(client.get_model_version_by_alias(name, "champion").version)
            except Exception:  # noqa: BLE001 - no champion (or no such model): nobody is champion
                champions[name] = None
        r.champion = champions[name] == str(r.register["version"])
        run_id = r.train.get("run_id")
        try:
            own = run_id and client.get_run(run_id).data.tags.get("mlflow.parentRunId") == parent
        except Exception:  # noqa: BLE001
            own = False
        if not own:
            r.note = f"cached: DVC restored an earlier result (MLflow run {str(run_id)[:8]})"


def _primary(results: list[Result]) -> tuple[str, bool]:
    """The primary metric and its direction of the configurations' family (FID, lower, by default)."""
    ok = [r for r in results if r.ok]
    if not ok:
        return "fid", False
    return str(ok[0].eval.get("primary_metric", "fid")), bool(ok[0].eval.get("higher_is_better", False))


def _log_parent(client: Any, parent: str, results: list[Result], swept: list[str]) -> None:
    ok = [r for r in results if r.ok]
    metric, higher = _primary(results)
    if ok:
        best = (max if higher else min)(ok, key=lambda r: r.eval[metric])
        client.log_metric(parent, f"best_{metric}", float(best.eval[metric]))
        client.set_tag(parent, "best_experiment", best.name)
    client.log_text(parent, format_table(results, swept), "sweep.txt")
    client.log_dict(parent, [{"experiment": r.name, "config": r.config, "ok": r.ok,
                              **{k: r.eval.get(k) for k in _columns(results)[0]},
                              "img_per_s": r.train.get("img_per_s"), "champion": r.champion,
                              "run_id": r.train.get("run_id"), "error": r.error} for r in results], "sweep.json")


# ---------------------------------------------------------------- the table


def _columns(results: list[Result]) -> tuple[list[str], list[str], list[str]]:
    """(eval keys, headers, formats): the first three headline metrics of the configurations' family, or
    only the primary metric when they belong to several families."""
    from gans.families import family_named

    families = {r.eval.get("family", "noise-to-image") for r in results if r.ok} or {"noise-to-image"}
    if len(families) > 1:
        metric, _ = _primary(results)
        return [metric], [metric], [".3f"]
    headline = family_named(families.pop()).headline[:3]
    return [m.key for m in headline], [m.label for m in headline], [m.fmt for m in headline]


def format_table(results: list[Result], swept: list[str]) -> str:
    """Swept keys, the family's headline metrics, img/s, champion per configuration; best first, failures last."""
    keys = swept or ["config"]
    metrics, headers, formats = _columns(results)
    metric, higher = _primary(results)
    header = ["experiment", *keys, *headers, "img/s", "champion"]
    worst = float("-inf") if higher else float("inf")
    rows = []
    for r in sorted(results, key=lambda r: (not r.ok, (-1 if higher else 1) * r.eval.get(metric, worst))):
        values = dict(c.split("=", 1) for c in r.config)
        cells = [r.name, *[values.get(k, " ".join(r.config)) if swept else " ".join(r.config) for k in keys]]
        if r.ok:
            cells += [_cell(r.eval.get(k), f) for k, f in zip(metrics, formats)]
            cells += [f"{r.train['img_per_s']:.0f}", "yes" if r.champion else "no"]
        else:
            cells += ["failed", *["-"] * (len(metrics) + 1)]
        rows.append(cells)
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines += _footer(results)
    return "\n".join(lines)


def _cell(value: Any, fmt: str) -> str:
    return f"{value:{fmt}}" if isinstance(value, (int, float)) else "-"


def _footer(results: list[Result]) -> list[str]:
    lines = []
    evaluations = sorted({(r.eval["extractor"], r.eval["num_samples"]) for r in results if r.ok})
    if len(evaluations) == 1:
        lines.append(f"\nmetrics on {evaluations[0][0]} features, {evaluations[0][1]} samples")
    elif evaluations:
        lines.append("\nnot comparable: the configurations were evaluated differently ("
                     + "; ".join(f"{e} features, {n} samples" for e, n in evaluations) + ")")
    for r in results:
        if r.note:
            lines.append(f"{r.name}: {r.note}")
        if not r.ok:
            lines.append(f"{r.name} failed:\n" + "\n".join(f"    {line}" for line in r.error))
    return lines
