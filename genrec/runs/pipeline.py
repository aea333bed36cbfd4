"""The one run pipeline: a resolved config in, a complete run directory out, for every task.

`train_run(cfg, out)` is the only code that opens a run directory: it seeds, reads the data through the config's
task (`genrec.runs.task.Task`), writes the tables, builds the model (from the weights of `init_from` when set),
fits it (`fit`: the model's `prepare`, then the Trainer with the configured objective and, for objectives that
need one, the frozen reference), evaluates the weights chosen on validation and writes metrics.json with the
protocol (`genrec.runs.protocol`). `evaluate_run` re-evaluates a loaded run through the same task.

Device and precision are resolved here, once (`placement`: `train.device`, `train.precision`, TF32 on GPUs that
have it): the model's data-dependent part is fitted on the host, then the model and the frozen reference move to
the device, where the Trainer, validation and the final evaluation run.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from genrec.config import RunConfig
from genrec.data.provenance import check_resume_data, check_same_data, data_record, resolve_data_paths
from genrec.errors import ConfigError
from genrec.io import write_bytes, write_json, write_parquet
from genrec.objectives import build_objective
from genrec.runs.protocol import build_protocol, reevaluated
from genrec.runs.run import Run, load_run
from genrec.runs.store import (
    MODEL_FILE,
    open_run_dir,
    run_logger,
    seed_everything,
    write_metrics,
)
from genrec.runs.task import Task, make_task
from genrec.runtime import device_name, enable_tf32, resolve_device, resolve_precision
from genrec.training import distributed
from genrec.training.checkpoint import save_weights
from genrec.training.trainer import FitContext, Trainer


def train_run(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train, select, evaluate and write a complete run directory of the config's task; metrics.json's content.

    Under `torchrun` (WORLD_SIZE > 1) every process trains its share of each global batch
    (`genrec.training.distributed`); rank 0 writes `out` and returns the metrics, the other ranks work in a
    temporary directory that is removed (a resumed run's state reaches them from rank 0) and return only their
    training summary. Paths in the data section are stored absolute (`resolve_data_paths`)."""
    cfg = cfg.model_copy(update={"data": resolve_data_paths(cfg.data)})
    if not distributed.init_from_env().is_main:
        with tempfile.TemporaryDirectory(prefix="genrec-rank") as tmp:
            return _train_run(cfg, Path(tmp) / "run", resume=False, progress=False)
    return _train_run(cfg, Path(out), resume, progress)


def placement(train) -> tuple:
    """(device, precision) of a train section: `train.device` (under torchrun with CUDA: this process's GPU) and
    `train.precision` on it; TF32 matmuls switched on where the GPU has them. Raises ConfigError (one line) for a
    device that is not available or a precision the device cannot run."""
    device = distributed.local_device(resolve_device(train.device, "train.device"))
    precision = resolve_precision(train.precision, device, "train.precision")
    enable_tf32(device)
    return device, precision


def _train_run(cfg: RunConfig, out: Path, resume: bool, progress: bool) -> dict:
    task = make_task(cfg)
    device, precision = placement(cfg.train)  # a device that is not available fails before anything is read
    init = load_run(Path(cfg.init_from)) if cfg.init_from else None
    data = task.load_data(like=init)  # all input errors surface before anything is written
    check_resume_data(out, task.dataset, resume)
    seed_everything(cfg)
    with open_run_dir(cfg, out, resume) as out:
        tables = task.tables(data)
        tables.meta["data"] = data_record(task.dataset)
        write_parquet(out / "items.parquet", tables.items)
        write_parquet(out / "users.parquet", tables.users)
        write_json(out / "meta.json", tables.meta)
        log = run_logger(out)
        log.info("%s data %s: %s", task.name, cfg.data.dataset, task.data_protocol(data)["split"])
        model = task.build_model(data)
        if init is not None:
            model.load_state_dict(init.model.state_dict())
        ctx = FitContext(
            cfg.train,
            cfg.eval,
            out,
            resume,
            log,
            progress,
            resources=task.resources(data, tables),
            device=device,
            precision=precision,
        )
        summary = fit(task, model, data, ctx, init)
        if not distributed.current().is_main:  # rank 0 alone evaluates and writes the run
            return {"training": summary}
        save_weights(out / MODEL_FILE, model.state_dict())
        t1 = time.perf_counter()
        metrics = task.evaluate(model, data, progress)
        metrics["eval_seconds"] = round(time.perf_counter() - t1, 2)
        metrics["protocol"] = build_protocol(task, data, model, summary).to_json()
        metrics["training"] = summary
        write_metrics(out, metrics)
        log.info("test %s", metrics["test"])
        return metrics


def fit(task: Task, model, data, ctx: FitContext, init: Run | None = None) -> dict:
    """Fit `model` on the task's `data`: first its data-dependent part (`task.prepare`; a model that starts
    from `init`'s weights has it already, and keeps that run's model files), then, for trainable models, the
    Trainer with `ctx.train.objective` (default: the task's choice for the model) and, for an objective that
    needs one, `init`'s model as the frozen reference. Files the model asks for are written into `ctx.run_dir`.
    The data-dependent part is fitted on the host; then the model (and the reference) move to `ctx.device`
    (default: resolved from `ctx.train`, `placement`), where training runs in `ctx.precision`.
    Returns the training summary (with the device, its name and the precision). Raises ConfigError (an objective
    the model cannot train with, or one that needs a reference without `init_from`; a device that is
    not available)."""
    t0 = time.perf_counter()
    if ctx.device is None:
        device, precision = placement(ctx.train)
        ctx = dataclasses.replace(ctx, device=device, precision=precision)
    summary = task.prepare(model, data, ctx, init)
    report = summary.pop("report", None)
    if report:
        ctx.info("%s", report)
    files = summary.pop("files", {})
    if ctx.run_dir is not None:
        for name, content in files.items():
            write_bytes(ctx.run_dir / name, content)
    model.to(ctx.device)
    summary.update(device=str(ctx.device), device_name=device_name(ctx.device), precision=ctx.precision.name)
    if model.trainable:
        spec = ctx.train.objective or task.spec.default_objective(type(model.cfg))
        objective = build_objective(spec, model, task.train_items(data))
        reference = None
        if objective.needs_reference:
            if init is None:
                raise ConfigError(
                    f"objective {objective.name} compares with a reference: set init_from=RUN_DIR"
                )
            reference = init.model.to(ctx.device)
        summary.update(
            Trainer(
                model,
                objective,
                data,
                lambda m, bar: task.validate(m, data, bar),
                ctx,
                reference,
                batches=task.batches(model),
            ).fit()
        )
        summary["data_parallel"] = distributed.protocol(ctx.train.batch_size)
    summary["fit_seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def evaluate_run(run: Run, dataset: str | None = None, progress: bool = True, reward=None) -> dict:
    """Re-evaluate a run on its dataset (or another dataset SPEC with the same ids), encoded in the run's item and
    user index, with the protocol. `reward` (retrieval): a reward model (`genrec.alignment.reward.RewardModel`)
    for the `reward@10` list metric."""
    task = run.task
    if dataset is not None:
        data_cfg = run.cfg.data.model_copy(update={"dataset": dataset})
        task = make_task(run.cfg.model_copy(update={"data": data_cfg}))
    data = task.load_data(like=run)
    if dataset is None:
        check_same_data(
            run.meta.get("data"), task.dataset, str(run.dir), "retrain it, or name other data with --dataset"
        )
    metrics = task.evaluate(run.model, data, progress, reward)
    protocol = build_protocol(task, data, run.model, run.metrics.get("training", {}))
    metrics["protocol"] = reevaluated(protocol, run.metrics.get("protocol", {}))
    return metrics
