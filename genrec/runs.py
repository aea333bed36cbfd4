"""A run directory is the unit of reproducibility: prepare data -> train -> evaluate -> write, and load it back.

Layout of RUN_DIR:
  config.yaml       resolved config (every default written out)
  meta.json         catalogue sizes, dataset statistics, preprocessing notes, model name
  items.parquet     internal index -> raw item_id, title, categories
  users.parquet     internal index -> raw user_id and the user's full history (internal item ids)
  model.safetensors weights of the selected checkpoint
  metrics.json      valid / test (+ *_unfiltered) metrics, the protocol, the training summary
  train.log         log; checkpoint.pt / best.safetensors while training (for --resume)
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import yaml

from genrec.config import DataConfig, RunConfig, build_config, dump_config
from genrec.data import filters
from genrec.data.batching import history_batch
from genrec.data.registry import load_dataset
from genrec.data.schema import Dataset
from genrec.data.split import Split, leave_one_out, temporal
from genrec.errors import ConfigError, DataError
from genrec.eval.evaluator import evaluate_split, protocol
from genrec.models import FitContext, Recommender, build_model
from genrec.progress import make_progress
from genrec.train.checkpoint import load_model_weights, save_weights, write_json, write_parquet, write_text
from genrec.train.trainer import CHECKPOINT, averaging_note, stop_note

MODEL_FILE = "model.safetensors"


def prepare_dataset(cfg: DataConfig) -> Dataset:
    ds = load_dataset(cfg.dataset, cfg.data_dir, cfg.columns or None, cfg.items_path, cfg.download)
    if cfg.unordered_users == "drop":
        ds = filters.drop_unordered_users(ds)
    if cfg.dedup != "none":
        ds = filters.deduplicate(ds, cfg.dedup)
    if cfg.kcore:
        ds = filters.k_core(ds, cfg.kcore)
    if cfg.min_seq_len:
        ds = filters.min_sequence_length(ds, cfg.min_seq_len)
    if ds.interactions.height == 0:
        raise DataError(f"{cfg.dataset}: no interactions left after filtering")
    return ds


def make_split(ds: Dataset, cfg: DataConfig, item_ids=None, user_ids=None) -> Split:
    seq = ds.encode(item_ids, user_ids)
    if cfg.split == "temporal":
        split = temporal(seq, cfg.valid_quantile, cfg.test_quantile)
    else:
        split = leave_one_out(seq)
    if len(split.test) == 0:
        raise DataError(f"{cfg.dataset}: no user has enough interactions to evaluate ({split.details})")
    return split


@dataclass
class Run:
    dir: Path
    cfg: RunConfig
    model: Recommender
    items: pl.DataFrame
    users: pl.DataFrame
    meta: dict

    def titles(self, idx) -> list[str]:
        table = self.items
        out = []
        for i in np.asarray(idx).tolist():
            row = table.row(i - 1, named=True) if 0 < i <= table.height else None
            out.append((row["title"] or f"item {row['item_id']}") if row else "?")
        return out

    def raw_item_ids(self, idx) -> list[int]:
        ids = self.items["item_id"].to_numpy()
        return [int(ids[i - 1]) for i in np.asarray(idx).tolist()]

    def item_index(self, raw_ids: list[int]) -> np.ndarray:
        ids = self.items["item_id"].to_numpy()
        pos = np.searchsorted(ids, raw_ids)
        pos = np.clip(pos, 0, len(ids) - 1)
        found = ids[pos] == np.asarray(raw_ids)
        if not found.all():
            unknown = [r for r, f in zip(raw_ids, found) if not f]
            raise DataError(
                f"unknown item id(s) {unknown[:10]} (not in this run's catalogue of {len(ids)} items)"
            )
        return pos + 1

    def user_history(self, raw_user: int) -> tuple[int, np.ndarray, np.ndarray | None]:
        """(internal user index, history of internal item ids, their timestamps or None)."""
        hit = self.users.filter(pl.col("user_id") == raw_user)
        if hit.height == 0:
            raise DataError(f"unknown user id {raw_user} (this run knows {self.users.height} users)")
        times = np.array(hit["timestamps"][0], dtype=np.int64) if "timestamps" in hit.columns else None
        return int(hit["user"][0]), np.array(hit["history"][0], dtype=np.int64), times

    @torch.no_grad()
    def recommend(
        self,
        history: np.ndarray,
        k: int,
        exclude_seen: bool = True,
        user: int | None = None,
        timestamps: np.ndarray | None = None,
    ):
        """Top-k (internal ids, scores) for one history of internal ids (oldest first).

        Without timestamps a time-aware model (HSTU) scores with its time bias off.
        """
        history = np.array(history, dtype=np.int64)  # a writable copy: torch shares its memory
        offsets = np.array([0, len(history)])
        batch = history_batch(
            offsets,
            history,
            np.array([0]),
            self.model.max_history,
            users=np.array([-1 if user is None else user]),
            timestamps=timestamps,
        )
        exclude = torch.from_numpy(history)[None, :] if exclude_seen and len(history) else None
        ids, scores = self.model.recommend(batch, k, exclude)
        keep = torch.isfinite(scores[0])
        return ids[0][keep].numpy(), scores[0][keep].numpy()


def run_logger(run_dir: Path) -> logging.Logger:
    """The run directory's train.log (one handler per directory, however often it is asked for)."""
    log = logging.getLogger(f"genrec.run.{run_dir.resolve()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        handler = logging.FileHandler(run_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
    return log


def train_run(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train, select, evaluate and write a complete run directory; returns metrics.json's content."""
    ds = prepare_dataset(cfg.data)  # all input errors surface before anything is written
    split = make_split(ds, cfg.data)
    out = Path(out)
    if (out / "metrics.json").exists() and not resume:
        raise ConfigError(f"{out} already holds a finished run; choose another --out")
    if out.exists() and any(out.iterdir()) and not resume and not (out / "config.yaml").exists():
        raise ConfigError(f"{out} exists and is not a genrec run directory")
    if resume and (out / "config.yaml").exists():
        saved = yaml.safe_load((out / "config.yaml").read_text())
        if saved != cfg.model_dump(mode="json"):
            raise ConfigError(f"{out}: --resume needs the same config as the interrupted run")
    with cleanup_on_failure(out):
        return _train_into(cfg, out, ds, split, resume, progress)


@contextlib.contextmanager
def cleanup_on_failure(out: Path):
    """Create `out`; if what follows fails before a checkpoint exists there, remove what this call created, so a
    failed run leaves nothing half-written (with a checkpoint the directory stays, for --resume)."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if created and not (out / CHECKPOINT).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _train_into(cfg: RunConfig, out: Path, ds: Dataset, split: Split, resume: bool, progress: bool) -> dict:
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)
    write_text(out / "config.yaml", dump_config(cfg))
    seq = split.sequences
    items = pl.DataFrame({"item_id": seq.item_ids}).join(
        ds.items.select(["item_id", "title", "categories"]), on="item_id", how="left", maintain_order="left"
    )
    write_parquet(out / "items.parquet", items)
    users = pl.DataFrame(
        {
            "user": np.arange(seq.n_users),
            "user_id": seq.user_ids,
            "history": [seq.row(u).tolist() for u in range(seq.n_users)],
        }
    )
    if seq.timestamps is not None:  # time-aware models need them to score a known user as in evaluation
        times = [seq.timestamps[seq.offsets[u] : seq.offsets[u + 1]].tolist() for u in range(seq.n_users)]
        users = users.with_columns(pl.Series("timestamps", times))
    write_parquet(out / "users.parquet", users)
    stats = ds.stats()
    meta = {
        "model": cfg.model.name,
        "n_items": seq.n_items,
        "n_users": seq.n_users,
        "dataset": cfg.data.dataset,
        "dataset_stats": stats,
        "preprocessing": ds.notes,
    }
    write_json(out / "meta.json", meta)
    log = run_logger(out)
    log.info("dataset %s: %s", cfg.data.dataset, stats)
    model = build_model(cfg.model, seq.n_items, seq.n_users)
    # The item table (titles, categories) is what semantic-ID and text models build their item side from.
    ctx = FitContext(cfg.train, cfg.eval, out, resume, log, progress, extra={"items": items})
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    t0 = time.perf_counter()
    summary = model.fit(split, ctx)
    summary["fit_seconds"] = round(time.perf_counter() - t0, 2)
    save_weights(out / MODEL_FILE, model.state_dict())
    with make_progress(progress) as bar:
        t1 = time.perf_counter()
        metrics = evaluate_split(model, split, cfg.eval, progress=bar)
    metrics["protocol"] = protocol(
        split,
        cfg.eval,
        cfg.data.dataset,
        stats,
        ds.notes,
        model.checkpoint_selection() + averaging_note(cfg.train) + stop_note(summary),
        cfg.train.seed,
        model,
        summary.get("stop"),
    )
    metrics["training"] = summary
    metrics["eval_seconds"] = round(time.perf_counter() - t1, 2)
    write_json(out / "metrics.json", metrics)
    log.info("test %s", metrics["test"])
    return metrics


def load_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    needed = ["config.yaml", "meta.json", "items.parquet", "users.parquet", MODEL_FILE]
    missing = [n for n in needed if not (run_dir / n).exists()]
    if missing:
        raise DataError(f"{run_dir} is not a finished genrec run (missing {', '.join(missing)})")
    cfg = build_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    meta = json.loads((run_dir / "meta.json").read_text())
    model = build_model(cfg.model, meta["n_items"], meta["n_users"])
    load_model_weights(model, run_dir / MODEL_FILE)
    model.eval()
    items = pl.read_parquet(run_dir / "items.parquet")
    users = pl.read_parquet(run_dir / "users.parquet")
    return Run(run_dir, cfg, model, items, users, meta)


def evaluate_run(run: Run, dataset: str | None = None, progress: bool = True) -> dict:
    """Re-evaluate a run on its dataset (or another SPEC), encoded in the run's own item and user index."""
    data_cfg = run.cfg.data if dataset is None else run.cfg.data.model_copy(update={"dataset": dataset})
    ds = prepare_dataset(data_cfg)
    split = make_split(ds, data_cfg, run.items["item_id"].to_numpy(), run.users["user_id"].to_numpy())
    with make_progress(progress) as bar:
        metrics = evaluate_split(run.model, split, run.cfg.eval, progress=bar)
    trained = run.dir / "metrics.json"
    summary = json.loads(trained.read_text()).get("training", {}) if trained.exists() else {}
    metrics["protocol"] = protocol(
        split,
        run.cfg.eval,
        data_cfg.dataset,
        ds.stats(),
        ds.notes,
        run.model.checkpoint_selection() + averaging_note(run.cfg.train) + stop_note(summary),
        run.cfg.train.seed,
        run.model,
        summary.get("stop"),
    )
    return metrics
