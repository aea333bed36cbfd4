"""The run directory: one layout for every task, written atomically.

Layout of RUN_DIR:
  config.yaml       resolved config (every default written out, with its task)
  meta.json         task, model name, catalogue sizes, dataset statistics, preprocessing notes
  items.parquet     internal index -> raw item_id (as the source gives it), title, categories
  users.parquet     internal index -> raw user_id and the user's history (internal item ids, with timestamps
                    when the data has them); ranking runs also store each event's action (rating)
  model.safetensors weights of the selected checkpoint
  metrics.json      valid / test metrics, the protocol (`genrec.runs.protocol`), the training summary
  train.log         log; checkpoint.pt / best.safetensors while training (for --resume)
  data.parquet      the interactions, when they came from a DataFrame (Python API)
Models may add files (TIGER: semantic_ids.*); a run that starts from another (`init_from`) keeps that run's.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from genrec.config import RunConfig, dump_config
from genrec.errors import ConfigError
from genrec.io import check_out_dir, read_yaml, write_json, write_text
from genrec.training.trainer import BEST_WEIGHTS, CHECKPOINT

MODEL_FILE = "model.safetensors"
INPUT_FILE = "data.parquet"  # a DataFrame given to the Python API, kept so that the run can be re-evaluated
# What the pipeline writes itself (and files of runs written by older versions); the rest came from the model.
RUN_FILES = frozenset(
    {"config.yaml", "meta.json", "items.parquet", "users.parquet", MODEL_FILE, "metrics.json", "train.log"}
    | {CHECKPOINT, BEST_WEIGHTS, INPUT_FILE, "align.yaml"}
)


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


def seed_everything(cfg: RunConfig) -> None:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)


def write_metrics(out: Path, metrics: dict) -> None:
    write_json(out / "metrics.json", metrics)


def model_files(run_dir: Path) -> dict[str, bytes]:
    """The files a run's model added to its directory (semantic IDs, ...): everything but the pipeline's own."""
    return {
        p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file() and p.name not in RUN_FILES
    }
