"""Distributed data parallel (DDP) plumbing for ``torchrun``.

``torchrun`` puts ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
address in the environment; :func:`dist_info_from_env` reads them (only the
``bin/`` entry point calls it, library code takes a :class:`DistInfo`). The
backend is chosen at run time: NCCL on CUDA, gloo on CPU.

MGDA under DDP. Each rank holds a slice Z_r of the global embedding batch Z.
The global losses are the means of the per-rank losses, so the global gradients
w.r.t. Z are the concatenations of the per-rank ones (times 1/W). The min-norm
weight of MGDA-UB needs only three inner products,

    g11 = g1 . g1,   g12 = g1 . g2,   g22 = g2 . g2,
    alpha = clip((g22 - g12) / (g11 - 2 g12 + g22), 0, 1),

and each is a sum over ranks of the local products (the 1/W factors cancel in
the ratio). The trainer passes :func:`all_reduce_sum` to
:func:`pyspk.balance.mgda.mgda_combine`, which sums the three local products over
ranks, so every rank uses the same alpha, the one MGDA would compute on the whole
batch, and the averaged DDP gradient is exactly the gradient of
alpha * L_cls + (1 - alpha) * L_con over the global batch. The gradients come
from ``torch.autograd.grad`` with respect to Z only, which does not touch the
parameters and so does not fire DDP's gradient hooks; the one ``backward`` of
the combined loss afterwards does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info_from_env(env: Optional[Mapping[str, str]] = None) -> DistInfo:
    """Rank, world size and local rank from torchrun's environment (defaults: one process)."""
    env = os.environ if env is None else env
    return DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def choose_device(requested: str, info: DistInfo) -> torch.device:
    """``auto``: CUDA when available (``cuda:LOCAL_RANK``), else CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def init_process_group(info: DistInfo, device: torch.device) -> None:
    """Join the torchrun process group (no-op for one process)."""
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place; identity for one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a same-shaped tensor from every rank along dim 0 (no gradient)."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, 0)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (e.g. a NaN loss), so all ranks stop together."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(t).item() > 0)
