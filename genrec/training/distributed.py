"""Data-parallel training over `torch.distributed` (launched by `torchrun`), equal to one process.

`genrec train RECIPE --nproc N` (or `torchrun --nproc_per_node N -m genrec train RECIPE`) starts N processes
that each hold the whole model and the whole dataset. Every process draws the same global batches (same seed,
same order, `train.batch_size` rows: the global batch), takes its contiguous share of each batch's rows
(`shard`), computes its loss and gradients, and one all-reduce per step sums the gradients (with the loss and a
stop flag in the same buffer), so every process applies the same AdamW step to the same weights.

Why the result equals one process with the same global batch: objectives are means over "units" (next-item
positions, labelled impressions, rows: `Objective.units`). Each process scales its local mean by its share of
the global units, so the summed gradient is the gradient of the global mean (up to float rounding in the order
of the sum). Random negatives (BCE, sampled softmax's uniform ones) come from one generator per step seeded
from (seed, epoch, step), drawn for the whole global batch and sliced per process
(`genrec.objectives.losses.negative_stream`). Not equal, by design: dropout masks (each process draws its own
rows' masks: statistically the same training, other bits, so the equality holds with `dropout: 0`), the
in-batch candidates of sampled softmax and of the contrastive term (each process's own rows).

This is explicit gradient all-reduce rather than `DistributedDataParallel`: objectives call model methods
(`next_item_outputs`, `logits`) rather than `forward`, which DDP's hooks need, and one flat buffer per step
is what DDP's bucketing would send anyway at these model sizes. Validation runs on rank 0 only and its score is
broadcast, so early stopping and checkpoint choice agree; rank 0 alone writes the run directory (atomically);
`--resume` reads the checkpoint on rank 0 and broadcasts model, optimiser, scheduler and counters.

Backends: gloo on the CPU (tested: tests/test_distributed.py) and NCCL when CUDA is available: each process
then holds its model on GPU `LOCAL_RANK` (`local_device`; the pipeline puts it there for `train.device` auto or
cuda) and the flat buffer is reduced where the gradients are. The NCCL path has not been run on a GPU here.
Commands for one and several GPU nodes: docs/distributed.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os

import numpy as np
import torch
import torch.distributed as dist

from genrec.objectives.losses import negative_stream


@dataclasses.dataclass
class Local:
    """One process: the plain training step, with negatives drawn from the same per-step stream as the
    distributed run uses (so the two agree)."""

    rank: int = 0
    world: int = 1
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def step(self, model, objective, optimizer, batch, grad_clip, reference, key, step=None) -> torch.Tensor:
        """One training step (`genrec.training.trainer.training_step`; `step`: its `Step`)."""
        from genrec.training.trainer import training_step

        total = units(objective, batch)
        with negative_stream(step_generator(key), 0, total):
            return training_step(model, objective, optimizer, batch, grad_clip, reference, step)

    def validate(self, fn) -> float:
        return fn()

    def agree(self, flag: bool) -> bool:
        return flag

    def sync_start(self, trainer, best_state):
        return best_state


@dataclasses.dataclass
class Distributed(Local):
    """This process's rank in a started process group (see `init_from_env`)."""

    device: torch.device | None = None  # where collectives run (NCCL: this process's GPU; gloo: the CPU)

    def _reduce(self, buf: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        """`buf` summed (or `op`) over the ranks, on `buf`'s device (moved to the backend's device and back only
        where the two differ)."""
        moved = buf.to(self.device or "cpu")
        dist.all_reduce(moved, op=op)
        return moved.to(buf.device)

    def step(self, model, objective, optimizer, batch, grad_clip, reference, key, step=None) -> torch.Tensor:
        """One global step: local forward / backward on this rank's rows, weighted by its share of the global
        batch's units, one all-reduce of [gradients, loss], clipping on the summed gradients, AdamW. `step`
        (`genrec.training.trainer.Step`): the loss under the run's precision and compilation, the fp16 scaler."""
        from genrec.training.trainer import NonFiniteLoss, Step, clip_and_step

        step = step or Step(lambda b: objective(model, b, reference))

        lo, hi = shard_bounds(rows(batch), self.world, self.rank)
        local = take_rows(batch, lo, hi)
        # Units before this rank's rows and in total: a small all-gather of one number per rank.
        mine = units(objective, local) if hi > lo else 0.0
        counts = torch.zeros(self.world, dtype=torch.float64)
        counts[self.rank] = mine
        counts = self._reduce(counts)
        total, before = float(counts.sum()), float(counts[: self.rank].sum())
        params = [p for p in model.parameters() if p.requires_grad]
        where = params[0].device if params else torch.device("cpu")
        optimizer.zero_grad(set_to_none=True)
        loss_value = torch.zeros((), dtype=torch.float64, device=where)
        if mine > 0:
            with negative_stream(step_generator(key), int(before), int(total)):
                loss = step.loss(local)
            # Gradients of (local mean x local share) summed over ranks = gradients of the global mean.
            share = loss * (mine / total)
            (share if step.scaler is None else step.scaler.scale(share)).backward()
            loss_value = loss.detach().double() * (mine / total)
        # One flat buffer: a has-gradient flag per parameter (a parameter no rank touched keeps grad None, as
        # in one process, where AdamW then skips it), every gradient, and the loss.
        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float64, device=where)
        grads = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64)
            for p in params
        ]
        buf = self._reduce(torch.cat([flags, *grads, loss_value.reshape(1)]))
        loss_value = buf[-1].float()
        if not torch.isfinite(loss_value):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(f"loss {float(loss_value):g}")
        at = len(params)
        for p, has in zip(params, buf[: len(params)].tolist()):
            n = p.numel()
            p.grad = buf[at : at + n].view(p.shape).to(p.dtype).clone() if has else None
            at += n
        clip_and_step(model, optimizer, grad_clip, step)
        return loss_value

    def validate(self, fn) -> float:
        """`fn()` on rank 0; every rank gets its value."""
        value = torch.tensor([fn() if self.is_main else 0.0], dtype=torch.float64)
        self._broadcast(value)
        return float(value[0])

    def _broadcast(self, t: torch.Tensor) -> None:
        moved = t.to(self.device or "cpu")
        dist.broadcast(moved, src=0)
        if moved is not t:
            t.copy_(moved)

    def agree(self, flag: bool) -> bool:
        """True on every rank when it is True on any (a signal, a time budget): all ranks stop together."""
        return bool(self._reduce(torch.tensor([float(flag)]), dist.ReduceOp.MAX)[0] > 0)

    def sync_start(self, trainer, best_state):
        """Rank 0's model, optimiser, scheduler, counters and best weights (after a resume) on every rank."""
        payload = [None]
        if self.is_main:
            payload = [
                {
                    "model": trainer.model.state_dict(),
                    "optimizer": trainer.optimizer.state_dict(),
                    "scheduler": trainer.scheduler.state_dict(),
                    "state": trainer.state,
                    "best": best_state,
                }
            ]
        dist.broadcast_object_list(payload, src=0)
        if not self.is_main:
            got = payload[0]
            trainer.model.load_state_dict(got["model"])
            trainer.optimizer.load_state_dict(got["optimizer"])
            trainer.scheduler.load_state_dict(got["scheduler"])
            trainer.state.update(got["state"])
            best_state = got["best"]
        return best_state


_CURRENT: Local = Local()


def current() -> Local:
    """This process's place in the distributed run (`Local()` when not distributed)."""
    return _CURRENT


def init_from_env(timeout_minutes: float = 60.0) -> Local:
    """Join the process group `torchrun` describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR / PORT in the
    environment): NCCL when CUDA is available, else gloo (`GENREC_DIST_BACKEND` chooses). Without WORLD_SIZE > 1
    nothing is started and `Local()` is returned. Idempotent."""
    global _CURRENT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _CURRENT
    if not dist.is_initialized():
        backend = os.environ.get("GENREC_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
        device = None
        if backend == "nccl":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        # Rank 0 validates alone while the others wait in a broadcast: the timeout must cover a validation.
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
        _CURRENT = Distributed(dist.get_rank(), dist.get_world_size(), backend, device)
    return _CURRENT


def local_device(device: torch.device) -> torch.device:
    """The device this process trains on when `device` was resolved for the whole run: under torchrun with CUDA,
    GPU `LOCAL_RANK` (one GPU per process); otherwise `device` itself."""
    d = current()
    if device.type == "cuda" and isinstance(d, Distributed) and d.device is not None:
        return d.device
    return device


def shutdown() -> None:
    global _CURRENT
    if dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = Local()


def protocol(batch_size: int) -> dict:
    """What the run's protocol records about data parallelism."""
    d = current()
    return {
        "world_size": d.world,
        "global_batch": batch_size,
        "per_rank_batch": math.ceil(batch_size / d.world),
        "backend": d.backend,
    }


def step_generator(key: tuple[int, int, int]) -> torch.Generator:
    """The negatives' generator of one training step, from (seed, epoch, step): the same on every rank."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


def shard_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """Rows [lo, hi) of a global batch of `n` rows that `rank` trains on (contiguous, sizes differ by <= 1)."""
    return n * rank // world, n * (rank + 1) // world


def rows(batch) -> int:
    """The batch dimension: the first dimension of the first tensor found in the batch (tuple or dataclass)."""
    t = _first_tensor(batch)
    if t is None:
        raise ValueError(f"no tensor in batch {type(batch).__name__}")
    return int(t.shape[0])


def _first_tensor(obj):
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        items = obj
    elif dataclasses.is_dataclass(obj):
        items = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    else:
        return None
    for x in items:
        t = _first_tensor(x)
        if t is not None:
            return t
    return None


def take_rows(batch, lo: int, hi: int, n: int | None = None):
    """Rows [lo, hi) of every batched tensor in `batch` (tensors whose first dimension is the batch's), in
    tuples, lists and dataclasses, recursively; everything else unchanged."""
    n = rows(batch) if n is None else n
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi] if batch.ndim and batch.shape[0] == n else batch
    if isinstance(batch, (tuple, list)):
        parts = [take_rows(x, lo, hi, n) for x in batch]
        return type(batch)(*parts) if hasattr(batch, "_fields") else type(batch)(parts)  # named tuples too
    if dataclasses.is_dataclass(batch):
        changes = {f.name: take_rows(getattr(batch, f.name), lo, hi, n) for f in dataclasses.fields(batch)}
        return dataclasses.replace(batch, **changes)
    return batch


def units(objective, batch) -> float:
    """How many terms the objective's loss averages over in `batch` (`Objective.units`, else rows)."""
    fn = getattr(objective, "units", None)
    return float(fn(batch)) if fn is not None else float(rows(batch))
