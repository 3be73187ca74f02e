"""Train every preset on mnist5k with the same step budget; write a table to bench/RESULTS.md.

    python bench/variants.py [--steps 1500] [--width 32] [--presets dcgan,wgan-gp] [--ada off] [--jobs 1] [--title ...]
                             [-S model.overrides.lr_g=0.0004 ...]

Each preset runs through the pipeline's own augment, train and evaluate stages
in a scratch folder (bench/out/variants), sharing one prepared data set and one
domain evaluator, so the FIDs are comparable with each other. ``--jobs N``
trains N presets at once, each in its own process with cores/N threads and its
own folder (small networks use two cores poorly, so two one-thread jobs finish
the table sooner; their img/s are then per job, not per machine).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, write_section  # noqa: E402
from gans.families.noise.variants import PRESETS  # noqa: E402
from pipeline import stages  # noqa: E402
from pipeline.params import load_params  # noqa: E402

WORK = ROOT / "bench/out/variants"


def base_overrides(args: argparse.Namespace, work: Path) -> list[str]:
    # Final EMA generator for every preset (no periodic FID picking a best step), one checkpoint at the end.
    return [f"train.steps={args.steps}", f"model.width={args.width}", f"evaluate.num_samples={args.samples}",
            f"tracking.uri=sqlite:///{work}/mlflow.db", "train.sample_every=100000",
            f"train.checkpoint_every={args.steps}", "train.eval_every=0", f"augment.ada.enabled={str(args.ada == 'on').lower()}",
            *args.set]


def run_preset(name: str, base: list[str], work: Path) -> dict:
    """Train and evaluate one preset in ``work`` (the current folder)."""
    params = load_params(ROOT / "params.yaml", base + [f"model.variant={name}"])
    started = time.perf_counter()
    stages.augment(params)  # the online augmentation spec the trainer reads comes from params.yaml
    train = stages.train(params)
    ev = stages.evaluate(params)
    history = _history(work)
    grad = [r["grad_norm"] for r in history if r.get("grad_norm") not in (None, "")]
    return {"variant": name, "fid": ev["fid"], "is": ev["is"], "kid": ev["kid"],
            "cond": ev.get("conditional_accuracy", ev.get("cluster_accuracy")), "purity": ev.get("cluster_purity"),
            "cond_kind": "accuracy" if "conditional_accuracy" in ev else "code" if "cluster_accuracy" in ev else "",
            "img_per_s": train["img_per_s"], "seconds": time.perf_counter() - started,
            "grad_norm": statistics.fmean(grad[-10:]) if grad else None, "threads": torch.get_num_threads()}


def _history(work: Path) -> list[dict]:
    # grad_norm is not in plots/train.csv; read it from the newest checkpoint's history.
    from gans.io import load_torch

    ckpts = sorted((work / "models/checkpoints").glob("ckpt-*.pt"))
    return load_torch(ckpts[-1])["history"] if ckpts else []


def table(rows: list[dict]) -> str:
    lines = ["| variant | domain FID | IS | KID | conditional accuracy (InfoGAN: code-to-digit accuracy, purity) "
             "| critic grad norm | img/s | seconds |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        cond = "" if r["cond"] is None else f"{r['cond']:.3f}" if r["cond_kind"] == "accuracy" else \
            f"{r['cond']:.3f} (purity {r['purity']:.3f})"
        grad = f"{r['grad_norm']:.3f}" if r["grad_norm"] is not None else ""
        lines.append(f"| {r['variant']} | {r['fid']:.2f} | {r['is']:.2f} | {r['kid']:.3f} | {cond} | {grad} | "
                     f"{r['img_per_s']:.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def _job_folder(slot: int) -> Path:
    """A folder for one parallel job: links to the shared prepared data and evaluator, its own models/."""
    folder = WORK / f"job-{slot}"
    (folder / "models").mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    for link, target in ((folder / "data/prepared", WORK / "data/prepared"),
                         (folder / "models/evaluator.pt", WORK / "models/evaluator.pt")):
        if not link.is_symlink():
            if link.is_dir():
                shutil.rmtree(link)
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    return folder


def _run_in_subprocess(name: str, args: argparse.Namespace, slots: queue.Queue, threads: int) -> dict:
    slot = slots.get()
    try:
        folder = _job_folder(slot)
        cmd = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--width", str(args.width),
               "--samples", str(args.samples), "--ada", args.ada, "--folder", str(folder),
               *(f"--set={kv}" for kv in args.set)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        with open(folder / f"{name}.log", "w") as log:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=folder)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            tail = (folder / f"{name}.log").read_text()[-2000:]
            raise RuntimeError(f"{name} failed (exit {done.returncode}); log {folder / f'{name}.log'}:\n{tail}")
        return json.loads(lines[-1])
    finally:
        slots.put(slot)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated preset names")
    ap.add_argument("--ada", choices=("on", "off"), default="off",
                    help="ADA during training (off: the papers' methods as published; ADA costs FID at this "
                         "budget, see the ADA section of RESULTS.md)")
    ap.add_argument("--jobs", type=int, default=1, help="presets trained at once (each with cores/jobs threads)")
    ap.add_argument("--title", default="Variants")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params override for every preset of the run (e.g. model.overrides.n_critic=2)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: train one preset in --folder, print its row
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        folder = Path(args.folder)
        os.chdir(folder)
        print(json.dumps(run_preset(args.worker, base_overrides(args, folder), folder)), flush=True)
        return
    names = [n for n in args.presets.split(",") if n]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        ap.error(f"--presets: unknown {', '.join(unknown)}; `gans variants` lists the presets")
    WORK.mkdir(parents=True, exist_ok=True)
    os.chdir(WORK)
    params = load_params(ROOT / "params.yaml", base_overrides(args, WORK))
    if not Path("models/evaluator.pt").is_file():
        stages.prepare(params)
        stages.evaluator(params)
    command = f"python bench/variants.py --steps {args.steps} --width {args.width} --samples {args.samples}" + \
        (f" --jobs {args.jobs}" if args.jobs > 1 else "") + \
        (f" --presets {args.presets}" if sorted(names) != sorted(PRESETS) else "") + \
        "".join(f" -S {kv}" for kv in args.set)
    rows: list[dict] = []

    def record(row: dict) -> None:
        rows.append(row)
        rows.sort(key=lambda r: list(PRESETS).index(r["variant"]))  # the table in `gans variants` order
        print(json.dumps(row), flush=True)
        threads = rows[0].get("threads", "?")
        body = (f"Machine: {machine()}. Workload: each preset trained on mnist5k (4,500 training images, 32x32) "
                f"for {args.steps} generator steps at batch 64 (n_critic discriminator steps each), width "
                f"{args.width}, ADA {args.ada}, each preset's own learning rates and schedule, then its final EMA generator evaluated on "
                f"{args.samples} samples against the 500 holdout images with the domain evaluator. "
                f"{args.jobs} preset(s) trained at once, {threads} thread(s) each"
                f"{' (img/s are per job, with the other job running)' if args.jobs > 1 else ''}. "
                f"Command: `{command}`.\n\n" + table(rows))
        write_section(args.title, body)

    if args.jobs <= 1:
        for name in names:
            record(run_preset(name, base_overrides(args, WORK), WORK))
        return
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    slots: queue.Queue = queue.Queue()
    for slot in range(args.jobs):
        slots.put(slot)
    failures = []
    with ThreadPoolExecutor(args.jobs) as pool:
        # Slowest first (self-attention, then the n_critic 5 critics), so no job is left with a long one at the end.
        order = sorted(names, key=lambda n: (PRESETS[n].architecture == "sagan", PRESETS[n].n_critic), reverse=True)
        futures = {pool.submit(_run_in_subprocess, name, args, slots, threads): name for name in order}
        for future in as_completed(futures):
            name = futures[future]
            try:
                record(future.result())
            except RuntimeError as err:
                failures.append(name)
                print(err, file=sys.stderr, flush=True)
    if failures:
        sys.exit(f"presets that failed: {', '.join(failures)}")


if __name__ == "__main__":
    main()
