"""The training loop: setup, one step, EMA, ADA control, checkpoints and resume.

Statistics leave the trainer through a :class:`Reporter`; where they go
(MLflow, a CSV for DVC plots, the terminal) is the caller's business.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from gans import distributed
from gans.augment import AugmentPipe, ada_adjust, build_ada, diffaugment
from gans.config import AugmentConfig, ConfigError, ModelConfig, TrainConfig, to_dict
from gans.data import ImageSet, to_float
from gans.io import load_torch, save_torch
from gans.losses import LOSSES, REGULARIZERS, Extras, GANObjective
from gans.nets import NetSpec, build_networks, check_buildable
from gans.sampling import generate, grid_seeds_labels, image_grid
from gans.variants import Variant, check_variant_fits, resolve_variant


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


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; explicit devices must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} was asked for but no CUDA device is available; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: 'mps' was asked for but is not available; use auto or cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """Map a precision name to the autocast dtype (float32 = no autocast)."""
    if name == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
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
    evals: list[dict[str, float]] = field(default_factory=list)  # periodic evaluations: step, fid
    world_size: int = 1
    replicas: list[dict[str, Any]] = field(default_factory=list)  # per rank: step and weight digest


class Trainer:
    """Trains one variant on an in-memory image set, resumably."""

    def __init__(self, *, model: ModelConfig, train: TrainConfig, augment: AugmentConfig, data: ImageSet,
                 checkpoint_dir: str | Path, data_hash: str = "", reporter: Reporter | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.model_cfg, self.train_cfg, self.augment_cfg = model, train, augment
        self.data = data
        self.checkpoint_dir = Path(checkpoint_dir)
        self.reporter = reporter or NullReporter()
        self.extra = dict(extra or {})  # carried through checkpoints (e.g. a tracking run id)
        # Periodic evaluation: fn(G_ema, spec) -> {"fid": ...}; the best generator by FID is kept.
        self.evaluate_fn: Callable[[nn.Module, NetSpec], dict[str, float]] | None = None
        self.best: dict[str, float] = {}
        self.variant: Variant = resolve_variant(model)
        data_classes = len(data.classes) if data.labels is not None else 0
        check_variant_fits(self.variant, num_classes=data_classes)
        self.spec = build_spec(self.variant, model, channels=int(data.images.shape[1]),
                               resolution=int(data.images.shape[-1]), data_classes=data_classes)
        check_buildable(self.variant.architecture, self.spec)
        if train.batch_size > len(data):
            raise ConfigError(f"train.batch_size: {train.batch_size} is larger than the {len(data)} training images")
        # Under torchrun, train.batch_size is the global batch: each of the world_size ranks takes its share.
        self.dist = distributed.context_from_env(train.distributed)
        world = self.dist.world_size
        if train.batch_size % world:
            raise ConfigError(f"train.batch_size: {train.batch_size} does not split evenly over the {world} "
                              f"processes torchrun started; use a multiple of {world}")
        self.local_batch = train.batch_size // world
        self.device = distributed.rank_device(self.dist, resolve_device(train.device))
        self.channels_last = self.device.type == "cuda" if train.channels_last == "auto" else bool(train.channels_last)
        resumable = {k: v for k, v in to_dict(train).items() if k not in RESUMABLE_TRAIN_KEYS}
        # The resolved composition too: a preset whose definition changed between releases must not resume
        # from checkpoints of its old networks.
        composition = {k: v for k, v in asdict(self.variant).items() if k != "paper"}
        self.fingerprint = fingerprint({"model": to_dict(model), "train": resumable, "augment": to_dict(augment),
                                        "data": data_hash, "variant": composition,
                                        "spec": asdict(self.spec)})
        self.step = 0
        self.resumed_from: int | None = None
        self.history: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): it writes files, reports, samples and evaluates."""
        return self.dist.is_main

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Build networks, optimisers, EMA, augmentation and the data sampler on the device."""
        cfg, v = self.train_cfg, self.variant
        distributed.init(self.dist, self.device)
        self.dtype = resolve_precision(cfg.precision, self.device)
        torch.manual_seed(cfg.seed)
        self.G, self.D = build_networks(v.architecture, self.spec)
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        self.G.to(self.device, memory_format=fmt)
        self.D.to(self.device, memory_format=fmt)
        distributed.broadcast_state(self.dist, self.G, self.D)  # every rank starts from rank 0's weights
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_flags = optimizer_flags(v.optimizer, self.device)
        self.opt_g = _optimizer(v, self.G, cfg.lr_g or v.lr_g, self.opt_flags)
        self.opt_d = _optimizer(v, self.D, cfg.lr_d or v.lr_d, self.opt_flags)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.ada: AugmentPipe | None = build_ada(self.augment_cfg.ada).to(self.device) if self.augment_cfg.ada.enabled else None
        augmenting = self.ada is not None or bool(self.augment_cfg.diffaugment_policies)
        self.objective = build_objective(v, self.G, self.D, self._augment if augmenting else None)
        if cfg.compile:
            self._compile()
        self.images = self.data.images.to(self.device)
        self.labels = None if self.data.labels is None else self.data.labels.to(self.device)
        self.sampler = torch.Generator().manual_seed(cfg.seed)  # the global batch order, the same on every rank
        self.order = torch.empty(0, dtype=torch.int64, device=self.device)
        self.cursor = 0
        self.sign_acc = torch.zeros((), device=self.device)
        self.sign_count = 0
        self.p_log: list[tuple[int, torch.Tensor]] = []  # (step, p) at each adjustment, flushed at log time
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)  # first step with a non-finite loss
        self.skipped_in_a_row = 0
        if self.dist.enabled:  # latents, augmentation and dropout differ per rank; weights do not
            torch.manual_seed(cfg.seed + RANK_SEED_STRIDE * self.dist.rank)

    def _compile(self) -> None:
        """``torch.compile`` G and D's trunk in place (``nn.Module.compile``), so the modules and their
        ``state_dict`` keys stay as they are (no ``_orig_mod.``). D is compiled at its body because the
        objective calls ``features``/``logits``, not ``forward``; G_ema (sampling) stays eager. Gradient
        penalties run D eagerly: compiled graphs have no double backward (see ``gans.losses.gradient_norm``)."""
        self.G.compile()
        self.D.body.compile()

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

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's share of the next global batch: (local_batch, C, R, R) reals and their labels.
        The epoch's order goes to the device once per epoch; slicing it needs no host transfer."""
        n, b, rank = len(self.data), self.local_batch, self.dist.rank
        if self.cursor + self.train_cfg.batch_size > len(self.order):
            self.order = torch.randperm(n, generator=self.sampler).to(self.device)
            self.cursor = 0
        idx = self.order[self.cursor + rank * b:self.cursor + (rank + 1) * b]
        self.cursor += self.train_cfg.batch_size
        real = to_float(self.images[idx])
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        return real, None if self.labels is None else self.labels[idx]

    def _latents(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z (N, z_dim [+ InfoGAN continuous codes in U(-1, 1)]) and labels (or the categorical code)."""
        b, spec = self.local_batch, self.spec
        z = torch.randn(b, spec.z_dim, device=self.device)
        if spec.info_continuous:
            z = torch.cat([z, torch.rand(b, spec.info_continuous, device=self.device) * 2 - 1], dim=1)
        y = torch.randint(0, spec.num_classes, (b,), device=self.device) if spec.num_classes else None
        return z, y

    # ------------------------------------------------------------------ step

    def train_step(self) -> dict[str, torch.Tensor]:
        """n_critic D updates then one G update; returns detached statistics (no host sync)."""
        stats: dict[str, torch.Tensor] = {}
        d_labels = self.variant.conditional
        for _ in range(self.variant.n_critic):
            real, real_y = self._next_batch()
            real_y = real_y if d_labels else None
            z, fake_y = self._latents()
            self.opt_d.zero_grad(set_to_none=True)
            with self._autocast():
                loss_d, d_stats = self.objective.d_phase(real, real_y, z, fake_y)
            if self._optimise(loss_d, self.opt_d):
                self.objective.after_d_step()
            stats.update(d_stats)
            self._ada_observe(d_stats["d_real_sign"])
        z, fake_y = self._latents()
        self.opt_g.zero_grad(set_to_none=True)
        self.D.requires_grad_(False)  # G's update needs gradients through D, not D's own (8% of a DCGAN step)
        try:
            with self._autocast():
                loss_g, g_stats = self.objective.g_phase(z, fake_y, real, real_y)
            self._optimise(loss_g, self.opt_g)
        finally:
            self.D.requires_grad_(True)
        stats.update(g_stats)
        self.step += 1
        distributed.broadcast_state(self.dist, self.G, self.D, buffers_only=True)  # as DDP's broadcast_buffers
        self._update_ema()
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
        ckpts = sorted(self.checkpoint_dir.glob("ckpt-*.pt"))
        kept = f"the last good checkpoint, {ckpts[-1]}, is kept" if ckpts else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"{what} (variant {self.variant.name}); {kept}. Lower the learning rates (train.lr_g, train.lr_d), "
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
        if self.ada is None or self.augment_cfg.ada.mode == "fixed":
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
        cfg = self.train_cfg
        if cfg.ema_kimg <= 0:
            beta = 0.0
        else:
            ema_nimg = cfg.ema_kimg * 1000
            if cfg.ema_rampup > 0:
                ema_nimg = min(ema_nimg, self.step * cfg.batch_size * cfg.ema_rampup)
            beta = 0.5 ** (cfg.batch_size / max(ema_nimg, 1e-8))
        ema_params = list(self.G_ema.parameters())
        torch._foreach_lerp_(ema_params, list(self.G.parameters()), 1.0 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    @property
    def ada_p(self) -> float:
        return float(self.ada.p) if self.ada is not None else 0.0

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "fingerprint": self.fingerprint,
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ada_p": self.ada_p,
            "sign_acc": float(self.sign_acc), "sign_count": self.sign_count,
            "rng_torch": torch.get_rng_state(), "rng_sampler": self.sampler.get_state(),
            "order": self.order.cpu(), "cursor": self.cursor,
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
            for old in sorted(self.checkpoint_dir.glob("ckpt-*.pt"))[: -self.train_cfg.keep_checkpoints]:
                old.unlink(missing_ok=True)
        distributed.barrier(self.dist)
        return path

    def load_checkpoint(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        _load_optimizer(self.opt_g, state["opt_g"], self.opt_flags)
        _load_optimizer(self.opt_d, state["opt_d"], self.opt_flags)
        self.scaler.load_state_dict(state["scaler"])
        if self.ada is not None:
            self.ada.p.fill_(state["ada_p"])
        self.sign_acc.fill_(state["sign_acc"])
        self.sign_count = state["sign_count"]
        self.step = self.resumed_from = int(state["step"])
        self._load_rng(state)
        self.sampler.set_state(state["rng_sampler"].cpu())
        self.order, self.cursor = state["order"].to(self.device), state["cursor"]
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
        for path in sorted(self.checkpoint_dir.glob("ckpt-*.pt"), reverse=True):
            try:
                state = load_torch(path)
            except Exception:
                continue
            return dict(state.get("extra", {})) if state.get("fingerprint") == self.fingerprint else {}
        return {}

    def resume(self) -> int | None:
        """Load the newest readable checkpoint of this configuration; return its step.

        Corrupt checkpoints are skipped with a message; checkpoints of another
        configuration are moved to ``checkpoints/previous/`` and training starts fresh.
        Under torchrun rank 0 chooses the file and every rank loads that one.
        """
        state, path = self._find_checkpoint() if self.is_main else (None, None)
        path = distributed.broadcast_object(self.dist, None if path is None else str(path))
        if path is None:
            return None
        if state is None:
            state = load_torch(path, map_location=self.device)
        self.load_checkpoint(state)
        return self.step

    def _networks_fit(self, state: dict[str, Any]) -> bool:
        """Whether the checkpoint's weights have this code's parameter names and shapes (the networks of a
        preset can change between releases while its params stay the same)."""
        for key, net in (("G", self.G), ("D", self.D)):
            saved = state.get(key, {})
            ours = net.state_dict()
            if saved.keys() != ours.keys() or any(saved[k].shape != v.shape for k, v in ours.items()):
                return False
        return True

    def _find_checkpoint(self) -> tuple[dict[str, Any] | None, Path | None]:
        candidates = sorted(self.checkpoint_dir.glob("ckpt-*.pt"), reverse=True)
        for path in candidates:
            try:
                state = load_torch(path, map_location=self.device)
            except Exception as err:
                print(f"warning: checkpoint {path} is unreadable ({type(err).__name__}); trying an older one", file=sys.stderr)
                continue
            if state.get("fingerprint") != self.fingerprint or not self._networks_fit(state):
                stash = self.checkpoint_dir / "previous"
                shutil.rmtree(stash, ignore_errors=True)
                stash.mkdir(parents=True)
                for p in candidates:
                    p.rename(stash / p.name)
                print(f"note: checkpoints in {self.checkpoint_dir} belong to another configuration; "
                      f"moved them to {stash} and starting fresh", file=sys.stderr)
                return None, None
            return state, path
        return None, None

    # ------------------------------------------------------------------ loop

    def _log(self, stats: dict[str, torch.Tensor], bar: tqdm) -> None:
        values = {k: float(v) for k, v in stats.items()}
        values["ada_p"] = self.ada_p
        if self.p_log:  # every adjustment since the last log, in one host sync
            ps = torch.stack([p for _, p in self.p_log]).tolist()
            self.reporter.series("ada_p", [(step, p) for (step, _), p in zip(self.p_log, ps)])
            self.p_log.clear()
        self.check_finite()
        self.history.append({"step": float(self.step), **values})
        self.reporter.scalars(self.step, values)
        bar.set_postfix(loss_d=f"{values['loss_d']:.3f}", loss_g=f"{values['loss_g']:.3f}", p=f"{values['ada_p']:.3f}")

    def _periodic_eval(self) -> None:
        """Score the EMA generator; keep ``best.pt`` (generator payload) when its FID is the lowest so far."""
        result = self.evaluate_fn(self.G_ema, self.spec)
        self.reporter.scalars(self.step, result)
        self.evals.append({"step": float(self.step), **{k: float(v) for k, v in result.items()}})
        if "fid" in result and result["fid"] < self.best.get("fid", float("inf")):
            self.best = {"fid": float(result["fid"]), "step": float(self.step)}
            save_torch({**self.generator_payload(), "fid": result["fid"]}, self.checkpoint_dir / "best.pt")
        self.G_ema.eval()

    def sample_grid(self) -> torch.Tensor:
        """uint8 (C, H, W) grid of EMA samples with fixed seeds."""
        seeds, labels = grid_seeds_labels(self.spec.num_classes)
        images = generate(self.G_ema, seeds, labels, z_dim=self.spec.z_dim, device=self.device)
        return image_grid(images)

    def fit(self) -> TrainResult:
        """Train up to ``train.steps`` generator steps, resuming if a checkpoint exists.

        Under torchrun every rank runs this loop; statistics, sample grids, periodic evaluation and the
        progress bar come from rank 0 only (its own batch's statistics), and rank 0 writes checkpoints."""
        cfg = self.train_cfg
        self.setup()
        self.resume()
        if not self.is_main:
            self.reporter, self.evaluate_fn = NullReporter(), None
        start_step, started = self.step, time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {self.variant.name}", unit="step",
                   disable=None if self.is_main else True, dynamic_ncols=True)
        with bar:
            while self.step < cfg.steps:
                self.G.train()
                self.D.train()
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
        return TrainResult(steps=self.step, resumed_from=self.resumed_from, ada_p=self.ada_p, best=self.best,
                           img_per_s=done * cfg.batch_size * self.variant.n_critic / seconds if done else 0.0,
                           seconds=seconds, variant=self.variant.name, history=self.history, evals=self.evals,
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
                print(f"step {self.step}/{cfg.steps}  loss_d {last['loss_d']:.3f}  loss_g {last['loss_g']:.3f}"
                      f"  ada_p {last['ada_p']:.3f}", file=sys.stderr, flush=True)
        if cfg.eval_every and due(cfg.eval_every):
            self.check_finite()
            if self.evaluate_fn is not None:
                self._periodic_eval()
        if due(cfg.checkpoint_every):
            self.check_finite()
            self.save_checkpoint()

    def replica_report(self) -> list[dict[str, Any]]:
        """Every rank's step and a digest of its G, D and G_ema weights and buffers, in rank order (a
        collective under torchrun). Data-parallel ranks agree on all of them."""
        h = hashlib.sha256()
        for module in (self.G, self.D, self.G_ema):
            for t in module.state_dict().values():
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        mine = {"rank": self.dist.rank, "step": self.step, "digest": h.hexdigest()[:16]}
        return distributed.gather_objects(self.dist, mine)

    def close(self) -> None:
        """Under torchrun: wait until every rank is here (rank 0 has written its outputs), then leave the
        process group. A no-op for a single process."""
        distributed.shutdown(self.dist)

    def generator_payload(self) -> dict[str, Any]:
        """What ``models/generator.pt`` holds: EMA weights plus everything needed to rebuild G."""
        return {
            "state_dict": {k: v.contiguous() for k, v in self.G_ema.state_dict().items()},
            "spec": asdict(self.spec),
            "variant": {**asdict(self.variant), "regularizers": list(self.variant.regularizers)},
            "model": to_dict(self.model_cfg),
            "classes": list(self.data.classes),
            "step": self.step,
        }


def build_spec(variant: Variant, model: ModelConfig, *, channels: int, resolution: int, data_classes: int) -> NetSpec:
    """The network spec of ``variant`` for images of this shape and label count."""
    cond = variant.conditioning
    num_classes = data_classes if variant.conditional else variant.info_categories if cond == "infogan" else 0
    return NetSpec(channels=channels, resolution=resolution, z_dim=model.z_dim, width=model.width,
                   num_classes=num_classes, conditioning=cond,
                   info_continuous=variant.info_continuous if cond == "infogan" else 0,
                   d_norm=variant.d_norm, d_dropout=variant.d_dropout, minibatch_features=variant.minibatch_features,
                   spectral_norm_d="spectral-norm" in variant.regularizers,
                   spectral_norm_g="spectral-norm" in variant.regularizers and variant.architecture == "sagan",
                   attention_res=variant.attention_res or resolution // 2)


def build_objective(variant: Variant, G: nn.Module, D: nn.Module, augment=None) -> GANObjective:
    """The loss, regularizers and auxiliary objectives of ``variant`` bound to G and D."""
    regs = tuple(REGULARIZERS[r](**variant.reg_args.get(r, {})) for r in variant.regularizers if r in REGULARIZERS)
    extras = Extras(acgan=variant.conditioning == "acgan", infogan=variant.conditioning == "infogan",
                    info_categories=variant.info_categories, info_continuous=variant.info_continuous,
                    feature_matching=variant.feature_matching)
    return GANObjective(generator=G, discriminator=D, loss=LOSSES[variant.loss](**variant.loss_args),
                        regularizers=regs, extras=extras, **({"augment": augment} if augment else {}))


def optimizer_flags(optimizer: str, device: torch.device) -> dict[str, bool]:
    """Kernel choice for ``optimizer`` (adam or rmsprop) on ``device``: fused where the optimiser has a
    fused kernel (Adam), else foreach, on CUDA; the CPU keeps PyTorch's default (per-parameter loop)."""
    if device.type != "cuda":
        return {}
    cls = torch.optim.RMSprop if optimizer == "rmsprop" else torch.optim.Adam
    return {"fused": True} if "fused" in inspect.signature(cls).parameters else {"foreach": True}


def _optimizer(variant: Variant, module: nn.Module, lr: float, flags: dict[str, bool]) -> torch.optim.Optimizer:
    if variant.optimizer == "rmsprop":
        return torch.optim.RMSprop(module.parameters(), lr=lr, **flags)
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(variant.beta1, variant.beta2), **flags)


def _load_optimizer(opt: torch.optim.Optimizer, saved: dict[str, Any], flags: dict[str, bool]) -> None:
    """Load optimiser state but keep this device's kernel choice (``load_state_dict`` would take the saved
    fused/foreach flags, which may come from another device) and its placement of the step counters."""
    groups = [{**g, **{k: flags.get(k) for k in ("fused", "foreach") if k in g}} for g in saved["param_groups"]]
    opt.load_state_dict({**saved, "param_groups": groups})


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the EMA generator saved by the train stage; returns (G in eval mode, payload)."""
    payload = load_torch(path, map_location=device)
    if not isinstance(payload, dict) or "state_dict" not in payload or "spec" not in payload:
        raise ValueError(f"{path} is not a generator file written by the train stage")
    spec = NetSpec(**payload["spec"])
    generator, _ = build_networks(payload["variant"]["architecture"], spec)
    generator.load_state_dict(payload["state_dict"])
    return generator.to(device).eval(), payload
