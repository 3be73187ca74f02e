"""Fault injection, shared by tests/test_fault_injection.py (which asserts that nothing goes wrong) and
bench/faults.py (which counts what goes wrong, for this code and an older revision side by side).

`dvc repro` is killed (SIGKILL, the whole process group) at seeded random moments of the train and register
stages, then rerun. After every kill the checkpoints are read: the newest step on disk must never go back,
and every checkpoint must read. At the end, after a clean `dvc repro`, :func:`audit` lists every way in which
generator.pt, eval.json, the checkpoints and the registry disagree."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scratch import run, subprocess_env

STAGE_SECONDS = {"train": 12.0, "register": 8.0}  # kill moments are drawn over about this long a stage


def schedule(seed: int, kills: int) -> list[tuple[str, float]]:
    """(stage, delay in seconds after the stage starts), train twice as often as register."""
    rng = random.Random(seed)
    return [(stage, rng.random() * STAGE_SECONDS[stage])
            for stage in (rng.choice(["train", "train", "register"]) for _ in range(kills))]


def checkpoint_state(folder: Path) -> tuple[int, list[str]]:
    """(the newest checkpoint's step, or -1; the checkpoints that do not read). Steps come from the names
    (``ckpt-00000060.pt``), whichever code wrote them."""
    from gans.io import load_torch

    found = sorted((int(p.stem.split("-")[1]), p) for p in folder.glob("ckpt-*.pt"))
    bad = []
    for _, path in found:
        try:
            load_torch(path)
        except Exception as err:  # noqa: BLE001 - any failure to read is what is counted
            bad.append(f"{path.name}: {type(err).__name__}")
    bad += [f"unreadable/{p.name}" for p in folder.glob("unreadable/*")]
    return (found[-1][0] if found else -1), bad


def repro_killed(repo: Path, stage: str, delay: float, log: Path, env: dict[str, str]) -> bool:
    """Start `dvc repro`; once ``stage`` starts, wait ``delay`` s and SIGKILL the process group. False when the
    pipeline finished (or failed) before the kill."""
    with open(log, "w") as out:
        proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=subprocess_env(**env), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while f"Running stage '{stage}'" not in log.read_text():
            if proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise AssertionError(f"stage {stage} never started:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        time.sleep(delay)
        if proc.poll() is not None:
            return False
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


@dataclass
class Outcome:
    landed: list[tuple[str, float]] = field(default_factory=list)  # kills that hit a running stage
    finished: int = 0  # runs that ended before their kill
    repaired: int = 0  # kills that cut dvc.lock while DVC rewrote it (moved aside, as `gans repair-lock` does)
    problems: list[str] = field(default_factory=list)  # every inconsistency found, each one line
    steps: int = 0  # train.steps at the end
    versions: int = 0


def inject(repo: Path, params: dict, seed: int, kills: int, logs: Path, env: dict[str, str] | None = None) -> Outcome:
    """Run the kill schedule on ``repo`` (whose params.yaml is ``params``), then a clean `dvc repro`, and audit.
    A run that finishes before its kill adds 30 steps, so the next kill has training and a registration to hit.
    ``env`` is added to the stages' environment (PYTHONPATH=repo runs the project's copy of the code rather
    than the installed one)."""
    env = env or {}
    out = Outcome()
    newest = -1
    for i, (stage, delay) in enumerate(schedule(seed, kills)):
        log = logs / f"repro-{i}.log"
        out.repaired += _repair_lock(repo)
        if repro_killed(repo, stage, delay, log, env):
            out.landed.append((stage, round(delay, 2)))
        else:
            out.finished += 1
            text = log.read_text()
            if "ERROR" in text or "Traceback" in text:
                out.problems.append(f"run {i} failed without a kill: {_last_line(text)}")
            params["train"]["steps"] += 30
            (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        now, bad = checkpoint_state(repo / "models/checkpoints")
        out.problems += [f"after kill {i} ({stage} at {delay:.1f} s): unreadable checkpoint {b}" for b in bad]
        if now < newest:
            out.problems.append(f"after kill {i} ({stage} at {delay:.1f} s): newest checkpoint went from step "
                                f"{newest} to {now}")
        newest = max(newest, now)
    out.repaired += _repair_lock(repo)
    final = run(["dvc", "repro"], repo, check=False, **env)
    if final.returncode != 0 or "Traceback" in final.stderr:
        out.problems.append(f"the final dvc repro failed: {_last_line(final.stderr)}")
    out.steps = params["train"]["steps"]
    out.problems += audit(repo, out.steps)
    out.versions = _count_versions(repo)
    return out


def _repair_lock(repo: Path) -> int:
    """1 when a kill left dvc.lock cut (DVC rewrites it in place), moved aside as a user would with
    `gans repair-lock` (the flow and `make run` do it themselves); else 0."""
    from pipeline.dvcrun import repair_lock

    return int(repair_lock(repo) is not None)


def audit(repo: Path, steps: int) -> list[str]:
    """Every way generator.pt, eval.json, train.json, the checkpoints and the registry disagree, one line each."""
    import mlflow

    from gans.io import file_hash

    problems = []
    newest, bad = checkpoint_state(repo / "models/checkpoints")
    problems += [f"unreadable checkpoint {b}" for b in bad]
    if newest != steps:
        problems.append(f"newest checkpoint is step {newest}, train.steps is {steps}")
    stale = [str(p.relative_to(repo)) for p in (repo / "models").rglob("*.tmp")]
    if stale:
        problems.append(f"stale temporaries left: {stale}")
    ev = _json(repo / "metrics/eval.json")
    tr = _json(repo / "metrics/train.json")
    generator = file_hash(repo / "models/generator.pt")
    if "generator_hash" not in ev:
        problems.append("eval.json does not record which generator.pt it scored")
    elif ev["generator_hash"] != generator:
        problems.append("eval.json scored another generator.pt")
    if ev.get("step") != steps or tr.get("steps") != steps:
        problems.append(f"eval.json step {ev.get('step')} / train.json steps {tr.get('steps')}, expected {steps}")

    store = f"sqlite:///{repo}/mlflow.db"
    client = mlflow.MlflowClient(store, store)
    versions = client.search_model_versions("name='gan-generator'")
    hashes = [v.tags.get("generator_hash") for v in versions]
    untagged = [v.version for v in versions if "fid" not in v.tags or not v.tags.get("generator_hash")]
    if untagged:
        problems.append(f"versions without their tags: {sorted(untagged, key=int)}")
    tagged = [h for h in hashes if h]
    if len(set(tagged)) != len(tagged):
        problems.append(f"a generator registered twice ({len(tagged)} versions, {len(set(tagged))} generators)")
    try:
        champion = client.get_model_version_by_alias("gan-generator", "champion")
    except mlflow.exceptions.MlflowException:
        return problems + ["no champion"]
    fids = [float(v.tags["fid"]) for v in versions if "fid" in v.tags]
    if "fid" not in champion.tags or float(champion.tags["fid"]) != min(fids):
        problems.append(f"champion v{champion.version} (fid {champion.tags.get('fid')}) is not the best ({min(fids)})")
    current = [v for v in versions if v.tags.get("generator_hash") == generator]
    if not current:
        problems.append("generator.pt is not registered")
    elif "fid" not in current[0].tags or abs(float(current[0].tags["fid"]) - ev.get("fid", float("nan"))) > 1e-6:
        problems.append(f"v{current[0].version}'s fid tag {current[0].tags.get('fid')} is not its eval.json's "
                        f"{ev.get('fid')}")
    register = _json(repo / "metrics/register.json")
    if current and register.get("version") != int(current[0].version):
        problems.append(f"register.json names version {register.get('version')}, generator.pt is "
                        f"v{current[0].version}")
    return problems


def _count_versions(repo: Path) -> int:
    import mlflow

    store = f"sqlite:///{repo}/mlflow.db"
    return len(mlflow.MlflowClient(store, store).search_model_versions("name='gan-generator'"))


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"
