"""A sweep over a Prefect work pool with 1 worker and with 2; writes the "Sweeps on a work pool" section of
bench/RESULTS.md.

    python bench/pool.py [--configs 4] [--steps 40]

A real `prefect server`, a process pool and `prefect worker start --limit 1` processes; the same 4-configuration
`gans sweep --pool` (the tests' tiny workload on `digits`, train.steps = S, S+1, ...) first with one worker, then
in a fresh project with two. The per-run overhead of a worker is the flow run's wall time (its clone, the
flow engine, `dvc exp run` and `dvc exp push`) against the same configuration as a plain local `dvc exp run`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import ROOT, machine, make_project, run, subprocess_env, tiny_params, timed, write_section  # noqa: E402

WORK = ROOT / "bench/out/pool"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL what has not gone after 30 s (a worker can sit in its shutdown)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _project(name: str, steps: int) -> Path:
    store = f"sqlite:///{WORK / name / 'mlflow.db'}"
    return make_project(WORK / name / "project", tiny_params({"train": {"steps": steps, "eval_every": 0},
                                                             "tracking": {"uri": store}}))


def _sweep(name: str, workers: int, configs: int, steps: int, env: dict[str, str]) -> float:
    repo = _project(name, steps)
    pool = f"bench-{name}"
    run([str(BIN / "prefect"), "work-pool", "create", pool, "--type", "process"], repo, **env)
    procs = []
    for i in range(workers):
        folder = WORK / name / f"worker{i}"
        folder.mkdir(parents=True)
        with (WORK / name / f"worker{i}.log").open("w") as log:
            procs.append(subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", pool, "--limit", "1"],
                                          cwd=folder, env=subprocess_env(**env), stdout=log, stderr=subprocess.STDOUT))
    values = ",".join(str(steps + i) for i in range(configs))
    try:
        seconds, proc = timed([str(BIN / "gans"), "sweep", "--pool", pool, "-S", f"train.steps={values}"], repo,
                              timeout=3600, **env)
    finally:
        _stop(procs)
    assert "failed" not in proc.stdout, proc.stdout
    print(f"{workers} worker(s): {seconds:.0f} s\n{proc.stdout}", flush=True)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    port, home = _free_port(), WORK / "prefect-home"
    env = {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_HOME": str(home),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    home.mkdir()
    with (WORK / "server.log").open("w") as log:
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                   str(port)], env=subprocess_env(**env), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the prefect server did not start"
            time.sleep(0.5)
        local_repo = _project("local", args.steps)
        run([sys.executable, "-m", "dvc", "repro"], local_repo, timeout=3600)  # the data stages, not timed
        local_s, _ = timed([sys.executable, "-m", "dvc", "exp", "run", "-n", "plain", "-S",
                            f"train.steps={args.steps + 1}"], local_repo, timeout=3600)
        fresh_s, _ = timed([sys.executable, "-m", "dvc", "exp", "run", "-n", "fresh", "-S",
                            f"train.steps={args.steps + 1}"], _project("fresh", args.steps), timeout=3600)
        one = _sweep("one", 1, args.configs, args.steps, env)
        two = _sweep("two", 2, args.configs, args.steps, env)
    finally:
        _stop([server])
    per_run = one / args.configs
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    command = "python bench/pool.py" + "".join(
        f" --{k} {v}" for k, v, d in (("configs", args.configs, 4), ("steps", args.steps, 40)) if v != d)
    body = (f"Machine: {machine()}. Command: `{command}`. Load average when written: {load} (at the start: "
            f"{load0:.1f}). A real `prefect server`, a process pool, `prefect worker start --limit 1`; "
            f"`gans sweep --pool` of {args.configs} configurations (the tests' tiny workload on `digits`, "
            f"train.steps = {args.steps}..{args.steps + args.configs - 1}), each a flow run that clones the "
            f"commit, runs `dvc exp run` (every stage) and `dvc exp push`.\n\n"
            "| setup | wall time | per configuration |\n| --- | ---: | ---: |\n"
            f"| 1 worker | {one:.0f} s | {per_run:.0f} s |\n"
            f"| 2 workers | {two:.0f} s | {two / args.configs:.0f} s |\n\n"
            f"- 2 workers / 1 worker: {one / two:.2f}x faster (two runs share the 2 cores here: a worker per "
            "machine is what scales).\n"
            f"- Per-run overhead of a worker: {per_run:.0f} s per configuration on 1 worker against {fresh_s:.0f} s "
            f"for the same `dvc exp run` (every stage) in a fresh local project: {per_run - fresh_s:.0f} s for the "
            f"clone, the flow engine and the push. A local experiment whose data stages are already done takes "
            f"{local_s:.0f} s (a worker's clone has no DVC cache: give workers a DVC remote and `--workdir`, "
            "or a shared cache, to skip them).")
    write_section("Sweeps on a work pool", body)
    print(body)


if __name__ == "__main__":
    main()
