"""Training in more than one process: torch.distributed under ``torchrun`` (gloo on CPU, nccl on GPUs).

    torchrun --nproc_per_node=2 -m graphrec.cli train --model hpmr --dataset beibei --run runs/hpmr-ddp
    torchrun --nnodes=2 --node_rank=R --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \\
        -m graphrec.cli train ...        # several machines: the same command on each

torchrun starts the processes and sets RANK / WORLD_SIZE / LOCAL_RANK; graphrec reads them
(``from_env``) and needs nothing else. Every process reads the snapshot, builds the same model
(DDP broadcasts rank 0's weights) and draws the same global batches from the same seed; each takes
its contiguous share of every step's users or pairs (``shard``), and DistributedDataParallel
averages the gradients, so the replicas stay identical. Losses are weighted so that the mean over
processes is the one-process loss of the whole step (``Batch.ranks``, ``shard``'s weight): a run
with N processes follows the one-process run with the same global batch, up to float rounding
(tested with two gloo processes). Each process still propagates the whole graph, as one process
does, so N processes divide the per-user part of a step, not the propagation.

Rank 0 owns the run directory (lock, metrics, checkpoints, results); evaluation is sharded by users
and the metric sums are added up across processes, so every process takes the same early-stopping
decision. ``--resume`` works as for one process: every rank loads the same checkpoint.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import Tensor, nn

from graphrec.errors import BadValue
from graphrec.models.base import Batch, Recommender


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0


def from_env(env: dict[str, str] | None = None) -> Context:
    """The process's place in a torchrun job (RANK, WORLD_SIZE, LOCAL_RANK); one process without them."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return Context()
    try:
        ctx = Context(int(env.get("RANK", "0")), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    except ValueError:
        raise BadValue(f"RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r}, LOCAL_RANK="
                       f"{env.get('LOCAL_RANK')!r} must be integers; start distributed runs with torchrun") from None
    if ctx.world < 1 or not 0 <= ctx.rank < ctx.world:
        raise BadValue(f"RANK {ctx.rank} is outside WORLD_SIZE {ctx.world}; start distributed runs with torchrun")
    return ctx


def device_for(ctx: Context, device: torch.device) -> torch.device:
    """Each process on a machine takes its own GPU (LOCAL_RANK); CPU processes share the CPU."""
    return torch.device("cuda", ctx.local_rank) if ctx.active and device.type == "cuda" else device


def start(ctx: Context, device: torch.device) -> bool:
    """Join the process group (True when this call created it, so the caller also ends it)."""
    if not ctx.active or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ctx.rank, world_size=ctx.world)
    return True


def stop(*, finished: bool) -> None:
    """Leave the process group: after a finished run once every process has got here (not after an
    error, where a barrier would wait for a peer that may be gone)."""
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def leave(code: int) -> NoReturn:
    """End a torchrun worker without interpreter finalization, its output flushed.

    With torch 2.13, once DDP has wrapped a module the gloo process group outlives
    ``destroy_process_group`` (its worker threads keep running). A worker thread that drops the last
    collective's tensors needs the GIL; asked for while the interpreter finalizes, the thread exits
    inside a C++ destructor and the process dies in std::terminate (SIGABRT after a finished run:
    1 of 12 two-process runs on 2 cores). Nothing is left to finalize: rank 0 has written the run
    atomically and every process has passed ``stop``'s barrier."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def broadcast(ctx: Context, value):
    """Rank 0's ``value`` on every process (any picklable object)."""
    if not ctx.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


def mean(ctx: Context, values: dict[str, float]) -> dict[str, float]:
    """Each key's mean over the processes (every process passes the same keys)."""
    if not ctx.active or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / ctx.world for k, v in zip(keys, t.tolist())}


def total(ctx: Context, t: Tensor) -> Tensor:
    """Element-wise sum over the processes (on the CPU, for gloo and nccl alike)."""
    if not ctx.active:
        return t
    t = t.detach().to("cpu", torch.float64).clone()
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu()


def _bounds(n: int, ctx: Context) -> tuple[int, int]:
    return n * ctx.rank // ctx.world, n * (ctx.rank + 1) // ctx.world


def shard(batch: Batch, batching: str, target: str, ctx: Context) -> tuple[Batch, float]:
    """This process's contiguous share of a step's global batch, and the weight of its loss for a
    ``loss_reduction = "mean"`` model (N × its share of the step's pairs: the mean over processes of
    the weighted means is the step's mean). Whole-data models get ``Batch.ranks`` instead."""
    if not ctx.active:
        return batch, 1.0
    if batching == "users":
        n = batch.users.numel()
        lo, hi = _bounds(n, ctx)
        positives = {}
        for rel, (rows, items) in batch.positives.items():
            keep = (rows >= lo) & (rows < hi)
            positives[rel] = (rows[keep] - lo, items[keep])
        return Batch(users=batch.users[lo:hi], positives=positives, ranks=ctx.world), 1.0
    if batching in ("pairs", "user_pairs"):
        n = batch.users.numel()
        lo, hi = _bounds(n, ctx)
        local = Batch(users=batch.users[lo:hi], pos={k: v[lo:hi] for k, v in batch.pos.items()},
                      neg={k: v[lo:hi] for k, v in batch.neg.items()}, ranks=ctx.world)
        return local, ctx.world * (hi - lo) / max(n, 1)
    if batching == "behavior_pairs":
        pairs = {}
        for rel, (u, pos, neg) in batch.pairs.items():
            lo, hi = _bounds(u.numel(), ctx)
            pairs[rel] = (u[lo:hi], pos[lo:hi], neg[lo:hi])
        # NMTR's per-behavior means are weighted by the target's share; every behavior is cut the
        # same way, so the shares agree to one pair per behavior (exact when they divide evenly)
        n = batch.pairs[target][0].numel()
        lo, hi = _bounds(n, ctx)
        return replace(batch, users=pairs[target][0], pairs=pairs, ranks=ctx.world), ctx.world * (hi - lo) / max(n, 1)
    raise BadValue(f"unknown batching {batching!r}")


class LossModule(nn.Module):
    """A model whose forward is its training loss: DDP synchronizes the gradients of whatever a
    wrapped module's forward computes, and graphrec's models compute their loss in ``loss``."""

    def __init__(self, model: Recommender):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch, graphs):
        return self.model.loss(batch, graphs)


def wrap(model: Recommender, ctx: Context, device: torch.device) -> nn.Module:
    """The DDP wrapper of ``model`` (parameters shared with it, so its state_dict stays the one to save)."""
    from torch.nn.parallel import DistributedDataParallel

    # Some parameters take no gradient in a step (HPMR's view relation chain with λ_view = 0, ablations).
    return DistributedDataParallel(LossModule(model), device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)
