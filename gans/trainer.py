"""The training loop: setup, one step, EMA, ADA control, checkpoints and resume.

Statistics leave the trainer through a :class:`Reporter`; where they go
(MLflow, a CSV for DVC plots, the terminal) is the caller's business.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
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
                        "on_nan", "eval_every", "eval_samples")
MAX_SKIPPED_STEPS = 50  # train.on_nan: skip gives up after this many skipped updates in a row


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
        resumable = {k: v for k, v in to_dict(train).items() if k not in RESUMABLE_TRAIN_KEYS}
        self.fingerprint = fingerprint({"model": to_dict(model), "train": resumable,
                                        "augment": to_dict(augment), "data": data_hash})
        self.step = 0
        self.resumed_from: int | None = None
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Build networks, optimisers, EMA, augmentation and the data sampler on the device."""
        cfg, v = self.train_cfg, self.variant
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_precision(cfg.precision, self.device)
        torch.manual_seed(cfg.seed)
        self.G, self.D = build_networks(v.architecture, self.spec)
        self.G.to(self.device)
        self.D.to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_g = _optimizer(v, self.G, cfg.lr_g or v.lr_g)
        self.opt_d = _optimizer(v, self.D, cfg.lr_d or v.lr_d)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.ada: AugmentPipe | None = build_ada(self.augment_cfg.ada).to(self.device) if self.augment_cfg.ada.enabled else None
        augmenting = self.ada is not None or bool(self.augment_cfg.diffaugment_policies)
        self.objective = build_objective(v, self.G, self.D, self._augment if augmenting else None)
        self.images = self.data.images.to(self.device)
        self.labels = None if self.data.labels is None else self.data.labels.to(self.device)
        self.sampler = torch.Generator().manual_seed(cfg.seed)
        self.order = torch.empty(0, dtype=torch.int64)
        self.cursor = 0
        self.sign_acc = torch.zeros((), device=self.device)
        self.sign_count = 0
        self.p_log: list[tuple[int, torch.Tensor]] = []  # (step, p) at each adjustment, flushed at log time
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)  # first step with a non-finite loss
        self.skipped_in_a_row = 0

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
        n, b = len(self.data), self.train_cfg.batch_size
        if self.cursor + b > len(self.order):
            self.order = torch.randperm(n, generator=self.sampler)
            self.cursor = 0
        idx = self.order[self.cursor:self.cursor + b].to(self.device)
        self.cursor += b
        real = to_float(self.images[idx])
        return real, None if self.labels is None else self.labels[idx]

    def _latents(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z (N, z_dim [+ InfoGAN continuous codes in U(-1, 1)]) and labels (or the categorical code)."""
        b, spec = self.train_cfg.batch_size, self.spec
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
        with self._autocast():
            loss_g, g_stats = self.objective.g_phase(z, fake_y, real, real_y)
        self._optimise(loss_g, self.opt_g)
        stats.update(g_stats)
        self.step += 1
        self._update_ema()
        return stats

    def _optimise(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> bool:
        """Back-propagate and step. ``on_nan: stop`` records the first non-finite loss without a host
        sync (checked at log and checkpoint time); ``skip`` drops the update (one sync per step)."""
        finite = torch.isfinite(loss.detach())
        if self.train_cfg.on_nan == "skip":
            if not bool(finite):
                opt.zero_grad(set_to_none=True)
                self.skipped_in_a_row += 1
                if self.skipped_in_a_row > MAX_SKIPPED_STEPS:
                    self._diverged(f"{MAX_SKIPPED_STEPS} updates in a row had a non-finite loss")
                return False
            self.skipped_in_a_row = 0
        else:
            self.first_bad = torch.where((self.first_bad < 0) & ~finite, self.step + 1, self.first_bad)
        self.scaler.scale(loss).backward()
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
        """Raise TrainingDiverged if any loss since the start was NaN or infinite (one host sync)."""
        first = int(self.first_bad)
        if first >= 0:
            self._diverged(f"a loss became NaN or infinite at step {first}")

    def _ada_observe(self, sign_mean: torch.Tensor) -> None:
        """Accumulate E[sign(D(real))]; adjust p every ``augment.ada.interval`` minibatches
        (``augment.ada.mode: fixed`` keeps p where it started)."""
        if self.ada is None or self.augment_cfg.ada.mode == "fixed":
            return
        self.sign_acc += sign_mean
        self.sign_count += 1
        cfg = self.augment_cfg.ada
        if self.sign_count >= cfg.interval:
            r_t = self.sign_acc / self.sign_count
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
            "order": self.order, "cursor": self.cursor,
            "history": self.history, "extra": self.extra, "best": self.best,
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_checkpoint(self) -> Path:
        """Write ``ckpt-STEP.pt`` atomically and keep the newest ``train.keep_checkpoints``."""
        path = save_torch(self.state_dict(), self.checkpoint_dir / f"ckpt-{self.step:08d}.pt")
        for old in sorted(self.checkpoint_dir.glob("ckpt-*.pt"))[: -self.train_cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ada is not None:
            self.ada.p.fill_(state["ada_p"])
        self.sign_acc.fill_(state["sign_acc"])
        self.sign_count = state["sign_count"]
        torch.set_rng_state(state["rng_torch"])
        self.sampler.set_state(state["rng_sampler"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.order, self.cursor = state["order"], state["cursor"]
        self.history = list(state["history"])
        self.best = dict(state.get("best", {}))
        self.extra = {**state["extra"], **self.extra}
        self.step = self.resumed_from = int(state["step"])

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
        """
        candidates = sorted(self.checkpoint_dir.glob("ckpt-*.pt"), reverse=True)
        for path in candidates:
            try:
                state = load_torch(path, map_location=self.device)
            except Exception as err:
                print(f"warning: checkpoint {path} is unreadable ({type(err).__name__}); trying an older one", file=sys.stderr)
                continue
            if state.get("fingerprint") != self.fingerprint:
                stash = self.checkpoint_dir / "previous"
                shutil.rmtree(stash, ignore_errors=True)
                stash.mkdir(parents=True)
                for p in candidates:
                    p.rename(stash / p.name)
                print(f"note: checkpoints in {self.checkpoint_dir} belong to another configuration; "
                      f"moved them to {stash} and starting fresh", file=sys.stderr)
                return None
            self.load_checkpoint(state)
            return self.step
        return None

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
        self.check_finite()
        result = self.evaluate_fn(self.G_ema, self.spec)
        self.reporter.scalars(self.step, result)
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
        """Train up to ``train.steps`` generator steps, resuming if a checkpoint exists."""
        cfg = self.train_cfg
        self.setup()
        self.resume()
        start_step, started = self.step, time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {self.variant.name}", unit="step",
                   disable=None, dynamic_ncols=True)
        with bar:
            while self.step < cfg.steps:
                self.G.train()
                self.D.train()
                stats = self.train_step()
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(stats, bar)
                if self.step % cfg.sample_every == 0 or self.step == cfg.steps:
                    self.reporter.image(self.step, self.sample_grid())
                    if bar.disable and self.history:  # no terminal: a plain progress line instead
                        last = self.history[-1]
                        print(f"step {self.step}/{cfg.steps}  loss_d {last['loss_d']:.3f}  loss_g {last['loss_g']:.3f}"
                              f"  ada_p {last['ada_p']:.3f}", file=sys.stderr, flush=True)
                if self.evaluate_fn is not None and cfg.eval_every and (
                        self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                    self._periodic_eval()
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.check_finite()
                    self.save_checkpoint()
        if self.step > cfg.steps:
            print(f"note: the checkpoint is at step {self.step}, past train.steps={cfg.steps}; nothing to train",
                  file=sys.stderr)
        seconds = time.perf_counter() - started
        done = self.step - start_step
        return TrainResult(steps=self.step, resumed_from=self.resumed_from, ada_p=self.ada_p, best=self.best,
                           img_per_s=done * cfg.batch_size * self.variant.n_critic / seconds if done else 0.0,
                           seconds=seconds, variant=self.variant.name, history=self.history)

    def generator_payload(self) -> dict[str, Any]:
        """What ``models/generator.pt`` holds: EMA weights plus everything needed to rebuild G."""
        return {
            "state_dict": self.G_ema.state_dict(),
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


def _optimizer(variant: Variant, module: nn.Module, lr: float) -> torch.optim.Optimizer:
    if variant.optimizer == "rmsprop":
        return torch.optim.RMSprop(module.parameters(), lr=lr)
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(variant.beta1, variant.beta2))


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the EMA generator saved by the train stage; returns (G in eval mode, payload)."""
    payload = load_torch(path, map_location=device)
    if not isinstance(payload, dict) or "state_dict" not in payload or "spec" not in payload:
        raise ValueError(f"{path} is not a generator file written by the train stage")
    spec = NetSpec(**payload["spec"])
    generator, _ = build_networks(payload["variant"]["architecture"], spec)
    generator.load_state_dict(payload["state_dict"])
    return generator.to(device).eval(), payload
