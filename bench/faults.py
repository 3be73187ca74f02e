"""Fault injection, before and after: writes the "Fault injection" section of bench/RESULTS.md.

    python bench/faults.py [--before REV] [--seeds 19] [--kills 10]

The kill schedule of tests/test_fault_injection.py (tests/faults.py: `dvc repro` SIGKILLed at seeded moments
of the train and register stages, then rerun; after the last kill a clean `dvc repro` and an audit of
checkpoints, generator.pt, eval.json and the registry), run on the code of revision REV and on this tree, one
after the other on the same machine, with the same tiny workload. Each line the audit finds is counted as one
inconsistency. The kill moments are seeded but land on whatever the stage is doing at that moment, which
depends on the machine's speed: the counts of one seed are a sample, not a fixed figure.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, make_project, tiny_params, write_section  # noqa: E402
from faults import inject  # noqa: E402  (tests/, on the path through bench.common)

BEFORE = "6195d49"  # main before the reliability work of issue 19


def with_code_of(repo: Path, rev: str) -> None:
    """Replace the project's code (gans/, pipeline/, dvc.yaml) by that of git revision ``rev``, and commit."""
    archive = subprocess.run(["git", "archive", rev, "gans", "pipeline", "dvc.yaml"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    for name in ("gans", "pipeline"):
        shutil.rmtree(repo / name)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(repo, filter="data")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, capture_output=True)
    subprocess.run(["git", "commit", "-qm", f"code of {rev}"], cwd=repo, check=True, capture_output=True)


def one(rev: str | None, seed: int, kills: int, work: Path) -> dict:
    params = tiny_params({"train": {"steps": 60, "checkpoint_every": 5, "keep_checkpoints": 2, "eval_every": 30}})
    repo = make_project(work / "project", params)
    if rev:
        with_code_of(repo, rev)
    started = time.perf_counter()
    # `gans` (the stages' command) would import the installed code: PYTHONPATH runs the project's copy
    outcome = inject(repo, params, seed=seed, kills=kills, logs=work, env={"PYTHONPATH": str(repo)})
    return {"outcome": outcome, "seconds": time.perf_counter() - started}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="the git revision to compare with (default: %(default)s)")
    ap.add_argument("--seeds", default="19", help="comma-separated kill schedule seeds (the test uses 19)")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--title", default="Fault injection")
    args = ap.parse_args()
    before = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    rows, details = [], []
    load = Path("/proc/loadavg").read_text().split()[:3]
    for seed in (int(s) for s in args.seeds.split(",")):
        for label, rev in ((f"before ({before})", before), ("this tree", None)):
            with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
                r = one(rev, seed, args.kills, Path(tmp))
            o = r["outcome"]
            print(f"{label}, seed {seed}: {len(o.problems)} inconsistencies", *o.problems, sep="\n  ", flush=True)
            rows.append(f"| {label} | {seed} | {len(o.landed)} ({sum(s == 'train' for s, _ in o.landed)} train, "
                        f"{sum(s == 'register' for s, _ in o.landed)} register) | {o.finished} | {o.versions} | "
                        f"{len(o.problems)} | {r['seconds']:.0f} |")
            details += [f"- {label}, seed {seed}: {p}" for p in o.problems]
    body = "\n".join([
        f"`python bench/faults.py --before {args.before} --seeds {args.seeds} --kills {args.kills}` on {machine()} "
        f"(load average before: {' '.join(load)}). Tiny workload (the tests' 16x16 mnist5k, 60 steps + 30 per run "
        "that finished before its kill, a checkpoint every 5 steps, 2 kept). A kill lands when the stage is still "
        "running at its moment; every line the audit prints counts as one inconsistency. Random moments rarely "
        "hit the narrow windows (between logging a model and tagging its version, between best.pt and its "
        "checkpoint): tests/test_registry_store.py and tests/test_checkpoints.py kill or stop there on purpose.",
        "",
        "| code | seed | kills landed | runs that finished first | registered versions | inconsistencies | "
        "seconds |", "| --- | ---: | --- | ---: | ---: | ---: | ---: |", *rows, "",
        "Inconsistencies found:" if details else "No inconsistency found.", *details])
    write_section(args.title, body)
    print(body)


if __name__ == "__main__":
    main()
