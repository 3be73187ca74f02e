"""Performance: training throughput vs a bare PyTorch loop, pipeline overhead, serving, peak memory.

    python bench/perf.py [--quick] [--device auto|cpu|cuda] [--parts throughput,translation,pipeline,memory,serving]
    python bench/perf.py --profile dcgan     # torch.profiler tables of ours vs bare (printed, not written)

Writes one section of bench/RESULTS.md per part (titles end in "(quick)" with --quick).

throughput  presets dcgan, wgan-gp, sngan, sagan at 32x32, 1 channel, batch 64 (and 256 on a GPU),
            width 64, on the 5,000 real mnist5k digits. Four arms, timed in interleaved windows
            (rotated order each round, medians over rounds, ratios paired within a round):
              ours ADA off / ours ADA on - the real gans.trainer.Trainer: setup(), then fit()'s loop
                body (train_step with EMA and stats, then Trainer._after_step: logging every
                train.log_every steps to a CSV reporter, checkpoint + sample grid every 250 steps);
                one checkpoint + grid is also timed on its own and shown amortised;
              bare - the same networks (build_networks with the trainer's spec, same init seed), the
                same loss and gradient penalty written inline, plain Adam with the preset's settings,
                the same n_critic, data already a float tensor in memory; no EMA/ADA/stats/checkpoints.
              DataLoader fp32 - what a user writes first: the bare loop in fp32 with batches from a
                shuffling torch DataLoader over the uint8 images on the CPU, default optimiser kernels
                and memory format (the baseline of bf16 + channels_last + fused on a GPU).
            img/s counts real images the discriminator sees (G steps x batch x n_critic), like the
            trainer's own img_per_s. GFLOP per step: torch.utils.flop_counter over one bare step.
translation pix2pix and cyclegan through the trainer against bare loops of the same networks, the same
            interleaved windows (bench/perf_translation.py says what the bare loops leave out).
pipeline    a tiny git+DVC project (the tests' TINY params): `dvc repro` wall time, a second
            `dvc repro` with nothing changed, the stages called in-process (compute), each
            `gans <stage>` CLI call (full run only), and the Prefect flow (`gan_pipeline`) after a
            no-op flow has started Prefect's temporary server.
memory      peak RSS of `gans train` and `gans evaluate` (real stages, default model size on
            mnist5k) in subprocesses; on CUDA also torch.cuda.max_memory_allocated.
serving     `gans serve` (mlflow models serve) on the tiny project's champion: start-up and
            POST /invocations latency for 1 and 16 images; `gans sample` images/s.
compile     (not in the default parts) train.compile on and off for each preset, interleaved.
precision   (not in the default parts) fp32 against bf16 autocast for the first preset, ADA off, batch 64:
            ours and bare in each precision, four arms in interleaved windows, so that the bf16 speed-up
            of the trainer stands beside the speed-up the same networks get in a bare loop (its ceiling).
--width     the noise-to-image networks' width for throughput and precision (64).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
import torch.nn.functional as F

from bench.common import (
    machine,
    make_project,
    run,
    subprocess_env,
    timed,
    tiny_params,
    write_section,
)

PRESETS = ("dcgan", "wgan-gp", "sngan", "sagan")
DEFAULT_PARTS = "throughput,translation,pipeline,memory,serving"
STAGE_NAMES = ("prepare", "augment", "evaluator", "train", "evaluate", "explore", "register")
MARK = "PERF_JSON "
# Per-mode settings: seconds per timing window, interleaved rounds, and the sizes of the other parts.
MODES = {
    "quick": {"window_s": 1.5, "rounds": 3, "warmup": 1, "count_ours": False, "noop_repeats": 1, "cli_stages": False,
              "mem_steps": 10, "mem_samples": 2000, "requests": 20, "sample_images": 1024},
    "full": {"window_s": 5.0, "rounds": 5, "warmup": 2, "count_ours": True, "noop_repeats": 3, "cli_stages": True,
             "mem_steps": 50, "mem_samples": 5000, "requests": 50, "sample_images": 4096},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _emit(payload: dict[str, Any]) -> None:
    """A child process's result: one marked JSON line on stdout."""
    print(MARK + json.dumps(payload), flush=True)


def _parse(proc: subprocess.CompletedProcess) -> dict[str, Any]:
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if not lines:
        raise RuntimeError(f"no result from child:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def _child(name: str, cwd: Path, *args: str, timeout: float = 900) -> dict[str, Any]:
    return _parse(run([sys.executable, str(Path(__file__).resolve()), "--child", name, *args], cwd, timeout=timeout))


# ================================================================ matmul


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int, seconds: float) -> float:
    """GFLOP/s of repeated n x n matmuls in ``dtype`` (2 n^3 FLOP each)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    iters, started = 0, time.perf_counter()
    while True:
        a @ b
        iters += 1
        if iters % 4 == 0 or device.type != "cuda":
            _sync(device)
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                return 2 * n ** 3 * iters / elapsed / 1e9


# ================================================================ throughput: the arms


def _bare_losses(loss: str) -> tuple[Callable, Callable]:
    """(d_loss(real_logits, fake_logits), g_loss(fake_logits)) written out, for the bare loop."""
    if loss == "non-saturating":
        return (lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean()), (lambda f: F.softplus(-f).mean())
    if loss == "wasserstein":
        return (lambda r, f: f.mean() - r.mean()), (lambda f: -f.mean())
    if loss == "hinge":
        return (lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean()), (lambda f: -f.mean())
    raise ValueError(f"the bare loop has no inline version of the {loss!r} loss")


class BareLoop:
    """Plain PyTorch: float images in memory, the preset's loss (+ gradient penalty), Adam, n_critic."""

    def __init__(self, variant, spec, images: torch.Tensor, *, batch_size: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        from gans.families.noise.nets import build_networks

        unsupported = [r for r in variant.regularizers if r not in ("gp", "spectral-norm")]
        if unsupported or variant.optimizer != "adam" or variant.loss_args or variant.conditioning != "none":
            raise ValueError(f"the bare loop does not cover preset {variant.name}")
        torch.manual_seed(0)  # the trainer's seed: the same initial weights
        self.G, self.D = build_networks(variant.architecture, spec)
        self.G.to(device).train()
        self.D.to(device).train()
        betas = (variant.beta1, variant.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=variant.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=variant.lr_d, betas=betas)
        self.d_loss, self.g_loss = _bare_losses(variant.loss)
        self.gp = variant.reg_args.get("gp", {}).get("weight", 10.0) if "gp" in variant.regularizers else 0.0
        self.images = images.to(device).float().div(127.5).sub(1.0)
        self.n_critic, self.batch, self.z_dim, self.device = variant.n_critic, batch_size, spec.z_dim, device
        self.autocast = (nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype))

    def _penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=self.device)
        x = (eps * real + (1 - eps) * fake).requires_grad_(True)
        with torch.autocast(self.device.type, enabled=False):
            (grad,) = torch.autograd.grad(self.D(x).sum(), x, create_graph=True)
        return self.gp * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def step(self) -> None:
        for _ in range(self.n_critic):
            real = self.images[torch.randint(0, len(self.images), (self.batch,), device=self.device)]
            with torch.no_grad():
                fake = self.G(torch.randn(self.batch, self.z_dim, device=self.device))
            self.opt_d.zero_grad(set_to_none=True)
            with self.autocast:
                loss = self.d_loss(self.D(real).float(), self.D(fake).float())
                if self.gp:
                    loss = loss + self._penalty(real, fake)
            loss.backward()
            self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        self.D.requires_grad_(False)  # as the trainer: no weight gradients for D in G's update
        with self.autocast:
            loss = self.g_loss(self.D(self.G(torch.randn(self.batch, self.z_dim, device=self.device))).float())
        loss.backward()
        self.D.requires_grad_(True)
        self.opt_g.step()


class LoaderLoop(BareLoop):
    """What a user writes first: the bare loop in fp32, with real batches from a shuffling torch DataLoader
    over the uint8 images on the CPU (converted and copied to the device per batch), PyTorch's default
    optimiser kernels and memory format. The baseline of the "ours / DataLoader fp32" column."""

    def __init__(self, variant, spec, images: torch.Tensor, *, batch_size: int, device: torch.device) -> None:
        super().__init__(variant, spec, images[:1], batch_size=batch_size, device=device, dtype=torch.float32)
        from torch.utils.data import DataLoader, TensorDataset

        self.loader = DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=True, drop_last=True,
                                 pin_memory=device.type == "cuda")
        self.batches = iter(self.loader)

    def _real(self) -> torch.Tensor:
        try:
            (x,) = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            (x,) = next(self.batches)
        return x.to(self.device, non_blocking=True).float().div(127.5).sub(1.0)

    def step(self) -> None:
        for _ in range(self.n_critic):
            real = self._real()
            with torch.no_grad():
                fake = self.G(torch.randn(self.batch, self.z_dim, device=self.device))
            self.opt_d.zero_grad(set_to_none=True)
            loss = self.d_loss(self.D(real), self.D(fake))
            if self.gp:
                loss = loss + self._penalty(real, fake)
            loss.backward()
            self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        self.D.requires_grad_(False)
        loss = self.g_loss(self.D(self.G(torch.randn(self.batch, self.z_dim, device=self.device))))
        loss.backward()
        self.D.requires_grad_(True)
        self.opt_g.step()


def csv_reporter(path: Path):
    """A CSV-like sink, as the train stage's plots/train.csv: one row per logged step (and per series
    point); other Reporter methods are NullReporter's no-ops."""
    from gans.trainer import NullReporter

    class CsvReporter(NullReporter):
        def __init__(self) -> None:
            self.fh = path.open("w")

        def scalars(self, step: int, values: dict[str, float]) -> None:
            self.fh.write(",".join([str(step)] + [f"{v:.6g}" for v in values.values()]) + "\n")

        def series(self, key: str, points: list[tuple[int, float]]) -> None:
            self.fh.writelines(f"{step},{key},{value:.6g}\n" for step, value in points)

    return CsvReporter()


def make_trainer(preset: str, data, *, ada: bool, batch: int, device: str, precision: str, workdir: Path,
                 compile_: bool = False, width: int = 64):
    """A set-up Trainer of ``preset`` (``width``, z 64) with ADA on or off (params.yaml's ADA settings)."""
    from tqdm.auto import tqdm

    from gans.config import AugmentConfig, ModelConfig, TrainConfig, build_config
    from gans.families import build_trainer

    name = f"{preset}-{batch}-{width}-{precision}-{'ada' if ada else 'noada'}{'-compiled' if compile_ else ''}"
    trainer = build_trainer(
        model=build_config(ModelConfig, {"variant": preset, "width": width, "z_dim": 64}, "model"),
        train=build_config(TrainConfig, {"device": device, "batch_size": batch, "precision": precision,
                                         "steps": 10 ** 9, "eval_every": 0, "compile": compile_}, "train"),
        augment=build_config(AugmentConfig, {"ada": {"enabled": ada}}, "augment"),
        data=data, checkpoint_dir=workdir / name, reporter=csv_reporter(workdir / f"{name}.csv"))
    trainer.setup()
    trainer.perf_bar = tqdm(disable=True)  # fit()'s progress bar, as without a terminal
    return trainer


def ours_steps(trainer, n: int) -> None:
    """``n`` iterations of Trainer.fit's loop body: train_step, then whatever is due at that step
    (logging every train.log_every steps; a checkpoint and a sample grid every 250)."""
    bar = trainer.perf_bar
    after = getattr(trainer, "_after_step", None)
    for _ in range(n):
        for net in trainer.nets.values():
            net.train()
        stats = trainer.train_step()
        bar.update(1)
        if after is not None:
            after(stats, bar)
        elif trainer.step % trainer.train_cfg.log_every == 0:  # trainers without _after_step
            trainer._log(stats, bar)


class _NoModuleTracker:
    """FlopCounterMode's per-module attribution breaks torch.autograd.grad (the gradient penalty):
    count everything under 'Global' instead."""

    parents = frozenset({"Global"})

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def count_gflop(fn: Callable[[], None]) -> float:
    """GFLOP (matmuls and convolutions, forward and backward) that ``fn`` runs."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracker()
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


# ================================================================ throughput: timing


def _time_window(fn: Callable[[int], None], n: int, device: torch.device) -> float:
    _sync(device)
    started = time.perf_counter()
    fn(n)
    _sync(device)
    return time.perf_counter() - started


def interleave(arms: dict[str, Callable[[int], None]], *, steps: int, rounds: int,
               device: torch.device) -> dict[str, list[float]]:
    """Seconds per window of ``steps`` steps for every arm, rounds in rotated order."""
    names = list(arms)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(_time_window(arms[name], steps, device))
    return times


def timed_windows(arms: dict[str, Callable[[int], None]], probe: str, probe_steps: int, mode: dict,
                  device: torch.device) -> tuple[int, dict[str, list[float]]]:
    """Steps per window (``mode["window_s"]`` of the ``probe`` arm, timed over ``probe_steps`` steps) and the
    interleaved windows' seconds of every arm."""
    step_s = _time_window(arms[probe], probe_steps, device) / probe_steps
    steps = max(1, round(mode["window_s"] / step_s))
    return steps, interleave(arms, steps=steps, rounds=mode["rounds"], device=device)


def bench_preset(preset: str, data, *, batch: int, device: torch.device, precision: str, mode: dict,
                 workdir: Path, width: int = 64) -> dict[str, Any]:
    """Time ours (ADA off/on) and bare for one preset and batch size; see the module docstring."""
    from gans.trainer import resolve_precision

    dtype = resolve_precision(precision, device)
    off = make_trainer(preset, data, ada=False, batch=batch, device=str(device), precision=precision, workdir=workdir,
                       width=width)
    on = make_trainer(preset, data, ada=True, batch=batch, device=str(device), precision=precision, workdir=workdir,
                      width=width)
    bare = BareLoop(off.recipe.variant_cfg, off.recipe.spec, data.images, batch_size=batch, device=device, dtype=dtype)
    gflop_bare = count_gflop(bare.step)
    gflop_ours = count_gflop(lambda: ours_steps(off, 1)) if mode["count_ours"] else None
    loader = LoaderLoop(off.recipe.variant_cfg, off.recipe.spec, data.images, batch_size=batch, device=device)
    arms = {"off": lambda n: ours_steps(off, n), "on": lambda n: ours_steps(on, n),
            "bare": lambda n: [bare.step() for _ in range(n)], "loader": lambda n: [loader.step() for _ in range(n)]}
    for fn in arms.values():
        fn(mode["warmup"] if device.type == "cpu" else 10 * mode["warmup"])
    steps, times = timed_windows(arms, "bare", 1 if device.type == "cpu" else 20, mode, device)
    images = steps * batch * off.recipe.variant_cfg.n_critic
    ips = {k: [images / t for t in v] for k, v in times.items()}
    extra = _checkpoint_cost(off)
    return {
        "preset": preset, "batch": batch, "n_critic": off.recipe.variant_cfg.n_critic, "steps_per_window": steps,
        "rounds": mode["rounds"], **{f"ips_{k}": _median(v) for k, v in ips.items()},
        "ours_over_bare": _median([a / b for a, b in zip(ips["off"], ips["bare"])]),
        "ours_over_loader": _median([a / b for a, b in zip(ips["off"], ips["loader"])]),
        "ada_step_ratio": _median([a / b for a, b in zip(times["on"], times["off"])]),
        "gflop_step": gflop_bare, "gflop_step_ours": gflop_ours,
        "gflops_bare": gflop_bare * _median(ips["bare"]) / (batch * off.recipe.variant_cfg.n_critic),
        "gflops_ours": gflop_bare * _median(ips["off"]) / (batch * off.recipe.variant_cfg.n_critic),
        "step_ms_bare": 1000 * _median(times["bare"]) / steps, **extra,
    }


def _checkpoint_cost(trainer) -> dict[str, float]:
    """Seconds of one checkpoint write and one sample grid (fit does each every 250 steps by default)."""
    started = time.perf_counter()
    trainer.save_checkpoint()
    ckpt = time.perf_counter() - started
    started = time.perf_counter()
    trainer.reporter.image(trainer.step, trainer.sample_grid())
    grid = time.perf_counter() - started
    return {"checkpoint_s": ckpt, "grid_s": grid, "checkpoint_every": trainer.train_cfg.checkpoint_every,
            "sample_every": trainer.train_cfg.sample_every}


def throughput(args: argparse.Namespace, mode: dict, device: torch.device) -> None:
    from gans.config import DataConfig
    from gans.data import load_source

    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    data = load_source(DataConfig(source="mnist5k", resolution=32))
    load_s = time.perf_counter() - started
    mm_n = 8192 if device.type == "cuda" else 2048
    mm = {"fp32": matmul_gflops(device, torch.float32, mm_n, 2.0), "bf16": matmul_gflops(device, torch.bfloat16, mm_n, 2.0)}
    batches = (64, 256) if device.type == "cuda" else (64,)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gans-perf-") as tmp:
        for batch in batches:
            for preset in args.presets.split(","):
                rows.append(bench_preset(preset, data, batch=batch, device=device, precision=args.precision,
                                         mode=mode, workdir=Path(tmp), width=args.width))
                print(json.dumps(rows[-1]), flush=True)
    mm_after = matmul_gflops(device, torch.float32, mm_n, 2.0)
    body = _throughput_body(args, mode, device, rows, mm, mm_after, mm_n, load_s, load_start)
    write_section(_title("Training throughput", args), body)
    print(body)


def _throughput_body(args, mode, device, rows, mm, mm_after, mm_n, load_s, load_start) -> str:
    head = (f"{_header(args)} (At the start: {load_start:.1f}.) Device {device}, precision {args.precision}.\n"
            f"Workload: {'/'.join(args.presets.split(','))} at width {args.width}, z 64, 32x32x1, on the 5,000 real mnist5k "
            f"digits (loaded in {load_s:.1f} s). Each window runs `steps/window` generator steps; "
            f"{mode['rounds']} rounds of the four arms in rotated order after {mode['warmup']} warm-up steps; "
            f"img/s are medians over rounds, ratios are medians of the ratios within a round. img/s = real images "
            f"seen by D (G steps x batch x n_critic). GFLOP/step: FlopCounterMode over one bare step "
            f"(n_critic D updates + one G update, forward + backward); achieved GFLOP/s = GFLOP/step x steps/s. "
            f"{mode['window_s']:g} s windows. Matmul {mm_n}x{mm_n}: fp32 {mm['fp32']:.0f} GFLOP/s "
            f"(again after the presets: {mm_after:.0f}), bf16 {mm['bf16']:.0f} GFLOP/s.\n\n")
    lines = [("| preset | batch | n_critic | steps/window | ours ADA off img/s | ours ADA on img/s | bare img/s "
             "| ours/bare (goal >= 0.95) | DataLoader fp32 img/s | ours / DataLoader fp32 "
             "| ADA on/off step time (goal < 1.15) | GFLOP/step | GFLOP/s bare | "
             "GFLOP/s ours | checkpoint + grid, amortised |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        per_step = r["step_ms_bare"] / 1000
        amort = r["checkpoint_s"] / r["checkpoint_every"] + r["grid_s"] / r["sample_every"]
        lines.append(
            f"| {r['preset']} | {r['batch']} | {r['n_critic']} | {r['steps_per_window']} | {r['ips_off']:.0f} | "
            f"{r['ips_on']:.0f} | {r['ips_bare']:.0f} | {r['ours_over_bare']:.3f} | {r['ips_loader']:.0f} | "
            f"{r['ours_over_loader']:.2f} | {r['ada_step_ratio']:.3f} | "
            f"{r['gflop_step']:.1f} | {r['gflops_bare']:.0f} | {r['gflops_ours']:.0f} | "
            f"{r['checkpoint_s']:.2f} s + {r['grid_s']:.2f} s = {100 * amort / per_step:.1f}% |")
    notes = [f"{r['preset']}: ours counted {r['gflop_step_ours']:.1f} GFLOP/step vs bare {r['gflop_step']:.1f}"
             for r in rows if r["gflop_step_ours"] is not None
             and abs(r["gflop_step_ours"] - r["gflop_step"]) > 0.01 * r["gflop_step"]]
    tail = ("\n\nCheckpoint + grid: one checkpoint write and one 64-image sample grid, which fit() does every "
            "train.checkpoint_every / train.sample_every steps (250 by default), as a share of the bare step time.")
    if notes:
        tail += " FLOP counts that differ between ours and bare: " + "; ".join(notes) + "."
    return head + "\n".join(lines) + tail


# ================================================================ train.compile


def compile_speed(args: argparse.Namespace, mode: dict, device: torch.device) -> None:
    """``train.compile`` on and off, ADA off, batch 256 (64 on the CPU): the compiled trainer's first steps
    (compilation included), then interleaved windows of both."""
    from gans.config import DataConfig
    from gans.data import load_source

    data = load_source(DataConfig(source="mnist5k", resolution=32))
    batch = 256 if device.type == "cuda" else 64
    rows = []
    with tempfile.TemporaryDirectory(prefix="gans-perf-") as tmp:
        for preset in args.presets.split(","):
            eager = make_trainer(preset, data, ada=False, batch=batch, device=str(device), precision=args.precision,
                                 workdir=Path(tmp))
            compiled = make_trainer(preset, data, ada=False, batch=batch, device=str(device),
                                    precision=args.precision, workdir=Path(tmp), compile_=True)
            first = _time_window(lambda n: ours_steps(compiled, n), 3, device)
            arms = {"eager": lambda n: ours_steps(eager, n), "compiled": lambda n: ours_steps(compiled, n)}
            for fn in arms.values():
                fn(10)
            steps, times = timed_windows(arms, "eager", 10, mode, device)
            images = steps * batch * eager.recipe.variant_cfg.n_critic
            rows.append(f"| {preset} | {batch} | {first:.1f} s | {_median([images / t for t in times['eager']]):.0f} | "
                        f"{_median([images / t for t in times['compiled']]):.0f} | "
                        f"{_median([a / b for a, b in zip(times['eager'], times['compiled'])]):.2f} |")
            print(rows[-1], flush=True)
    body = (f"{_header(args)} Device {device}, precision {args.precision}. `train.compile: true` compiles G and "
            f"D's trunk (torch.compile, default mode); both trainers as in the throughput rows, ADA off. "
            f"{mode['rounds']} interleaved rounds of {mode['window_s']:g} s windows after 10 warm-up steps each.\n\n"
            "| preset | batch | compiled: first 3 steps (compilation) | eager img/s | compiled img/s | "
            "compiled / eager |\n| --- | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows))
    write_section(_title("train.compile", args), body)
    print(body)


# ================================================================ translation throughput


def precision_speed(args: argparse.Namespace, mode: dict, device: torch.device) -> None:
    """fp32 against bf16 autocast, ours and bare, for the first preset at ``--width``, ADA off, batch 64."""
    from gans.config import DataConfig
    from gans.data import load_source
    from gans.trainer import resolve_precision

    preset, batch, load_start = args.presets.split(",")[0], 64, os.getloadavg()[0]
    data = load_source(DataConfig(source="mnist5k", resolution=32))
    arms: dict[str, Callable[[int], None]] = {}
    with tempfile.TemporaryDirectory(prefix="gans-perf-") as tmp:
        for precision in ("fp32", "bf16"):
            ours = make_trainer(preset, data, ada=False, batch=batch, device=str(device), precision=precision,
                                workdir=Path(tmp), width=args.width)
            bare = BareLoop(ours.recipe.variant_cfg, ours.recipe.spec, data.images, batch_size=batch, device=device,
                            dtype=resolve_precision(precision, device))
            arms[f"ours {precision}"] = lambda n, t=ours: ours_steps(t, n)
            arms[f"bare {precision}"] = lambda n, b=bare: [b.step() for _ in range(n)]
        for fn in arms.values():
            fn(mode["warmup"] if device.type == "cpu" else 10 * mode["warmup"])
        steps, times = timed_windows(arms, "bare fp32", 1 if device.type == "cpu" else 20, mode, device)
    ips = {k: [steps * batch / t for t in v] for k, v in times.items()}
    ratio = {pair: _median([a / b for a, b in zip(ips[pair[0]], ips[pair[1]])])
             for pair in (("ours bf16", "ours fp32"), ("bare bf16", "bare fp32"), ("ours fp32", "bare fp32"),
                          ("ours bf16", "bare bf16"))}
    row = {k: _median(v) for k, v in ips.items()} | {f"{a} / {b}": r for (a, b), r in ratio.items()}
    print(json.dumps(row), flush=True)
    body = (f"{_header(args)} (At the start: {load_start:.1f}.) Device {device}.\n"
            f"Workload: {preset} at width {args.width}, z 64, 32x32x1, batch {batch}, ADA off, on the 5,000 real "
            f"mnist5k digits; ours = the trainer's fit() loop body (EMA, stats, logging, checkpoint and grid when "
            f"due), bare = the same networks in a plain loop (as in the throughput table), each in fp32 and under "
            f"bf16 autocast. {mode['rounds']} rounds of the four arms in rotated order, {steps} steps per window "
            f"({mode['window_s']:g} s of bare fp32), after {mode['warmup']} warm-up steps; img/s are medians "
            f"over rounds, ratios medians of the ratios within a round.\n\n"
            "| arm | img/s |\n| --- | ---: |\n" + "".join(f"| {k} | {v:.0f} |\n" for k, v in row.items()
                                                       if "/" not in k) +
            "\n| ratio | median |\n| --- | ---: |\n" + "".join(f"| {a} / {b} | {r:.3f} |\n"
                                                              for (a, b), r in ratio.items()))
    write_section(f"Precision speed, width {args.width}" + (" (quick)" if args.quick else ""), body.rstrip())
    print(body)


def translation_throughput(args: argparse.Namespace, mode: dict, device: torch.device) -> None:
    """Pix2Pix and CycleGAN through the trainer against bare loops of the same networks (bench/perf_translation.py)."""
    from tqdm.auto import tqdm

    from bench.perf_translation import PRESETS as TRANSLATION, make_pair

    load_start, rows = os.getloadavg()[0], []
    with tempfile.TemporaryDirectory(prefix="gans-perf-") as tmp:
        for preset in TRANSLATION:
            trainer, bare = make_pair(preset, batch=32, width=args.translation_width, device=device,
                                      precision=args.precision, workdir=Path(tmp),
                                      reporter=csv_reporter(Path(tmp) / f"{preset}.csv"))
            trainer.perf_bar = tqdm(disable=True)  # fit()'s progress bar, as without a terminal
            arms = {"ours": lambda n, t=trainer: ours_steps(t, n), "bare": lambda n, b=bare: [b.step() for _ in range(n)]}
            for fn in arms.values():
                fn(mode["warmup"])
            steps, times = timed_windows(arms, "bare", 1, mode, device)
            ips = {k: [steps * 32 / s for s in v] for k, v in times.items()}
            rows.append({"preset": preset, "steps": steps, "gflop_step": count_gflop(bare.step),
                         **{f"ips_{k}": _median(v) for k, v in ips.items()},
                         "ratio": _median([a / b for a, b in zip(ips["ours"], ips["bare"])]), **_checkpoint_cost(trainer)})
            print(json.dumps(rows[-1]), flush=True)
    lines = ["| preset | data | steps/window | ours img/s | bare img/s | ours/bare (goal >= 0.95) | GFLOP/step | "
             "checkpoint + grid |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['preset']} | {TRANSLATION[r['preset']]} | {r['steps']} | {r['ips_ours']:.0f} | "
                     f"{r['ips_bare']:.0f} | {r['ratio']:.3f} | {r['gflop_step']:.1f} | "
                     f"{r['checkpoint_s']:.2f} s + {r['grid_s']:.2f} s |")
    body = (f"{_header(args)} (At the start: {load_start:.1f}.) Device {device}, precision {args.precision}. "
            f"Workload: pix2pix and cyclegan at width {args.translation_width}, batch 32, 32x32 on their bundled "
            f"data, ADA off; {mode['rounds']} interleaved rounds of {mode['window_s']:g} s windows, medians; img/s = "
            "image pairs (pix2pix) or images per domain (cyclegan) per second. The bare loops and what they leave "
            "out: bench/perf_translation.py.\n\n" + "\n".join(lines))
    write_section(_title("Translation throughput", args), body)
    print(body)


# ================================================================ pipeline overhead


def pipeline_overhead(args: argparse.Namespace, mode: dict, scratch: Path) -> Path:
    """Returns the project after `dvc repro` (its champion is served later)."""
    params = tiny_params({"train": {"device": args.device}} if args.device != "auto" else None)
    # Stage commands hand their work to a warm process (pipeline/warm.py); a private runtime folder makes the
    # first `dvc repro` start cold (its first stage runs alone and starts the warm process for the others).
    runtime = scratch / "warm-runtime"
    runtime.mkdir(exist_ok=True)
    warm_env = {"XDG_RUNTIME_DIR": str(runtime), "GANS_WARM": "1"}
    repo = make_project(scratch / "repro", params)
    repro_s, _ = timed(["dvc", "repro"], repo, **warm_env)
    noop = [timed(["dvc", "repro"], repo, **warm_env)[0] for _ in range(mode["noop_repeats"])]
    warm_s, _ = timed(["dvc", "repro"], make_project(scratch / "repro-warm", params), **warm_env)
    off_s, _ = timed(["dvc", "repro"], make_project(scratch / "repro-off", params), GANS_WARM="0")
    startup_s, _ = timed(["gans", "variants"], repo)
    inproc = _child("stages", make_project(scratch / "inprocess", params))
    cli = None
    if mode["cli_stages"]:
        cli_repo = make_project(scratch / "cli", params)
        cli = {name: timed(["gans", name], cli_repo)[0] for name in STAGE_NAMES}
    flow_repo = make_project(scratch / "flow", params)
    flow = _child("flow", flow_repo)
    compute = sum(inproc["stages"].values())
    lines = [(f"{_header(args)} Workload: a scratch git+DVC project with the "
             f"tests' tiny params (digits, 400 images at 16x16, 40 steps at batch 32, width 16, "
             f"{params['evaluate']['num_samples']} evaluation samples), MLflow in the project's sqlite store.\n"),
             "| what | seconds |", "| --- | ---: |",
             f"| `dvc repro`, every stage, fresh project, no warm process yet | {repro_s:.1f} |",
             f"| `dvc repro`, another fresh project, the warm process up | {warm_s:.1f} |",
             f"| `dvc repro`, another fresh project, `GANS_WARM=0` (an interpreter per stage) | {off_s:.1f} |",
             f"| stages called in-process, sum (compute; imports excluded) | {compute:.1f} |",
             f"| - per stage | {_per_stage(inproc['stages'])} |",
             f"| `dvc repro` minus in-process compute, warm process up (goal: 10 s) | {warm_s - compute:.1f} |",
             f"| `dvc repro` minus in-process compute, `GANS_WARM=0` | {off_s - compute:.1f} |",
             f"| second `dvc repro`, nothing changed (median of {len(noop)}; goal: a few seconds) | {_median(noop):.1f} |",
             (f"| one `gans variants` call (interpreter + torch + torchvision + the CLI: paid by every stage) "
              f"| {startup_s:.1f} |")]
    if cli:
        lines += [f"| `gans <stage>` CLI calls one by one, sum | {sum(cli.values()):.1f} |",
                  f"| - per stage | {_per_stage(cli)} |",
                  f"| `dvc repro` minus the CLI sum (DVC's own overhead) | {repro_s - sum(cli.values()):.1f} |"]
    how = "runs `dvc repro` (dvc.lock written)" if flow["dvc_lock"] else "calls the stage functions in-process"
    lines += [(f"| Prefect: first no-op flow in a fresh process (temporary server start-up + one flow run) "
              f"| {flow['noop_first_s']:.1f} |"),
              f"| Prefect: second no-op flow (per-flow overhead, server up) | {flow['noop_second_s']:.1f} |",
              f"| Prefect: `gan_pipeline` flow, server already up (the flow {how}) | {flow['flow_s']:.1f} |",
              f"| Prefect flow minus in-process compute | {flow['flow_s'] - compute:.1f} |",
              f"| Prefect flow minus the first `dvc repro` | {flow['flow_s'] - repro_s:.1f} |",
              (f"| `gans flow` estimate: imports + server start + flow | "
              f"{flow['import_s'] + flow['noop_first_s'] + flow['flow_s']:.1f} |")]
    body = "\n".join(lines) + ("\n\nThe CLI-per-stage rows are measured by `make bench` (full) only." if not cli else "")
    write_section(_title("Pipeline overhead", args), body)
    print(body)
    return repo


def _per_stage(times: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in times.items())


def _child_stages() -> None:
    started = time.perf_counter()
    from pipeline.params import load_params
    from pipeline.stages import STAGES

    params = load_params("params.yaml", [])
    result: dict[str, Any] = {"import_s": time.perf_counter() - started, "stages": {}}
    for name in STAGE_NAMES:
        started = time.perf_counter()
        STAGES[name](params)
        result["stages"][name] = time.perf_counter() - started
    _emit(result)


def _child_flow() -> None:
    started = time.perf_counter()
    from prefect import flow

    from pipeline.flows import gan_pipeline

    result: dict[str, Any] = {"import_s": time.perf_counter() - started}

    @flow(name="perf-noop")
    def noop() -> int:
        return 0

    for key in ("noop_first_s", "noop_second_s"):
        started = time.perf_counter()
        noop()
        result[key] = time.perf_counter() - started
    started = time.perf_counter()
    gan_pipeline(params_file="params.yaml")
    result["flow_s"] = time.perf_counter() - started
    result["dvc_lock"] = Path("dvc.lock").is_file()
    _emit(result)


# ================================================================ peak memory


def peak_memory(args: argparse.Namespace, mode: dict, scratch: Path) -> None:
    work = scratch / "memory"
    work.mkdir(parents=True, exist_ok=True)
    _child("memory-setup", work)
    # each command gets only the keys it reads (the CLI refuses an override it would ignore)
    train_sets = [f"train.device={args.device}", f"train.steps={mode['mem_steps']}",
                  f"train.checkpoint_every={mode['mem_steps']}"]
    eval_sets = [f"train.device={args.device}", f"evaluate.num_samples={mode['mem_samples']}"]
    base = _child("cli-rss", work, "--", "variants")
    train = _child("cli-rss", work, "--", "train", *[x for s in train_sets for x in ("-S", s)])
    evaluate = _child("cli-rss", work, "--", "evaluate", *[x for s in eval_sets for x in ("-S", s)])
    lines = [(f"{_header(args)} Each row is one subprocess running the real "
             f"CLI command in-process (pipeline.cli.main) on the default model (dcgan, width 64, z 64, "
             f"32x32 mnist5k, batch 64, ADA on), reporting its own peak RSS (VmHWM).\n"),
             "| process | peak RSS (MiB) | CUDA max allocated (MiB) | seconds |", "| --- | ---: | ---: | ---: |"]
    for label, r in (("`gans variants` (interpreter + torch + the CLI, same harness: the floor)", base),
                     ((f"`gans train` ({mode['mem_steps']} steps, MLflow tracking, final checkpoint, "
                      f"sample grid and 1,000-sample FID)"), train),
                     (f"`gans evaluate` ({mode['mem_samples']} samples, domain features, FID/IS/KID/PR)", evaluate)):
        cuda = f"{r['cuda_mib']:.0f}" if r.get("cuda_mib") is not None else "n/a (CPU)"
        lines.append(f"| {label} | {r['rss_mib']:.0f} | {cuda} | {r['seconds']:.1f} |")
    body = "\n".join(lines)
    write_section(_title("Peak memory", args), body)
    print(body)


def _child_memory_setup() -> None:
    """data/prepared + data/augmented (mnist5k, 32x32) and an untrained domain evaluator, in the cwd."""
    from gans.evaluation import DomainClassifier, classifier_payload
    from gans.io import save_torch
    from pipeline import paths, stages
    from pipeline.params import load_params

    params = load_params(ROOT / "params.yaml", [])
    meta = stages.prepare(params)
    stages.augment(params)
    model = DomainClassifier(channels=meta["channels"], num_classes=len(meta["classes"]))
    save_torch(classifier_payload(model, tuple(meta["classes"]), 0.0), paths.EVALUATOR)
    _emit({"ok": True})


def _child_cli_rss(argv: list[str]) -> None:
    started = time.perf_counter()
    from pipeline.cli import main

    argv = [argv[0], "--params", str(ROOT / "params.yaml"), *argv[1:]] if argv[0] != "variants" else argv
    with open(os.devnull, "w") as sink:
        stdout, sys.stdout = sys.stdout, sink
        try:
            rc = main(argv)
        finally:
            sys.stdout = stdout
    if rc:
        raise SystemExit(f"gans {' '.join(argv)} exited with {rc}")
    cuda = torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else None
    _emit({"rss_mib": _peak_rss_mib(), "cuda_mib": cuda, "seconds": time.perf_counter() - started})


def _peak_rss_mib() -> float:
    """This process's peak RSS. Linux: VmHWM of its own address space (ru_maxrss would report the
    parent's peak when that was higher, since Linux carries it over fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ================================================================ serving


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(repo: Path, port: int) -> tuple[subprocess.Popen, float]:
    import requests

    started = time.perf_counter()
    proc = subprocess.Popen(["gans", "serve", "--port", str(port)], cwd=repo, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    while time.perf_counter() - started < 180:
        if proc.poll() is not None:
            raise RuntimeError(f"gans serve exited:\n{proc.stdout.read()[-3000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                return proc, time.perf_counter() - started
        except requests.ConnectionError:
            time.sleep(0.2)
    _stop_server(proc)
    raise RuntimeError("the model server did not answer /ping in 180 s")


def _stop_server(proc: subprocess.Popen) -> None:
    """Stop the server and the workers it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _latencies(url: str, rows: int, n: int) -> list[float]:
    import requests

    payload = {"dataframe_records": [{"seed": i} for i in range(rows)]}
    out = []
    for i in range(n + 5):
        started = time.perf_counter()
        resp = requests.post(url, json=payload, timeout=60)
        elapsed = time.perf_counter() - started
        if resp.status_code != 200 or len(resp.json()["predictions"]) != rows:
            raise RuntimeError(f"POST /invocations failed: {resp.status_code} {resp.text[:500]}")
        if i >= 5:  # the first five are warm-up
            out.append(elapsed)
    return out


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def serving(args: argparse.Namespace, mode: dict, repo: Path, memory_dir: Path | None) -> None:
    port = _free_port()
    proc, startup = _start_server(repo, port)
    try:
        lat = {rows: _latencies(f"http://127.0.0.1:{port}/invocations", rows, mode["requests"]) for rows in (1, 16)}
    finally:
        _stop_server(proc)
    lines = [(f"{_header(args)} Server: `gans serve` (mlflow models serve "
             f"--env-manager local) on `models:/gan-generator@champion` of the tiny pipeline project (dcgan, "
             f"width 16, 16x16), one client, {mode['requests']} requests per size after 5 warm-up requests.\n"),
             "| what | figure |", "| --- | --- |",
             f"| server start-up until /ping answers | {startup:.1f} s |"]
    for rows, values in lat.items():
        lines.append(f"| POST /invocations, {rows} image{'s' if rows > 1 else ''} per request | p50 "
                     f"{_pct(values, 50):.0f} ms, p95 {_pct(values, 95):.0f} ms, {rows / _median(values):.0f} img/s |")
    lines += _sample_rows(repo, mode, "the champion (tiny project)", repo / "models/generator.pt", [])
    if memory_dir is not None and (memory_dir / "models/generator.pt").is_file():
        gen = memory_dir / "models/generator.pt"
        lines += _sample_rows(repo, mode, "`--checkpoint` of the default-size generator (width 64, 32x32)",
                              gen, ["--checkpoint", str(gen)])
    body = "\n".join(lines) + ("\n\nThe in-process rows time the functions `gans sample` calls "
                               "(gans.sampling.generate, image_grid, png_bytes) on the same generator file, in this "
                               "process; the wall time adds the interpreter, imports and (champion) the registry lookup.")
    write_section(_title("Serving", args), body)
    print(body)


def _sample_rows(repo: Path, mode: dict, what: str, generator: Path, extra: list[str]) -> list[str]:
    """`gans sample` wall time for a 64-image grid, and the images/s of its sampling path in-process."""
    from gans.sampling import generate, image_grid, png_bytes
    from gans.families.noise import load_generator

    wall, _ = timed(["gans", "sample", "--count", "64", "--out", "samples/perf-64.png", *extra], repo)
    model, payload = load_generator(generator, "cpu")
    n, k, z_dim = mode["sample_images"], payload["spec"]["num_classes"], payload["spec"]["z_dim"]
    labels = [i % k for i in range(n)] if k else None
    generate(model, list(range(64)), labels and labels[:64], z_dim=z_dim, device=torch.device("cpu"))
    started = time.perf_counter()
    images = generate(model, list(range(n)), labels, z_dim=z_dim, device=torch.device("cpu"))
    png_bytes(image_grid(images, per_row=64))
    rate = n / (time.perf_counter() - started)
    return [f"| `gans sample` from {what}: wall time for 64 images (start-up included) | {wall:.1f} s |",
            f"| its sampling path in-process (generate + grid + PNG), {n} images | {rate:.0f} img/s |"]


# ================================================================ profile (printed only)


def profile(args: argparse.Namespace, device: torch.device) -> None:
    """torch.profiler tables for ours (ADA off) vs bare on one preset; nothing is written."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from gans.config import DataConfig
    from gans.data import load_source
    from gans.trainer import resolve_precision

    data = load_source(DataConfig(source="mnist5k", resolution=32))
    with tempfile.TemporaryDirectory(prefix="gans-perf-") as tmp:
        off = make_trainer(args.profile, data, ada=False, batch=64, device=str(device), precision=args.precision,
                           workdir=Path(tmp))
        bare = BareLoop(off.recipe.variant_cfg, off.recipe.spec, data.images, batch_size=64, device=device,
                        dtype=resolve_precision(args.precision, device))
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        for name, fn in (("ours", lambda: ours_steps(off, 10)), ("bare", lambda: [bare.step() for _ in range(10)])):
            fn()
            with torch_profile(activities=activities) as prof:
                fn()
            print(f"==== {name} ({args.profile}, 10 steps)")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


# ================================================================ main


def _header(args: argparse.Namespace) -> str:
    """Machine, exact command, and the load average (other work on the machine skews every figure)."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"Machine: {machine()}. Command: `{_command(args)}`. Load average when written: {load}."


def _title(name: str, args: argparse.Namespace) -> str:
    """The section's title: a GPU run and a quick run each write their own, never the CPU's full table."""
    gpu = args.device != "cpu" and torch.cuda.is_available()
    where = f", {torch.cuda.get_device_name(0)}, {args.precision}" if gpu else (
        f", {args.precision}" if args.precision != "fp32" and name == "Training throughput" else "")
    return name + where + (" (quick)" if args.quick else "")


def _command(args: argparse.Namespace) -> str:
    parts = ["python bench/perf.py"] + (["--quick"] if args.quick else [])
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.precision != "fp32":
        parts += ["--precision", args.precision]
    if args.presets != ",".join(PRESETS):
        parts += ["--presets", args.presets]
    if args.parts != DEFAULT_PARTS:
        parts += ["--parts", args.parts]
    if args.width != 64:
        parts += ["--width", str(args.width)]
    return " ".join(parts)


def _children(argv: list[str]) -> bool:
    """Run a child mode (``--child NAME [-- ARGS]``); False when this is not a child."""
    if "--child" not in argv:
        return False
    name = argv[argv.index("--child") + 1]
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    {"stages": _child_stages, "flow": _child_flow, "memory-setup": _child_memory_setup,
     "cli-rss": lambda: _child_cli_rss(rest)}[name]()
    return True


def main() -> None:
    if _children(sys.argv[1:]):
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short windows and small pipeline runs (a few minutes)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (throughput, memory, pipeline)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16", "auto"),
                    help="training precision of both ours and bare (default fp32)")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--parts", default=DEFAULT_PARTS)
    ap.add_argument("--translation-width", type=int, default=32, help="width of the translation networks (32)")
    ap.add_argument("--width", type=int, default=64, help="width of the noise-to-image networks (64)")
    ap.add_argument("--profile", metavar="PRESET", help="print torch.profiler tables of ours vs bare and exit")
    args = ap.parse_args()
    from gans.trainer import resolve_device

    device = resolve_device(args.device)
    if args.profile:
        profile(args, device)
        return
    mode = MODES["quick" if args.quick else "full"]
    parts = args.parts.split(",")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gans-perf-") as tmp:
        scratch = Path(tmp)
        if "throughput" in parts:
            throughput(args, mode, device)
        if "translation" in parts:
            translation_throughput(args, mode, device)
        if "compile" in parts:
            compile_speed(args, mode, device)
        if "precision" in parts:
            precision_speed(args, mode, device)
        repo = None
        if "pipeline" in parts or "serving" in parts:
            repo = pipeline_overhead(args, mode, scratch)
        if "memory" in parts:
            peak_memory(args, mode, scratch)
        if "serving" in parts:
            serving(args, mode, repo, scratch / "memory" if "memory" in parts else None)
    print(f"bench/perf.py done in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
