"""The run directory: one layout for every task, written atomically, and the fitting of a model inside it.

Layout of RUN_DIR:
  config.yaml       resolved config (every default written out, with its task)
  meta.json         task, model name, catalogue sizes, dataset statistics, preprocessing notes
  items.parquet     internal index -> raw item_id (as the source gives it), title, categories
  users.parquet     internal index -> raw user_id and the user's history (internal item ids, with timestamps
                    when the data has them); ranking runs also store each event's action (rating)
  model.safetensors weights of the selected checkpoint
  metrics.json      valid / test metrics, the protocol, the training summary
  train.log         log; checkpoint.pt / best.safetensors while training (for --resume)
  data.parquet      the interactions, when they came from a DataFrame (Python API)
Models may add files (TIGER: semantic_ids.*).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from genrec.config import RunConfig, dump_config
from genrec.errors import ConfigError
from genrec.io import check_out_dir, read_yaml, write_bytes, write_json, write_text
from genrec.objectives import build_objective
from genrec.training import distributed
from genrec.training.trainer import CHECKPOINT, FitContext, Trainer

MODEL_FILE = "model.safetensors"
INPUT_FILE = "data.parquet"  # a DataFrame given to the Python API, kept so that the run can be re-evaluated


def default_run_dir(recipe: str, dataset: str) -> Path:
    """runs/RECIPE-DATASET-TIME, where `genrec train` and `genrec.train` put a run given no directory."""
    return Path("runs") / f"{Path(recipe).stem}-{Path(dataset).stem}-{datetime.now():%Y%m%d-%H%M%S}"


def run_logger(run_dir: Path) -> logging.Logger:
    """The run directory's train.log (one handler per directory, however often it is asked for)."""
    log = logging.getLogger(f"genrec.run.{run_dir.resolve()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        handler = logging.FileHandler(run_dir / "train.log")
        # A log line lost to a full disk prints no traceback: the next file written reports it, in one line.
        handler.handleError = lambda record: None
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
    return log


@contextlib.contextmanager
def open_run_dir(cfg: RunConfig, out: Path, resume: bool):
    """Check that `out` may receive this run (new, or an interrupted run of the same config with --resume),
    create it and write config.yaml; yields the directory. If what runs inside fails before a checkpoint exists,
    what this call created is removed, so a failed run leaves nothing half-written (with a checkpoint the
    directory stays, for --resume). Raises ConfigError, or StorageError when `out` cannot be written."""
    out = Path(out)
    check_out_dir(out)
    if (out / "metrics.json").exists() and not resume:
        raise ConfigError(f"{out} already holds a finished run; choose another --out")
    entries = [p for p in out.iterdir() if p.name != INPUT_FILE] if out.exists() else []
    if entries and not resume and not (out / "config.yaml").exists():
        raise ConfigError(f"{out} exists and is not a genrec run directory")
    if resume and (out / "config.yaml").exists():
        if read_yaml(out / "config.yaml") != cfg.model_dump(mode="json"):
            raise ConfigError(f"{out}: --resume needs the same config as the interrupted run")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        write_text(out / "config.yaml", dump_config(cfg))
        yield out
    except BaseException:
        if created and not (out / CHECKPOINT).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def fit(
    model,
    data,
    ctx: FitContext,
    validate: Callable,
    train_items: np.ndarray | None = None,
    objective=None,
    reference=None,
) -> dict:
    """Fit `model` on `data` (a retrieval `Split` or ranking `FeedbackData`): first its data-dependent part
    (`prepare`), then, for trainable models, the shared Trainer with the model's objective (or `objective`).

    `validate(model, progress) -> float` scores a checkpoint (`ctx.eval.select_metric`, in that metric's
    direction); `reference` is a frozen model
    for preference objectives. Files a model asks for (`prepare`'s `files`) are written into `ctx.run_dir`.
    """
    t0 = time.perf_counter()
    prepare = getattr(model, "prepare", None)
    summary = dict(prepare(data, ctx.extra)) if prepare is not None else {}
    report = summary.pop("report", None)
    if report:
        ctx.info("%s", report)
    files = summary.pop("files", {})
    if ctx.run_dir is not None:
        for name, content in files.items():
            write_bytes(ctx.run_dir / name, content)
    if model.trainable:
        if objective is None:
            objective = build_objective(model.objective_name(), model, train_items)
        summary.update(Trainer(model, objective, data, validate, ctx, reference).fit())
        summary["data_parallel"] = distributed.protocol(ctx.train.batch_size)
    summary["fit_seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def seed_everything(cfg: RunConfig) -> None:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)


def write_metrics(out: Path, metrics: dict) -> None:
    write_json(out / "metrics.json", metrics)
