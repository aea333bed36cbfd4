"""The shared training loop: AdamW, warm-up + decay, validation-based early stopping, atomic checkpoints, resume.

Determinism: each epoch seeds its own data order (numpy) and dropout (torch) from (seed, epoch), so a run resumed
from the checkpoint of epoch e continues exactly as the uninterrupted run would have.

Diverged training: the first non-finite loss (or gradient norm) stops the run with a one-line `TrainingDiverged`
naming the epoch and step, before the optimiser applies it, so the checkpoint of the last finished epoch stays
good (and `--resume` restarts from it).

The trainer knows no task: the model gives its batches (`training_batches(data, rng, batch_size)`, or the
`batches` function given instead, e.g. preference pairs built afresh each epoch; one with a `steps(data,
batch_size)` method says how many an epoch has without building them), the objective turns a batch into a loss
(`genrec.objectives`), and `validate(model, progress)` is supplied by the task: the value of `eval.select_metric`
(compared in that metric's direction), or a dict of validation metrics that holds it (all are recorded in the
history). A frozen `reference` model (preference objectives) is passed to the objective and never trained or
saved; an objective with `uses_dropout = False` trains the model in eval mode.

Device and precision: the model (and the reference) are already on their device when the Trainer gets them
(`FitContext.device`, resolved once by the pipeline; default: the model's). Batches are built on the host, by
the training process or by `train.workers` DataLoader processes (each takes every W-th batch of the same seeded
epoch, so the batches, and the results, do not depend on W), pinned when the device is a CUDA GPU and copied
with `non_blocking`. The loss runs under the precision's autocast (`genrec.runtime.Precision`; fp16 with a
GradScaler) and, with `train.compile`, through `torch.compile`. The hot loop reads nothing back from the device
but at its logging points (every `LOG_EVERY` steps): the running loss is summed on the device, and off the CPU
(where reading a value costs a synchronisation) a non-finite loss is caught there rather than at its own step.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genrec import registry
from genrec.config import TrainConfig
from genrec.errors import GenrecError
from genrec.models.base import Resources
from genrec.progress import make_progress
from genrec.runtime import (
    Precision,
    compile_step,
    module_device,
    pin_memory,
    resolve_precision,
    to_device,
)
from genrec.training import distributed
from genrec.training.checkpoint import load_state, load_weights, save_state, save_weights

CHECKPOINT = "checkpoint.pt"
BEST_WEIGHTS = "best.safetensors"
LOG_EVERY = 10  # steps between progress updates: the only points where the loop reads values from the device


@dataclass
class FitContext:
    """Where and how a model is fitted: the train and eval sections, the run directory (None = keep nothing),
    resume, a logger (None = silent), progress bars, and the `resources` offered to `Recommender.prepare`."""

    train: TrainConfig
    eval: object
    run_dir: Path | None = None
    resume: bool = False
    log: object = None  # logging.Logger
    progress: bool = True
    resources: Resources = field(default_factory=Resources)
    device: torch.device | None = None  # where the model is (None: its parameters' device)
    precision: Precision | None = None  # None: `train.precision` resolved on the device

    def info(self, msg: str, *args) -> None:
        if self.log is not None:
            self.log.info(msg, *args)


def lr_lambda(kind: str, warmup: int, total: int, hold: int = 0):
    """The learning rate's factor at each step: a linear warm-up over `warmup` steps, then `kind`: constant,
    cosine or linear decay to 0 at step `total`, or inverse_sqrt: sqrt(S / (step + 1)) from S = warmup + hold
    on (1 before; T5's schedule, which the TIGER paper trains with)."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "inverse_sqrt":
            start = max(1, warmup + hold)
            return math.sqrt(start / max(start, step + 1))
        if kind == "constant" or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress

    return f


def stop_note(summary: dict) -> str:
    """What the protocol adds to its checkpoint selection when training ended neither by its epochs nor by early
    stopping (a time budget, a signal): the result then depends on when that happened."""
    if summary.get("stopped_by", "epochs") in ("epochs", "early stopping"):
        return ""
    return f"; training stopped early ({summary['stop']})"


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, **kernel) -> torch.optim.AdamW:
    """AdamW over the model's parameters, weight decay only on matrices that are not embeddings or norms.

    It runs PyTorch's multi-tensor kernel (one kernel per operation over all tensors): the same bits per step as
    the per-tensor loop and faster on CPU; `kernel` (e.g. `foreach=False`, `fused=True`) passes another choice
    to `torch.optim.AdamW` (`python -m benchmarks optimizer_step` times them).
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # Biases, norms and embedding tables are not decayed: decay would shrink rare items' vectors.
        (no_decay if p.ndim < 2 or "emb" in name or "norm" in name else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, cfg.adam_beta2),
        **(kernel or {"foreach": True}),
    )


class NonFiniteLoss(GenrecError):
    """A training step met a NaN or infinite loss or gradient norm; no weight was changed by it."""


class TrainingDiverged(GenrecError):
    """Training stopped at its first non-finite loss; the message names the epoch, the step and what is kept."""


@dataclass(frozen=True)
class Step:
    """How a training step computes: `loss(batch)` (the objective under the precision's autocast, compiled when
    asked), the fp16 GradScaler (None otherwise), and whether every step checks its loss and gradient norm for
    non-finite values (`check`: a read from the device, free on the CPU)."""

    loss: Callable
    scaler: torch.amp.GradScaler | None = None
    check: bool = True


def training_step(
    model,
    objective,
    optimizer: torch.optim.Optimizer,
    batch,
    grad_clip: float | None,
    reference=None,
    step: Step | None = None,
) -> torch.Tensor:
    """One optimiser step on one batch (loss, backward, gradient-norm clipping when set, AdamW); the loss.
    The trainer adds its schedule around it; the speed benchmarks time exactly this. `step`: how the loss is
    computed (default: `objective(model, batch, reference)` in float32, checked).

    Raises NonFiniteLoss, before any weight changes, when the loss or the clipped gradients' norm is not finite
    (with `step.check`)."""
    step = step or Step(lambda b: objective(model, b, reference))
    loss = step.loss(batch)
    if step.check and not torch.isfinite(loss.detach()):
        raise NonFiniteLoss(f"loss {float(loss.detach()):g}")
    optimizer.zero_grad(set_to_none=True)
    (loss if step.scaler is None else step.scaler.scale(loss)).backward()
    clip_and_step(model, optimizer, grad_clip, step)
    return loss


def clip_and_step(model, optimizer, grad_clip: float | None, step: Step | None = None) -> None:
    """Clip the gradients' global norm to `grad_clip` (when set), then step. Raises NonFiniteLoss on a
    non-finite norm, before the weights change (with `step.check`, the default). With a GradScaler the gradients
    are unscaled first, and a step whose gradients overflowed is skipped by the scaler (fp16's normal course)."""
    scaler = step.scaler if step is not None else None
    check = step.check if step is not None else True
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if check and scaler is None and not torch.isfinite(norm):
            raise NonFiniteLoss(f"gradient norm {float(norm):g}")
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        objective: Callable,
        data,
        validate: Callable,
        ctx: FitContext,
        reference: torch.nn.Module | None = None,
        batches: Callable | None = None,
    ) -> None:
        self.model, self.objective, self.data, self.ctx, self.cfg = model, objective, data, ctx, ctx.train
        self.validate = validate
        self.higher_is_better = registry.metric(ctx.eval.select_metric).higher_is_better
        if getattr(objective, "needs_reference", False) and reference is None:
            raise ValueError(f"objective {objective.name} needs a reference model")
        self.reference = reference
        if reference is not None:  # frozen: no gradients, no dropout, not part of the model's state
            reference.eval().requires_grad_(False)
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.optimizer = build_optimizer(model, self.cfg)
        self.batches = batches or model.training_batches
        # One process, or this rank of a torchrun group: steps, validation and stop decisions go through it.
        self.dist = distributed.current()
        count = getattr(self.batches, "steps", None)
        if count is not None:
            steps_per_epoch = max(1, count(data, self.cfg.batch_size))
        else:
            steps_per_epoch = max(
                1, sum(1 for _ in self.batches(data, np.random.default_rng(0), self.cfg.batch_size))
            )
        self.steps_per_epoch = steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lr_lambda(
                self.cfg.lr_schedule,
                self.cfg.warmup_steps,
                steps_per_epoch * self.cfg.epochs,
                self.cfg.lr_hold_steps,
            ),
        )
        self.device = ctx.device or module_device(model)
        self.precision = ctx.precision or resolve_precision(
            self.cfg.precision, self.device, "train.precision"
        )

        def loss_of(batch):
            with self.precision.autocast():
                return self.objective(self.model, batch, self.reference).float()

        self.step = Step(
            compile_step(loss_of, enabled=self.cfg.compile, dynamic=True),
            self.precision.grad_scaler(),
            check=self.device.type == "cpu",
        )
        self.state = {
            "epoch": 0,
            "best_score": -1.0,
            "best_epoch": 0,
            "bad_evals": 0,
            "seconds": 0.0,
            "seconds_to_best": 0.0,
            "history": [],
        }

    def _validate(self, progress) -> tuple[float, dict[str, float]]:
        """(the select metric's value, every validation metric) of the weights the model holds; on rank 0 only,
        every rank gets the select metric (the others' dicts are empty)."""
        metric = self.ctx.eval.select_metric
        values: dict[str, float] = {}

        def score() -> float:
            out = self.validate(self.model, progress)
            values.update(out if isinstance(out, dict) else {metric: out})
            return float(values[metric])

        return float(self.dist.validate(score)), values

    def _save(self, best_state: dict | None) -> None:
        run = self.ctx.run_dir
        if run is None or not self.dist.is_main:
            return
        if best_state is not None:
            save_weights(run / BEST_WEIGHTS, best_state)
        save_state(
            run / CHECKPOINT,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "trainer": {k: v for k, v in self.state.items() if k != "history"},
                "history": [list(h.values()) for h in self.state["history"]],
                "history_keys": list(self.state["history"][0]) if self.state["history"] else [],
            },
        )

    def _try_resume(self) -> dict | None:
        run = self.ctx.run_dir
        if not (self.ctx.resume and run is not None and (run / CHECKPOINT).exists()):
            return None
        ckpt = load_state(run / CHECKPOINT)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.state.update(ckpt["trainer"])
        self.state["history"] = [dict(zip(ckpt["history_keys"], h)) for h in ckpt["history"]]
        self.ctx.info(
            "resumed after epoch %d (best %.5f at epoch %d)",
            self.state["epoch"],
            self.state["best_score"],
            self.state["best_epoch"],
        )
        return load_weights(run / BEST_WEIGHTS) if (run / BEST_WEIGHTS).exists() else None

    def fit(self) -> dict:
        best_state = self.dist.sync_start(self, self._try_resume())
        model, cfg = self.model, self.cfg
        metric = self.ctx.eval.select_metric
        deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes else None
        stopped, stop_note = "epochs", f"all {cfg.epochs} epochs"
        history = self.state["history"]
        # Whether the weights in the model now are the ones last validated (after a resume: the checkpoint's).
        validated = bool(history) and f"valid_{metric}" in history[-1]
        self._signal = None
        with make_progress(self.ctx.progress) as progress, self._stop_on_signal():
            self._progress = progress
            while self.state["epoch"] < cfg.epochs:
                if self.state["bad_evals"] >= cfg.patience:
                    stopped = "early stopping"
                    stop_note = f"early stopping after epoch {self.state['epoch']} (patience {cfg.patience})"
                    break
                if deadline and self.dist.agree(time.monotonic() > deadline):
                    stopped = "time budget"
                    stop_note = (
                        f"time budget: train.max_minutes={cfg.max_minutes:g} reached after epoch "
                        f"{self.state['epoch']} of {cfg.epochs}, so the result depends on the machine's speed"
                    )
                    self._say(f"warning: {stop_note}; the last weights are validated before the choice")
                    break
                epoch = self.state["epoch"] + 1
                rng = np.random.default_rng([cfg.seed, epoch])
                torch.manual_seed(cfg.seed * 100_003 + epoch)
                model.train(getattr(self.objective, "uses_dropout", True))
                t0 = time.perf_counter()
                batches, n_batches = self._epoch_batches(rng)
                task = progress.add_task(f"epoch {epoch}", total=n_batches, info="")
                # Summed on the device, read at the logging points only (float64 where the device has it).
                total = torch.zeros((), dtype=_sum_dtype(self.device), device=self.device)
                seen, steps, stopped_in_epoch = 0, 0, False
                for i, batch in enumerate(batches):
                    batch = to_device(batch, self.device, non_blocking=True)
                    try:
                        loss = self.dist.step(
                            model, self.objective, self.optimizer, batch, cfg.grad_clip, self.reference,
                            (cfg.seed, epoch, i), self.step,
                        )  # fmt: skip
                    except NonFiniteLoss as err:
                        raise TrainingDiverged(
                            self._diverged(f"{err} at epoch {epoch}, step {i + 1} of {n_batches}")
                        ) from None
                    validated = False
                    self.scheduler.step()
                    total += loss.detach().to(total.dtype)
                    seen += _batch_size(batch)
                    steps = i + 1
                    if i % LOG_EVERY == 0:
                        mean = float(total) / steps
                        self._check_finite(mean, epoch, steps, n_batches)
                        rate = seen / max(1e-9, time.perf_counter() - t0)
                        progress.update(task, completed=steps, info=f"loss {mean:.4f} {rate:,.0f}/s")
                    if self.dist.agree(self._signal is not None):  # every rank stops after the same step
                        self._signal = self._signal or "a signal to another process"
                        stopped_in_epoch = steps < n_batches
                        break
                progress.remove_task(task)
                total_loss = float(total)
                self._check_finite(total_loss, epoch, steps, n_batches)
                if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                    raise TrainingDiverged(self._diverged(f"non-finite weights after epoch {epoch}"))
                partial = stopped_in_epoch  # a signal stopped it mid-epoch: no checkpoint of it
                train_seconds = time.perf_counter() - t0
                self.state["seconds"] += train_seconds
                record = {
                    "epoch": epoch,
                    "loss": total_loss / max(1, steps),
                    "train_seconds": train_seconds,
                    "samples_per_s": seen / max(1e-9, train_seconds),
                }
                if partial:
                    record["steps"] = f"{steps} of {n_batches}"
                if epoch % cfg.eval_every == 0 or epoch == cfg.epochs or self._signal is not None:
                    best_state = self._validate_epoch(epoch, record, best_state, progress)
                    validated = True
                if not partial:
                    self.state["epoch"] = epoch
                history.append(record)
                self._report(record)
                if not partial:
                    self._save(best_state if self.state["best_epoch"] == epoch else None)
                if self._signal is not None:
                    stopped = f"signal {self._signal}"
                    stop_note = (
                        f"{self._signal} during epoch {epoch}"
                        + (f" (after step {steps} of {n_batches})" if partial else "")
                        + "; the weights at that point were validated before the choice"
                    )
                    break
            if not validated:
                # A budget stop (or no epoch at all) left weights that were not validated: do it now, so the run
                # never reports weights it did not validate.
                epoch = self.state["epoch"]
                if history and history[-1]["epoch"] == epoch:
                    record = history[-1]
                else:
                    record = {"epoch": epoch}
                    history.append(record)
                best_state = self._validate_epoch(epoch, record, best_state, progress)
                record["validated_at_stop"] = True
                self._report(record)
                self._save(best_state if self.state["best_epoch"] == epoch else None)
        if best_state is not None:
            model.load_state_dict(best_state)
        best = self.state["best_score"]
        self._say(
            f"stopped ({stop_note}); best validation {metric} {best:.5f} at epoch {self.state['best_epoch']}",
            echo=stopped not in ("epochs", "early stopping") or _no_terminal(),
        )
        return {
            "objective": getattr(self.objective, "name", type(self.objective).__name__),
            "epochs_run": self.state["epoch"],
            "stopped_by": stopped,
            "stop": stop_note,
            "best_epoch": self.state["best_epoch"],
            "best_valid": {metric: best},
            "train_seconds": round(self.state["seconds"], 2),
            "seconds_to_best": round(self.state["seconds_to_best"], 2),
            "history": history,
        }

    def _epoch_batches(self, rng: np.random.Generator):
        """(this epoch's batches on the host, their number). Built here, or with `train.workers` > 0 by DataLoader
        processes, each taking every W-th batch of the same seeded order (a batches function that reads the model,
        `uses_model`, always runs here: the workers hold copies of the model as it was when they started)."""
        cfg = self.cfg
        pin = self.device.type == "cuda"
        if cfg.workers == 0 or getattr(self.batches, "uses_model", False):
            batches = list(self.batches(self.data, rng, cfg.batch_size))
            if pin:
                batches = [pin_memory(b) for b in batches]
            return batches, len(batches)
        from torch.utils.data import DataLoader

        epoch_batches = EpochBatches(self.batches, self.data, rng, cfg.batch_size)
        loader = DataLoader(epoch_batches, batch_size=None, num_workers=cfg.workers, pin_memory=pin)
        return loader, self.steps_per_epoch

    def _check_finite(self, loss_sum: float, epoch: int, steps: int, n_batches: int) -> None:
        """Where steps are not checked one by one (off the CPU), a non-finite running loss stops the run here."""
        if not math.isfinite(loss_sum):
            raise TrainingDiverged(
                self._diverged(f"loss {loss_sum:g} by epoch {epoch}, step {steps} of {n_batches}")
            )

    def _validate_epoch(self, epoch: int, record: dict, best_state: dict | None, progress) -> dict | None:
        """Validate the weights the model holds as those of `epoch`, record the score and keep them as the best
        when they are; returns the best weights."""
        t1 = time.perf_counter()
        score, values = self._validate(progress)
        # NaN (an undefined metric) never beats a number; the first validation is kept whatever it is.
        sign = 1.0 if self.higher_is_better else -1.0  # the metric's direction (genrec.registry.METRICS)
        improved = best_state is None or _comparable(sign * score) > _comparable(
            sign * self.state["best_score"]
        )
        if improved:  # copied here: these are the weights that were validated
            best_state = copy.deepcopy(self.model.state_dict())
        self.state["seconds"] += time.perf_counter() - t1
        record.update({f"valid_{k}": float(v) for k, v in values.items()})
        record["valid_" + self.ctx.eval.select_metric] = score
        if improved:
            self.state.update(
                best_score=score, best_epoch=epoch, bad_evals=0, seconds_to_best=self.state["seconds"]
            )
        else:
            self.state["bad_evals"] += 1
        return best_state

    def _report(self, record: dict) -> None:
        """One line per epoch: to train.log, and to stderr when output goes to a file or a pipe (CI, nohup,
        notebooks), where no progress bar shows that training is alive."""
        metric = self.ctx.eval.select_metric
        score = record.get("valid_" + metric)
        loss = f"loss {record['loss']:.4f} " if "loss" in record else ""
        valid = f"valid {metric} {score:.5f}" if score is not None else f"valid {metric} -"
        best = (
            f" (best {self.state['best_score']:.5f} at epoch {self.state['best_epoch']})"
            if score is not None
            else ""
        )
        took = f" {record['train_seconds']:.1f}s" if "train_seconds" in record else " (validated at stop)"
        steps = f" [{record['steps']} steps]" if "steps" in record else ""
        self._say(f"epoch {record['epoch']}/{self.cfg.epochs}{steps} {loss}{valid}{best}{took}")

    def _say(self, line: str, echo: bool | None = None) -> None:
        self.ctx.info("%s", line)
        if not (_no_terminal() if echo is None else echo):
            return
        if sys.stderr.isatty():  # only stdout is redirected: print above the live progress bars
            self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def _diverged(self, what: str) -> str:
        run = self.ctx.run_dir
        done = self.state["epoch"]
        if run is not None and (run / CHECKPOINT).exists():
            kept = f"{run / CHECKPOINT} keeps epoch {done} (--resume continues from it)"
        else:
            kept = "no checkpoint was written"
        return f"training diverged: {what}; {kept}; try a lower train.lr or train.grad_clip"

    @contextlib.contextmanager
    def _stop_on_signal(self):
        """SIGINT / SIGTERM: the first stops training after the current step (the weights are then validated and
        the run finishes); a second one aborts at once. Only the main thread can install handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._signal is not None:
                raise KeyboardInterrupt
            self._signal = signal.Signals(signum).name
            self._say(
                f"{self._signal}: training stops after this step; the current weights are validated and the run "
                "finishes (send it again to abort; --resume then continues from the last finished epoch)",
                echo=True,
            )

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


class EpochBatches(torch.utils.data.IterableDataset):
    """One epoch's batches for a DataLoader: every worker draws the epoch from a copy of the same generator state
    and keeps the batches at its own positions (worker w of W: w, w + W, ...), which the DataLoader then returns in
    order (0, 1, 2, ...): the same batches in the same order for any number of workers."""

    def __init__(self, batches: Callable, data, rng: np.random.Generator, batch_size: int) -> None:
        self.batches, self.data, self.rng, self.batch_size = batches, data, rng, batch_size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        me, every = (0, 1) if info is None else (info.id, info.num_workers)
        rng = copy.deepcopy(self.rng)
        for i, batch in enumerate(self.batches(self.data, rng, self.batch_size)):
            if i % every == me:
                yield batch


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _comparable(score: float) -> float:
    return float("-inf") if math.isnan(score) else score


def _no_terminal() -> bool:
    return not (sys.stdout.isatty() and sys.stderr.isatty())


def _batch_size(batch) -> int:
    if hasattr(batch, "__len__") and not isinstance(batch, (tuple, list)):
        return len(batch)
    first = batch[0] if isinstance(batch, (tuple, list)) else getattr(batch, "items", batch)
    return int(first.shape[0])
