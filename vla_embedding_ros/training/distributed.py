"""Multi-process training set-up: torchrun's environment, the process group, and the collective
operations the trainer needs.

Launch with PyTorch's own launcher, which starts the processes, sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK`` and the rendezvous, and stops every process when one fails::

    torchrun --nproc_per_node 2 -m vla_embedding_ros.training.train --config ...

Without those variables (a plain ``vla-train``) nothing here starts a process group and every
helper is the identity, so single-process training is unchanged.

Gradients are averaged by ``DistributedDataParallel``; terms that compare samples of the batch
with one another (the library->query direction of the contrastive loss, image<->instruction
alignment) see the *global* batch through :func:`gather_batch`, whose backward returns each
rank the gradient of its own rows, as OpenCLIP gathers features. Every rank then computes the
same loss, and ``world`` processes with batch ``B`` take the steps one process takes with
``world * B``.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# How long a collective may wait for a rank before the run fails (NCCL/gloo timeout). torchrun
# already stops the others when a process dies; this bounds a rank that hangs without dying.
DEFAULT_TIMEOUT_S = 600
# Seeds of the procedural stream on rank r: far apart, so ranks never draw the same scenes.
RANK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class Context:
    """Where this process stands in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ''

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def setup(device: torch.device,
          timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[Context, torch.device]:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on the CPU).

    Returns the context and the device this rank trains on (``cuda:LOCAL_RANK`` on GPUs).
    Idempotent: a second call (a second Trainer in one process) reuses the group.
    """
    if not launched_by_torchrun():
        return Context(), device
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    local_rank = int(os.environ.get('LOCAL_RANK', rank))
    if device.type == 'cuda':
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=device if device.type == 'cuda' else None)
    return Context(rank, world, local_rank, backend), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, ctx: Context) -> int:
    """The procedural stream's seed on this rank (rank 0 keeps ``seed``)."""
    return seed + ctx.rank * RANK_SEED_STRIDE


class _GatherRows(torch.autograd.Function):
    """All ranks' rows concatenated; backward sums every rank's gradient of the global batch
    and hands each rank the rows it owns (a reduce-scatter, written with all_reduce because
    gloo has no reduce-scatter). torch.distributed.nn's all_gather does the same, deprecated."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start:start + ctx.rows], None, None


def gather_batch(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The global batch: every rank's rows (equal counts), in rank order, with gradients
    flowing back to the rank that owns each row. The identity in a single process."""
    if not ctx.distributed:
        return tensor
    if tensor.requires_grad:
        return _GatherRows.apply(tensor, ctx.rank, ctx.world_size)
    parts = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def gather_objects(obj, ctx: Context) -> list:
    """Every rank's ``obj`` (e.g. its RNG state), in rank order; ``[obj]`` in one process.

    Pickled between the processes of this run only; checkpoints store plain tensors/arrays."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Context) -> None:
    """Wait for every rank (e.g. while rank 0 writes a checkpoint the others will read)."""
    if ctx.distributed:
        dist.barrier()


def wrap(module: torch.nn.Module, ctx: Context, device: torch.device,
         find_unused: bool = True) -> torch.nn.Module:
    """``module`` in DistributedDataParallel when distributed (parameters broadcast from rank
    0, gradients averaged); the module itself otherwise. ``find_unused``: some trainable
    parameters get no gradient in this run (heads of terms whose weight is 0), which DDP must
    look for after every forward."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel
    ids = [device.index] if device.type == 'cuda' else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)
