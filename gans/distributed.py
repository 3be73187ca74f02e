"""Data-parallel training over processes started by ``torchrun``.

Every rank holds a full copy of G, D, G_ema and the optimisers, trains on its
own share of each global batch and ends every update with identical weights.
Gradients are averaged with one ``all_reduce`` of the flattened gradients
after each backward pass, rather than by wrapping the networks in
``DistributedDataParallel``:

- the GAN objective calls D through ``features``/``logits``/``q``/``aux``
  rather than ``forward``, several times per step; DDP's reducer only sees
  ``forward`` calls and expects one forward/backward pair per iteration;
- G's backward runs through D, so D's parameters receive gradients in the G
  phase that must not be reduced (they are discarded); DDP would all-reduce
  them anyway, or need ``find_unused_parameters`` and static-graph tricks;
- gradient penalties (WGAN-GP, R1, ...) differentiate D's output with
  ``create_graph=True``, which DDP does not support.

Averaging exactly the gradients an optimiser is about to apply is exact for
any composition and costs one collective per optimiser step (no overlap with
the backward pass; the networks here are small). Buffers (batch-norm running
statistics, spectral-norm vectors) are broadcast from rank 0 after each step,
as DDP's ``broadcast_buffers`` does; batch-norm normalises with per-rank
batch statistics, as with DDP without SyncBatchNorm.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gans.config import ConfigError


@dataclass(frozen=True)
class DistContext:
    """This process's place among the training processes (one process, rank 0, when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env(mode: bool | str, env: Mapping[str, str] | None = None) -> DistContext:
    """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` according to ``train.distributed``.

    ``auto`` trains data-parallel when torchrun started more than one process; ``true`` insists on a
    torchrun launch; ``false`` refuses one with several processes (each would train and write alone).
    """
    env = os.environ if env is None else env
    launched = "RANK" in env and "WORLD_SIZE" in env
    world = int(env.get("WORLD_SIZE", "1")) if launched else 1
    if mode is False:
        if world > 1:
            raise ConfigError(f"train.distributed: false, but torchrun started {world} processes; set it to auto "
                              "or true, or launch one process without torchrun")
        return DistContext()
    if mode is True and not launched:
        raise ConfigError("train.distributed: true needs a torchrun launch (RANK and WORLD_SIZE are unset); run "
                          "torchrun --nproc_per_node N -m pipeline.cli train, or set it to auto")
    if world <= 1:
        return DistContext()
    return DistContext(rank=int(env["RANK"]), world_size=world, local_rank=int(env.get("LOCAL_RANK", "0")))


def rank_device(ctx: DistContext, device: torch.device) -> torch.device:
    """Each rank's device: ``cuda:LOCAL_RANK`` on GPUs, the CPU otherwise."""
    if not ctx.enabled or device.type != "cuda":
        return device
    if device.index is not None:
        raise ConfigError(f"train.device: {device} names one GPU, but under torchrun each process uses "
                          "cuda:LOCAL_RANK; use auto or cuda")
    if ctx.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"train.device: LOCAL_RANK {ctx.local_rank} has no GPU ({torch.cuda.device_count()} "
                          "visible); start at most one process per GPU (torchrun --nproc_per_node)")
    return torch.device("cuda", ctx.local_rank)


def init(ctx: DistContext, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on the CPU) from torchrun's environment."""
    if not ctx.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=ctx.rank, world_size=ctx.world_size, device_id=device)
    else:
        dist.init_process_group("gloo", rank=ctx.rank, world_size=ctx.world_size)


def shutdown(ctx: DistContext) -> None:
    """Wait for every rank (e.g. while rank 0 writes the outputs), then leave the process group."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def _flat_apply(tensors: list[torch.Tensor], collective) -> None:
    """Run ``collective`` on one flat copy of ``tensors`` (grouped by dtype), then copy the result back."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])  # reshape: channels_last tensors are not views
        collective(flat)
        for t, chunk in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(chunk.view_as(t))


def average_gradients(ctx: DistContext, params: Iterable[torch.Tensor]) -> None:
    """Replace each gradient by its mean over the ranks (one all_reduce per dtype, no host sync).

    Parameters without a gradient are left out on every rank alike: the phases are the same code on
    every rank, so the same parameters receive gradients."""
    if not ctx.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        _flat_apply(grads, lambda flat: dist.all_reduce(flat.div_(ctx.world_size)))


def broadcast_state(ctx: DistContext, *modules: nn.Module, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters (unless ``buffers_only``) and floating-point buffers to every rank."""
    if not ctx.enabled:
        return
    tensors: list[torch.Tensor] = []
    for m in modules:
        if not buffers_only:
            tensors += [p.data for p in m.parameters()]
        tensors += [b for b in m.buffers() if b.is_floating_point()]
    if tensors:
        _flat_apply(tensors, lambda flat: dist.broadcast(flat, src=0))


def average(ctx: DistContext, value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over the ranks (a new tensor; no host sync)."""
    if not ctx.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out.div_(ctx.world_size)


def minimum(ctx: DistContext, value: torch.Tensor) -> torch.Tensor:
    """The minimum of a tensor over the ranks (a new tensor)."""
    if not ctx.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MIN)
    return out


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
