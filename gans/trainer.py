"""The training loop: setup, one step, EMA, ADA control, checkpoints and resume, for any family.

The trainer runs a :class:`gans.family.Recipe` (one family's composition bound to one training set): it
builds the recipe's named networks and optimisers, runs its phases over batches of its data streams,
keeps the EMA copies, ADA's probability, the NaN policy and exact-resume checkpoints, and evaluates and
samples through the recipe. It never names a family. Statistics leave the trainer through a
:class:`Reporter`; where they go (MLflow, a CSV for DVC plots, the terminal) is the caller's business.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from gans import checkpoints, distributed
from gans.augment import AugmentPipe, ada_adjust, build_ada, diffaugment
from gans.config import AugmentConfig, ConfigError, ModelConfig, TrainConfig, to_dict
from gans.data import to_float
from gans.family import Batch, OptimizerSpec, Phase, Recipe
from gans.io import load_torch, save_torch


class Reporter(Protocol):
    """Where training statistics go."""

    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def image(self, step: int, grid: torch.Tensor) -> None: ...

    def series(self, key: str, points: list[tuple[int, float]]) -> None:
        """Several (step, value) points of one metric at once (e.g. ADA's p at every adjustment)."""


class NullReporter:
    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def series(self, key: str, points: list[tuple[int, float]]) -> None:
        pass

    def image(self, step: int, grid: torch.Tensor) -> None:
        pass


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


BEST = "best.pt"  # the best periodic evaluation's artifact, beside the checkpoints


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; explicit devices must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} was asked for but no CUDA device is available; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: 'mps' was asked for but is not available; use auto or cpu")
    return torch.device(name)


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bf16 arithmetic in hardware


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU (or the ``/proc/cpuinfo`` text given) computes bf16 in hardware: AVX512-BF16 (AMD Zen 4
    and later, Intel Cooper Lake) or AMX-BF16 (Intel Sapphire Rapids and later). Without it, bf16 autocast
    emulates and runs slower than fp32. False where there is no ``/proc/cpuinfo`` (macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return any(flag in value.split() for flag in NATIVE_BF16_FLAGS)
    return False


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """Map a precision name to the autocast dtype (float32 = no autocast). ``auto``: bf16 on CUDA GPUs that
    support it and on CPUs with native bf16 (:func:`cpu_has_native_bf16`), else fp32."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision: fp16 needs a CUDA device; the device is {device.type}; use fp32 or bf16")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: this GPU has no bf16 support; use fp16 or fp32")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def fingerprint(payload: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# Keys of train.* that may change between a checkpoint and its resumption.
RESUMABLE_TRAIN_KEYS = ("device", "steps", "checkpoint_every", "keep_checkpoints", "log_every", "sample_every",
                        "on_nan", "eval_every", "eval_samples", "channels_last", "compile", "distributed")
MAX_SKIPPED_STEPS = 50  # train.on_nan: skip gives up after this many skipped updates in a row
RANK_SEED_STRIDE = 1_000_003  # rank r draws latents and augmentations from seed + r * stride
# Checkpoint keys the trainer writes beside the networks (a network may not take one of these names).
RESERVED_KEYS = ("step", "fingerprint", "optimizers", "schedulers", "family_state", "scaler", "ada_p", "sign_acc",
                 "sign_count", "rng_torch", "rng_cuda", "rng_ranks", "samplers", "history", "extra", "best", "evals")


def training_fingerprint(recipe: Recipe, *, model: ModelConfig, train: TrainConfig, augment: AugmentConfig,
                         data_hash: str) -> str:
    """What a checkpoint must match to be resumed: the params that change what training computes, the data,
    and the recipe's resolved composition and network spec (a preset whose definition changed between
    releases must not resume from checkpoints of its old networks)."""
    resumable = {k: v for k, v in to_dict(train).items() if k not in RESUMABLE_TRAIN_KEYS}
    return fingerprint({"model": to_dict(model), "train": resumable, "augment": to_dict(augment),
                        "data": data_hash, **recipe.describe()})


def check_trainable(recipe: Recipe, train: TrainConfig) -> distributed.DistContext:
    """Fail before any work when the batch does not fit the data or the processes; return the process
    context (several processes under torchrun)."""
    clash = (set(recipe.ema) | {n for spec in recipe.optimizers.values() for n in spec.networks}) & set(RESERVED_KEYS)
    if clash:
        raise ValueError(f"network names {sorted(clash)} are reserved checkpoint keys")
    for name, stream in recipe.streams.items():
        n = len(next(iter(stream.values())))
        if train.batch_size > n:
            where = f" of stream {name!r}" if len(recipe.streams) > 1 else ""
            raise ConfigError(f"train.batch_size: {train.batch_size} is larger than the {n} training images{where}")
    for phase in recipe.phases:
        if phase.start and phase.start >= train.steps:
            raise ConfigError(f"{phase.start_key or 'train.steps'}: the {phase.name} phase starts at step {phase.start}, "
                              f"and train.steps is {train.steps}: it would never run; raise train.steps above "
                              f"{phase.start} or start the phase earlier")
    dist = distributed.context_from_env(train.distributed)
    if train.batch_size % dist.world_size:
        raise ConfigError(f"train.batch_size: {train.batch_size} does not split evenly over the {dist.world_size} "
                          f"processes torchrun started; use a multiple of {dist.world_size}")
    return dist


@dataclass
class TrainResult:
    steps: int
    resumed_from: int | None
    ada_p: float
    img_per_s: float
    seconds: float
    variant: str
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    evals: list[dict[str, float]] = field(default_factory=list)  # periodic evaluations: step and metrics
    world_size: int = 1
    replicas: list[dict[str, Any]] = field(default_factory=list)  # per rank: step and weight digest


class StreamSampler:
    """Epoch permutations over one data stream's rows. Every rank draws the same global order (one seeded
    generator) and takes its own slice; the order lives on the device, so slicing needs no host transfer."""

    def __init__(self, n: int, seed: int, device: torch.device) -> None:
        self.n, self.device = n, device
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.int64, device=device)
        self.cursor = 0

    def next(self, global_batch: int, local_batch: int, rank: int) -> torch.Tensor:
        """This rank's indices of the next global batch."""
        if self.cursor + global_batch > len(self.order):
            self.order = torch.randperm(self.n, generator=self.generator).to(self.device)
            self.cursor = 0
        idx = self.order[self.cursor + rank * local_batch:self.cursor + (rank + 1) * local_batch]
        self.cursor += global_batch
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.generator.get_state(), "order": self.order.cpu(), "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["rng"].cpu())
        self.order, self.cursor = state["order"].to(self.device), state["cursor"]


def linear_decay(step: int, *, start: float, total: int) -> float:
    """LR factor: 1 until ``start * total`` steps, then linearly down to 0 at ``total``."""
    begin = int(start * total)
    if step < begin or total <= begin:
        return 1.0
    return max(0.0, 1.0 - (step - begin) / (total - begin))


class Trainer:
    """Trains one family's recipe, resumably. ``evaluate_fn(payload) -> {metric: value}`` scores the
    exported artifact every ``train.eval_every`` steps; the best by the recipe's primary metric is kept."""

    def __init__(self, *, recipe: Recipe, train: TrainConfig, augment: AugmentConfig, checkpoint_dir: str | Path,
                 fingerprint: str, reporter: Reporter | None = None,
                 evaluate_fn: Callable[[dict[str, Any]], dict[str, float]] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.recipe, self.train_cfg, self.augment_cfg = recipe, train, augment
        self.checkpoint_dir, self.fingerprint = Path(checkpoint_dir), fingerprint
        self.reporter = reporter or NullReporter()
        self.evaluate_fn = evaluate_fn
        self.extra = dict(extra or {})  # carried through checkpoints (e.g. a tracking run id)
        self.dist = check_trainable(recipe, train)
        # Under torchrun, train.batch_size is the global batch: each of the world_size ranks takes its share.
        self.local_batch = train.batch_size // self.dist.world_size
        self.device = distributed.rank_device(self.dist, resolve_device(train.device))
        # auto: NHWC on CUDA, except under train.compile: Inductor (torch 2.11, H200) failed a stride check in
        # the convolution backward of a channels_last DCGAN (bench/RESULTS.md, train.compile)
        self.channels_last = (self.device.type == "cuda" and not train.compile if train.channels_last == "auto"
                              else bool(train.channels_last))
        self.step = 0
        self.resumed_from: int | None = None
        self.best: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): it writes files, reports, samples and evaluates."""
        return self.dist.is_main

    @property
    def variant(self) -> str:
        return self.recipe.variant

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Build networks, EMA copies, optimisers, schedulers, augmentation and the data samplers."""
        cfg = self.train_cfg
        distributed.init(self.dist, self.device)
        self.dtype = resolve_precision(cfg.precision, self.device)
        torch.manual_seed(cfg.seed)
        self.nets = self.recipe.build()
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        for net in self.nets.values():
            net.to(self.device, memory_format=fmt)
        distributed.broadcast_state(self.dist, *self.nets.values())  # every rank starts from rank 0's weights
        self.ema = {name: copy.deepcopy(self.nets[src]).eval().requires_grad_(False)
                    for name, src in self.recipe.ema.items()}
        self._build_optimizers()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        ada_cfg = self.augment_cfg.ada
        self.ada: AugmentPipe | None = build_ada(ada_cfg).to(self.device) if ada_cfg.enabled else None
        augmenting = self.ada is not None or bool(self.augment_cfg.diffaugment_policies)
        self.recipe.bind(self.nets, augment=self._augment if augmenting else None, device=self.device)
        if cfg.compile:
            self.recipe.compile()
        if self.ada is not None and ada_cfg.mode == "adaptive" and ada_cfg.heuristic == "r_v" \
                and "r_v" not in self._probe():
            raise ConfigError(
                f"augment.ada.heuristic: r_v needs the discriminator-overfitting probe on a validation split, which "
                f"{self.variant} has not here (noise-to-image variants on an image set with a holdout of the same "
                f"shape have it); use heuristic: r_t")
        self.streams = {name: {k: t.to(self.device) for k, t in stream.items()}
                        for name, stream in self.recipe.streams.items()}
        # One sampler per stream (the first keeps train.seed: a one-stream recipe draws the batches it always did).
        self.samplers = {name: StreamSampler(len(next(iter(stream.values()))), cfg.seed + i, self.device)
                         for i, (name, stream) in enumerate(self.streams.items())}
        self.sign_acc = torch.zeros((), device=self.device)
        self.sign_count = 0
        self.p_log: list[tuple[int, torch.Tensor]] = []  # (step, p) at each adjustment, flushed at log time
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)  # first step with a non-finite loss
        self.skipped_in_a_row = 0
        if self.dist.enabled:  # latents, augmentation and dropout differ per rank; weights do not
            torch.manual_seed(cfg.seed + RANK_SEED_STRIDE * self.dist.rank)

    def _build_optimizers(self) -> None:
        """The recipe's optimisers (train.lr_g / train.lr_d override their rates) and LR schedules."""
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR] = {}
        self.opt_flags: dict[str, dict[str, bool]] = {}
        for name, spec in self.recipe.optimizers.items():
            self.opt_flags[name] = optimizer_flags(spec.kind, self.device)
            lr = (getattr(self.train_cfg, spec.lr_param) or spec.lr) * spec.lr_scale
            self.optimizers[name] = _optimizer(spec, self.nets, lr, self.opt_flags[name])
            if spec.decay_start < 1.0:
                def factor(step: int, start: float = spec.decay_start) -> float:
                    return linear_decay(step, start=start, total=self.train_cfg.steps)

                self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(self.optimizers[name], factor)

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        policies = self.augment_cfg.diffaugment_policies
        if policies:
            images = diffaugment(images, policies)
        if self.ada is not None:
            images = self.ada(images)
        return images

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ------------------------------------------------------------------ data

    def _next_batch(self) -> Batch:
        """This rank's share of the next global batch of every stream: uint8 images become floats in [-1, 1]
        (channels_last where set), labels stay int64."""
        batch: Batch = {}
        for name, stream in self.streams.items():
            idx = self.samplers[name].next(self.train_cfg.batch_size, self.local_batch, self.dist.rank)
            batch[name] = {key: self._as_input(t[idx]) for key, t in stream.items()}
        return batch

    def _as_input(self, t: torch.Tensor) -> torch.Tensor:
        if t.dtype != torch.uint8:
            return t
        x = to_float(t)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    # ------------------------------------------------------------------ step

    def train_step(self) -> dict[str, torch.Tensor]:
        """Every phase due at this step, in order; returns detached statistics (no host sync)."""
        stats: dict[str, torch.Tensor] = {}
        batch: Batch | None = None
        for phase in self.recipe.phases:
            if not phase.due(self.step):
                continue
            for _ in range(phase.repeats):
                if phase.new_batch or batch is None:
                    batch = self._next_batch()
                stats.update(self._update(phase, batch))
        self.step += 1
        distributed.broadcast_state(self.dist, *self.nets.values(), buffers_only=True)  # as DDP's broadcast_buffers
        self._update_ema()
        for sched in self.schedulers.values():
            sched.step()
        return stats

    def _update(self, phase: Phase, batch: Batch) -> dict[str, torch.Tensor]:
        """One optimiser update of ``phase``; its frozen networks get no weight gradients (their gradients
        would be computed and thrown away)."""
        opt = self.optimizers[phase.optimizer]
        opt.zero_grad(set_to_none=True)
        frozen = [self.nets[n] for n in phase.frozen]
        for net in frozen:
            net.requires_grad_(False)
        try:
            with self._autocast():
                loss, stats = self.recipe.loss(phase.name, batch)
            if self._optimise(loss, opt):
                self.recipe.after_update(phase.name)
        finally:
            for net in frozen:
                net.requires_grad_(True)
        if "d_real_sign" in stats:
            self._ada_observe(stats["d_real_sign"])
        return stats

    def _optimise(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> bool:
        """Back-propagate, average the gradients over the ranks, and step. ``on_nan: stop`` records the
        first non-finite loss without a host sync (checked at log and checkpoint time); ``skip`` drops the
        update (one sync per step; under torchrun every rank skips when any rank's loss is non-finite)."""
        finite = torch.isfinite(loss.detach())
        if self.train_cfg.on_nan == "skip":
            if not bool(distributed.minimum(self.dist, finite.int())):
                opt.zero_grad(set_to_none=True)
                self.skipped_in_a_row += 1
                if self.skipped_in_a_row > MAX_SKIPPED_STEPS:
                    self._diverged(f"{MAX_SKIPPED_STEPS} updates in a row had a non-finite loss")
                return False
            self.skipped_in_a_row = 0
        else:
            self.first_bad = torch.where((self.first_bad < 0) & ~finite, self.step + 1, self.first_bad)
        self.scaler.scale(loss).backward()
        distributed.average_gradients(self.dist, [p for group in opt.param_groups for p in group["params"]])
        self.scaler.step(opt)
        self.scaler.update()
        return True

    def _diverged(self, what: str) -> None:
        ckpts = checkpoints.checkpoints(self.checkpoint_dir)
        kept = f"the last good checkpoint, {ckpts[-1]}, is kept" if ckpts else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"{what} (variant {self.variant}); {kept}. Lower the learning rates (train.lr_g, train.lr_d), "
            f"use train.precision: fp32, or set train.on_nan: skip.")

    def check_finite(self) -> None:
        """Raise TrainingDiverged if any loss since the start was NaN or infinite (one host sync; under
        torchrun a collective: every rank raises, with the earliest step any rank saw)."""
        bad = self.first_bad
        if self.dist.enabled:
            never = torch.iinfo(torch.int64).max
            bad = distributed.minimum(self.dist, torch.where(bad < 0, never, bad))
            bad = torch.where(bad == never, -1, bad)
        first = int(bad)
        if first >= 0:
            self._diverged(f"a loss became NaN or infinite at step {first}")

    def _ada_observe(self, sign_mean: torch.Tensor) -> None:
        """Accumulate E[sign(D(real))]; adjust p every ``augment.ada.interval`` minibatches
        (``augment.ada.mode: fixed`` keeps p where it started). Under torchrun r_t is averaged over the
        ranks, so p moves alike everywhere."""
        if self.ada is None or self.augment_cfg.ada.mode == "fixed" or self.augment_cfg.ada.heuristic == "r_v":
            return
        self.sign_acc += sign_mean
        self.sign_count += 1
        cfg = self.augment_cfg.ada
        if self.sign_count >= cfg.interval:
            r_t = distributed.average(self.dist, self.sign_acc / self.sign_count)
            self.ada.p.copy_(ada_adjust(self.ada.p, r_t, target=cfg.target,
                                        batch_images=self.train_cfg.batch_size * self.sign_count,
                                        speed_kimg=cfg.speed_kimg))
            self.p_log.append((self.step + 1, self.ada.p.detach().clone()))
            self.sign_acc.zero_()
            self.sign_count = 0

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Every EMA copy follows its network with a half-life of ``train.ema_kimg`` thousand images."""
        cfg = self.train_cfg
        if cfg.ema_kimg <= 0:
            beta = 0.0
        else:
            ema_nimg = cfg.ema_kimg * 1000
            if cfg.ema_rampup > 0:
                ema_nimg = min(ema_nimg, self.step * cfg.batch_size * cfg.ema_rampup)
            beta = 0.5 ** (cfg.batch_size / max(ema_nimg, 1e-8))
        for name, src in self.recipe.ema.items():
            ema, net = self.ema[name], self.nets[src]
            torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1.0 - beta)
            for b_ema, b in zip(ema.buffers(), net.buffers()):
                b_ema.copy_(b)

    @property
    def ada_p(self) -> float:
        return float(self.ada.p) if self.ada is not None else 0.0

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs: networks and EMA copies (by name), optimisers, LR schedules,
        the family's extra state, the AMP scaler, ADA, the RNG streams, the data order and the history."""
        state = {
            "step": self.step, "fingerprint": self.fingerprint,
            **{name: net.state_dict() for name, net in {**self.nets, **self.ema}.items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "schedulers": {name: s.state_dict() for name, s in self.schedulers.items()},
            "family_state": self.recipe.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ada_p": self.ada_p, "sign_acc": float(self.sign_acc), "sign_count": self.sign_count,
            "rng_torch": torch.get_rng_state(),
            "samplers": {name: s.state_dict() for name, s in self.samplers.items()},
            "history": self.history, "extra": self.extra, "best": self.best, "evals": self.evals,
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _rng_state(self) -> dict[str, torch.Tensor]:
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_checkpoint(self) -> Path:
        """Write ``ckpt-STEP.pt`` atomically and keep the newest ``train.keep_checkpoints``.

        Under torchrun every rank calls this: the ranks' RNG states are gathered into the file, rank 0
        writes it, and the others wait at a barrier until it is in place."""
        rng_ranks = distributed.gather_objects(self.dist, self._rng_state()) if self.dist.enabled else None
        path = self.checkpoint_dir / f"ckpt-{self.step:08d}.pt"
        if self.is_main:
            state = self.state_dict()
            if rng_ranks is not None:
                state["rng_ranks"] = rng_ranks
            save_torch(state, path)
            checkpoints.prune(self.checkpoint_dir, self.train_cfg.keep_checkpoints)
        distributed.barrier(self.dist)
        return path

    def load_checkpoint(self, state: dict[str, Any]) -> None:
        for name, net in {**self.nets, **self.ema}.items():
            net.load_state_dict(state[name])
        for name, opt in self.optimizers.items():
            _load_optimizer(opt, state["optimizers"][name], self.opt_flags[name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        self.recipe.load_state_dict(state["family_state"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ada is not None:
            self.ada.p.fill_(state["ada_p"])
        self.sign_acc.fill_(state["sign_acc"])
        self.sign_count = state["sign_count"]
        self.step = self.resumed_from = int(state["step"])
        self._load_rng(state)
        for name, sampler in self.samplers.items():
            sampler.load_state_dict(state["samplers"][name])
        self.history = list(state["history"])
        self.best = dict(state.get("best", {}))
        self.evals = list(state.get("evals", []))
        self.extra = {**state["extra"], **self.extra}

    def _load_rng(self, state: dict[str, Any]) -> None:
        """Restore this process's RNG streams (under torchrun: its own rank's, when the world size matches)."""
        if self.dist.enabled:
            ranks = state.get("rng_ranks")
            if ranks and len(ranks) == self.dist.world_size:
                mine = ranks[self.dist.rank]
                torch.set_rng_state(mine["cpu"].cpu())
                if "cuda" in mine and self.device.type == "cuda":
                    torch.cuda.set_rng_state(mine["cuda"].cpu(), self.device)
            else:  # written by another number of processes: fresh, distinct streams per rank
                torch.manual_seed(self.train_cfg.seed + RANK_SEED_STRIDE * self.dist.rank + self.step)
            return
        torch.set_rng_state(state["rng_torch"].cpu())
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), self.device)

    def checkpoint_extra(self) -> dict[str, Any]:
        """``extra`` of the newest readable checkpoint of this configuration (e.g. its tracking run), or {}."""
        return checkpoints.latest_extra(self.checkpoint_dir, self.fingerprint)

    def resume(self) -> int | None:
        """Load the newest readable checkpoint of this configuration; return its step.

        Temporary files of killed writes are removed; unreadable checkpoints are moved to
        ``checkpoints/unreadable/`` with a warning (never deleted); checkpoints of another configuration,
        with their ``best.pt``, are moved to a ``checkpoints/previous-DATE/`` folder of their own and training
        starts fresh. Under torchrun rank 0 chooses the file and every rank loads that one.
        """
        state, path = self._find_checkpoint() if self.is_main else (None, None)
        path = distributed.broadcast_object(self.dist, None if path is None else str(path))
        if path is None:
            return None
        if state is None:
            state = load_torch(path, map_location=self.device)
        self.load_checkpoint(state)
        if self.is_main:
            self._adopt_best()
        return self.step

    def _adopt_best(self) -> None:
        """``best.pt`` is written at an evaluation, before that step's checkpoint: after a kill between the
        two, the resumed state's best is older than the file's. Take the file's (same configuration only),
        so a later, worse evaluation never replaces it."""
        path = self.checkpoint_dir / BEST
        key, higher = self.recipe.primary_metric, self.recipe.higher_is_better
        try:
            saved = load_torch(path) if path.is_file() else None
        except Exception:
            saved = None
        if not saved or saved.get("fingerprint") != self.fingerprint or key not in saved:
            return
        value, best = float(saved[key]), self.best.get(key)
        if best is None or (value > best if higher else value < best):
            self.best = {key: value, "step": float(saved.get("best_step", -1))}

    def _fits(self, state: dict[str, Any]) -> bool:
        """Whether the checkpoint was written for this configuration and holds this code's networks (their
        parameter names and shapes can change between releases while the params stay the same)."""
        if state.get("fingerprint") != self.fingerprint:
            return False
        for name, net in self.nets.items():
            saved, ours = state.get(name, {}), net.state_dict()
            if saved.keys() != ours.keys() or any(saved[k].shape != v.shape for k, v in ours.items()):
                return False
        return True

    def _find_checkpoint(self) -> tuple[dict[str, Any] | None, Path | None]:
        folder = self.checkpoint_dir
        for stale in checkpoints.remove_stale_temporaries(folder):
            print(f"note: removed {stale}, left by a write that was killed", file=sys.stderr)
        candidates = list(reversed(checkpoints.checkpoints(folder)))
        unreadable: list[Path] = []
        for path in candidates:
            try:
                state = load_torch(path, map_location=self.device)
            except Exception as err:
                moved = checkpoints.quarantine(folder, path)
                unreadable.append(moved)
                print(f"warning: checkpoint {path} is unreadable ({type(err).__name__}); moved it to {moved} "
                      "and trying an older one", file=sys.stderr)
                continue
            if not self._fits(state):
                rest = [p for p in candidates if p.exists()] + [folder / BEST]
                stash = checkpoints.set_aside(folder, rest)
                print(f"note: checkpoints in {folder} belong to another configuration; "
                      f"moved them to {stash} and starting fresh", file=sys.stderr)
                return None, None
            return state, path
        if unreadable:
            print(f"WARNING: none of the {len(unreadable)} checkpoint(s) in {folder} could be read; they are "
                  f"kept in {folder / 'unreadable'}. TRAINING STARTS AGAIN FROM STEP 0.", file=sys.stderr)
        return None, None

    # ------------------------------------------------------------------ loop

    def _probe(self) -> dict[str, torch.Tensor]:
        """The recipe's optional ``probe()`` statistics (e.g. the noise family's overfitting heuristics),
        measured without gradients and without side effects on training: the networks' buffers (batch-norm
        running statistics, spectral-norm vectors) are restored afterwards and the random streams forked."""
        probe = getattr(self.recipe, "probe", None)
        if probe is None:
            return {}
        buffers = [b for net in self.nets.values() for b in net.buffers()]
        saved = [b.clone() for b in buffers]
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices), self._autocast():
                return probe()
        finally:
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)

    def _log(self, stats: dict[str, torch.Tensor], bar: tqdm) -> None:
        probe = self._probe()
        cfg = self.augment_cfg.ada
        if self.ada is not None and cfg.mode == "adaptive" and cfg.heuristic == "r_v":
            # the probe is the same on every rank (same weights, same fixed images), so p moves alike everywhere
            self.ada.p.copy_(ada_adjust(self.ada.p, probe["r_v"].float(), target=cfg.target,
                                        batch_images=self.train_cfg.batch_size * self.train_cfg.log_every,
                                        speed_kimg=cfg.speed_kimg))
            self.p_log.append((self.step, self.ada.p.detach().clone()))
        values = {k: float(v) for k, v in (stats | probe).items()}
        values["ada_p"] = self.ada_p
        if self.p_log:  # every adjustment since the last log, in one host sync
            ps = torch.stack([p for _, p in self.p_log]).tolist()
            self.reporter.series("ada_p", [(step, p) for (step, _), p in zip(self.p_log, ps)])
            self.p_log.clear()
        self.check_finite()
        self.history.append({"step": float(self.step), **values})
        self.reporter.scalars(self.step, values)
        bar.set_postfix({k: f"{values[k]:.3f}" for k in ("loss_d", "loss_g") if k in values} | {"p": f"{self.ada_p:.3f}"})

    def _periodic_eval(self) -> None:
        """Score the exported artifact; keep it as ``best.pt`` when its primary metric is the best so far."""
        payload = self.export()
        result = self.evaluate_fn(payload)
        self.reporter.scalars(self.step, result)
        self.evals.append({"step": float(self.step), **{k: float(v) for k, v in result.items()}})
        key, higher = self.recipe.primary_metric, self.recipe.higher_is_better
        if key in result:
            value, best = float(result[key]), self.best.get(key)
            if best is None or (value > best if higher else value < best):
                self.best = {key: value, "step": float(self.step)}
                save_torch({**payload, key: value, "best_step": self.step, "fingerprint": self.fingerprint},
                           self.checkpoint_dir / BEST)
        for net in self.ema.values():
            net.eval()

    def sample_grid(self) -> torch.Tensor:
        """uint8 (C, H, W) grid of the recipe's fixed inputs through the EMA networks."""
        return self.recipe.sample_grid(self.ema, self.device)

    def fit(self) -> TrainResult:
        """Train up to ``train.steps`` steps, resuming if a checkpoint exists.

        Under torchrun every rank runs this loop; statistics, sample grids, periodic evaluation and the
        progress bar come from rank 0 only (its own batch's statistics), and rank 0 writes checkpoints."""
        cfg = self.train_cfg
        self.setup()
        self.resume()
        if not self.is_main:
            self.reporter, self.evaluate_fn = NullReporter(), None
        start_step, started = self.step, time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {self.variant}", unit="step",
                   disable=None if self.is_main else True, dynamic_ncols=True)
        with bar:
            while self.step < cfg.steps:
                for net in self.nets.values():
                    net.train()
                stats = self.train_step()
                bar.update(1)
                self._after_step(stats, bar)
        if self.step > cfg.steps and self.is_main:
            print(f"note: the checkpoint is at step {self.step}, past train.steps={cfg.steps}; nothing to train",
                  file=sys.stderr)
        seconds = time.perf_counter() - started
        done = self.step - start_step
        replicas = self.replica_report() if self.dist.enabled else []
        if len({r["digest"] for r in replicas}) > 1 and self.is_main:
            print(f"warning: the {len(replicas)} processes ended with different weights: {replicas}", file=sys.stderr)
        batches = sum(p.repeats for step in range(start_step, self.step) for p in self.recipe.phases
                      if p.new_batch and p.due(step))
        return TrainResult(steps=self.step, resumed_from=self.resumed_from, ada_p=self.ada_p, best=self.best,
                           img_per_s=batches * cfg.batch_size / seconds if done else 0.0,
                           seconds=seconds, variant=self.variant, history=self.history, evals=self.evals,
                           world_size=self.dist.world_size, replicas=replicas)

    def _after_step(self, stats: dict[str, torch.Tensor], bar: tqdm) -> None:
        """Logging, samples, periodic evaluation and checkpoints due at this step (the collectives inside,
        check_finite and save_checkpoint, run on every rank at the same steps)."""
        cfg = self.train_cfg

        def due(every: int) -> bool:
            return self.step % every == 0 or self.step == cfg.steps

        if due(cfg.log_every):
            self._log(stats, bar)
        if self.is_main and due(cfg.sample_every):
            self.reporter.image(self.step, self.sample_grid())
            if bar.disable and self.history:  # no terminal: a plain progress line instead
                last = self.history[-1]
                losses = "".join(f"  {k} {last[k]:.3f}" for k in ("loss_d", "loss_g") if k in last)
                print(f"step {self.step}/{cfg.steps}{losses}  ada_p {last['ada_p']:.3f}", file=sys.stderr, flush=True)
        if cfg.eval_every and due(cfg.eval_every):
            self.check_finite()
            if self.evaluate_fn is not None:
                self._periodic_eval()
        if due(cfg.checkpoint_every):
            self.check_finite()
            self.save_checkpoint()

    def replica_report(self) -> list[dict[str, Any]]:
        """Every rank's step and a digest of its networks' and EMA copies' weights and buffers, in rank order
        (a collective under torchrun). Data-parallel ranks agree on all of them."""
        h = hashlib.sha256()
        for module in (*self.nets.values(), *self.ema.values()):
            for t in module.state_dict().values():
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        mine = {"rank": self.dist.rank, "step": self.step, "digest": h.hexdigest()[:16]}
        return distributed.gather_objects(self.dist, mine)

    def close(self) -> None:
        """Under torchrun: wait until every rank is here (rank 0 has written its outputs), then leave the
        process group. A no-op for a single process."""
        distributed.shutdown(self.dist)

    def export(self) -> dict[str, Any]:
        """The artifact payload (``models/generator.pt``): the recipe's export of the EMA networks."""
        return self.recipe.export(self.ema, self.step)


def optimizer_flags(optimizer: str, device: torch.device) -> dict[str, bool]:
    """Kernel choice for ``optimizer`` (adam or rmsprop) on ``device``: fused where the optimiser has a
    fused kernel (Adam), else foreach, on CUDA; the CPU keeps PyTorch's default (per-parameter loop)."""
    if device.type != "cuda":
        return {}
    cls = torch.optim.RMSprop if optimizer == "rmsprop" else torch.optim.Adam
    return {"fused": True} if "fused" in inspect.signature(cls).parameters else {"foreach": True}


def _optimizer(spec: OptimizerSpec, nets: dict[str, nn.Module], lr: float,
               flags: dict[str, bool]) -> torch.optim.Optimizer:
    params = [p for name in spec.networks for p in nets[name].parameters()]
    if spec.kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, **flags)
    return torch.optim.Adam(params, lr=lr, betas=spec.betas, **flags)


def _load_optimizer(opt: torch.optim.Optimizer, saved: dict[str, Any], flags: dict[str, bool]) -> None:
    """Load optimiser state but keep this device's kernel choice (``load_state_dict`` would take the saved
    fused/foreach flags, which may come from another device) and its placement of the step counters."""
    groups = [{**g, **{k: flags.get(k) for k in ("fused", "foreach") if k in g}} for g in saved["param_groups"]]
    opt.load_state_dict({**saved, "param_groups": groups})
