"""Fault injection: `dvc repro` killed (SIGKILL, the whole process group) at 6 seeded random moments of the
train and register stages, then rerun to the end (tests/faults.py). After every kill no checkpoint is lost (the
newest step on disk never goes back, every checkpoint reads), and at the end generator.pt, eval.json, the
checkpoints and the registry agree (a dvc.lock that a kill cut while DVC rewrote it is moved aside first, as
`gans repair-lock`, the flow and `make run` do): eval.json scored this generator.pt, every version carries its tags, no
generator file is registered twice, and the champion's FID tag is its own evaluation's and the best.
bench/faults.py runs the same schedule on an older revision and counts what went wrong there."""

from __future__ import annotations

from pathlib import Path

import pytest

from faults import inject
from scratch import make_project, tiny_params

pytestmark = pytest.mark.e2e

KILLS = 6  # bench/faults.py runs longer schedules on several seeds


def test_kills_during_train_and_register_lose_nothing_and_leave_a_consistent_registry(tmp_path: Path) -> None:
    params = tiny_params({"train": {"steps": 60, "checkpoint_every": 5, "keep_checkpoints": 2, "eval_every": 30}})
    repo = make_project(tmp_path / "project", params)
    outcome = inject(repo, params, seed=19, kills=KILLS, logs=tmp_path)
    assert len(outcome.landed) >= KILLS // 2, f"too few kills landed in a stage: {outcome.landed}"
    assert not outcome.problems, "\n".join(outcome.problems)
    assert outcome.versions >= 1
    print(f"kills landed: {outcome.landed}; runs that finished before their kill: {outcome.finished}; "
          f"dvc.lock cut by a kill and moved aside: {outcome.repaired}; "
          f"versions: {outcome.versions}; final step {outcome.steps}")
