"""Retrieval runs: prepare data -> fit -> evaluate on the full catalogue; the retrieval half of `Run`.

The run directory's layout is in `genrec.runs.store`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl

from genrec.config import DataConfig, RunConfig
from genrec.data import filters, quality
from genrec.data.batching import history_batch
from genrec.data.registry import load_dataset
from genrec.data.schema import Dataset
from genrec.data.split import Split, leave_one_out, temporal
from genrec.errors import ConfigError, DataError
from genrec.eval.evaluator import evaluate_split, protocol, validation_score
from genrec.eval.likelihood import prefix_log_likelihood
from genrec.eval.lists import PROTOCOL as LIST_PROTOCOL
from genrec.eval.lists import ListContext, genre_sets, popular_items
from genrec.io import write_json, write_parquet
from genrec.models import build_model
from genrec.progress import make_progress
from genrec.runs.store import MODEL_FILE, fit, open_run_dir, run_logger, seed_everything, write_metrics
from genrec.training import distributed
from genrec.training.checkpoint import save_weights
from genrec.training.trainer import FitContext, stop_note


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
    if cfg.sample_users < 1:
        ds = quality.sample_users(ds, cfg.sample_users)
    if cfg.clean.exact_duplicates or cfg.clean.drop_users or cfg.clean.drop_events:
        scores = implausibility(ds, cfg.clean.model_run) if cfg.clean.model_run else None
        ds = quality.clean(ds, cfg.clean, scores)
    if ds.interactions.height == 0:
        raise DataError(f"{cfg.dataset}: no interactions left after filtering")
    return ds


def implausibility(ds: Dataset, run_dir: str) -> np.ndarray:
    """-log p(item | the events before it) of every event of `ds` under a trained retrieval run's model, aligned to
    `quality.event_table(ds)`'s rows; NaN for a user's first event and for items outside the run's catalogue.
    Raises ConfigError when the model has no log-likelihood."""
    from genrec.runs.run import load_run

    run = load_run(Path(run_dir))
    events = quality.event_table(ds)
    index = {raw: i for i, raw in enumerate(run.items["item_id"].to_list(), start=1)}
    items = np.array([index.get(raw, 0) for raw in events["item_id"].to_list()], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(events["user"].to_numpy()))])
    ll = prefix_log_likelihood(run.model, offsets, items)
    return np.where(items > 0, -ll, np.nan)


def make_split(ds: Dataset, cfg: DataConfig, item_ids=None, user_ids=None) -> Split:
    seq = ds.encode(item_ids, user_ids)
    if cfg.split == "temporal":
        split = temporal(seq, cfg.valid_quantile, cfg.test_quantile)
    else:
        split = leave_one_out(seq)
    if len(split.test) == 0:
        raise DataError(f"{cfg.dataset}: no user has enough interactions to evaluate ({split.details})")
    return split


def collab_embeddings(run_dir: str, item_ids: np.ndarray) -> np.ndarray:
    """Item table of a trained sequence-model run, aligned to raw `item_ids` (unknown items get zeros): the
    collaborative input of a semantic-ID tokenizer (`tokenizer.input: collab | both`)."""
    from genrec.runs.run import load_run

    run = load_run(Path(run_dir))
    if not run.model.can("item_vectors"):
        raise ConfigError(f"{run_dir}: model {run.cfg.model.name} has no item vectors")
    weight = run.model.item_vectors().float().numpy()
    index = {raw: i for i, raw in enumerate(run.items["item_id"].to_list(), start=1)}
    out = np.zeros((len(item_ids), weight.shape[1]), dtype=np.float32)
    for row, raw in enumerate(np.asarray(item_ids).tolist()):
        if raw in index:
            out[row] = weight[index[raw]]
    return out


def train_retrieval(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train, select, evaluate and write a complete retrieval run directory; returns metrics.json's content."""
    ds = prepare_dataset(cfg.data)  # all input errors surface before anything is written
    split = make_split(ds, cfg.data)
    seed_everything(cfg)
    with open_run_dir(cfg, out, resume) as out:
        seq = split.sequences
        items = pl.DataFrame({"item_id": seq.item_ids}).join(
            ds.items.select(["item_id", "title", "categories"]),
            on="item_id",
            how="left",
            maintain_order="left",
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
            "task": "retrieval",
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
        resources = {"items": items, "collab_embeddings": collab_embeddings}
        ctx = FitContext(cfg.train, cfg.eval, out, resume, log, progress, extra=resources)
        summary = fit_retrieval(model, split, ctx)
        if not distributed.current().is_main:  # rank 0 alone evaluates and writes the run
            return {"training": summary}
        save_weights(out / MODEL_FILE, model.state_dict())
        with make_progress(progress) as bar:
            t1 = time.perf_counter()
            metrics = evaluate_split(model, split, cfg.eval, progress=bar, context=list_context(split, items))
        metrics["protocol"] = retrieval_protocol(cfg, split, ds, cfg.data.dataset, model, summary)
        metrics["training"] = summary
        metrics["eval_seconds"] = round(time.perf_counter() - t1, 2)
        write_metrics(out, metrics)
        log.info("test %s", metrics["test"])
        return metrics


def list_context(split: Split, items: pl.DataFrame, reward=None) -> ListContext:
    """What the list-level metrics (`genrec.eval.lists`) read: the items' categories (when any item has one),
    the most popular 1% of items by training interactions, and an optional reward model."""
    categories = items["categories"].to_list() if "categories" in items.columns else []
    genres = genre_sets(categories) if any(categories) else None
    return ListContext(genres, popular_items(split.train.items, split.n_items), reward)


def fit_retrieval(model, split: Split, ctx: FitContext, **options) -> dict:
    """`store.fit` for a retrieval model: checkpoints are selected on `ctx.eval.select_metric` over the
    validation users (full catalogue, history excluded unless `eval.exclude_history` is off). `options`:
    `objective`, `reference` (see `store.fit`)."""

    def validate(m, bar) -> float:
        return validation_score(m, split.valid, split.n_items, ctx.eval, bar)

    return {
        "n_train_users": len(split.train),
        **fit(model, split, ctx, validate, split.train.items, **options),
    }


def retrieval_protocol(cfg: RunConfig, split: Split, ds: Dataset, dataset: str, model, summary: dict) -> dict:
    """The metrics' protocol; `summary` is the training summary (how training ended)."""
    selection = model.checkpoint_selection() + stop_note(summary)
    stats, seed = ds.stats(), cfg.train.seed
    tokens = summary.get("semantic_ids", {}).get("item_vectors")  # what made a semantic-ID model's codes
    return {
        "task": "retrieval",
        **protocol(split, cfg.eval, dataset, stats, ds.notes, selection, seed, model, summary.get("stop")),
        **({"semantic_ids": tokens} if tokens else {}),
        "list_metrics": LIST_PROTOCOL,
        "data_parallel": summary.get("data_parallel") or distributed.protocol(cfg.train.batch_size),
    }


def evaluate_retrieval(run, dataset: str | None = None, progress: bool = True, reward=None) -> dict:
    """Re-evaluate a retrieval run on its dataset (or another SPEC), encoded in the run's item and user index.
    `reward`: an optional reward model (`genrec.alignment.reward.RewardModel`, bound here to the split's
    sequences) for the `reward@K` list metric (`genrec.eval.lists`)."""
    data_cfg = run.cfg.data if dataset is None else run.cfg.data.model_copy(update={"dataset": dataset})
    ds = prepare_dataset(data_cfg)
    split = make_split(ds, data_cfg, run.items["item_id"].to_numpy(), run.users["user_id"].to_numpy())
    context = list_context(split, run.items, None if reward is None else reward.bind(split.sequences))
    with make_progress(progress) as bar:
        metrics = evaluate_split(run.model, split, run.cfg.eval, progress=bar, context=context)
    summary = run.metrics.get("training", {})  # how the evaluated weights were trained
    metrics["protocol"] = retrieval_protocol(run.cfg, split, ds, data_cfg.dataset, run.model, summary)
    stored = run.metrics.get("protocol", {})
    if "alignment" in stored:  # an aligned run (genrec.alignment): its weights came from alignment
        for key in ("alignment", "checkpoint_selection", "seed"):
            metrics["protocol"][key] = stored[key]
    return metrics


def one_history_batch(model, history: np.ndarray, user: int | None, timestamps: np.ndarray | None):
    """The batch the evaluator builds for one history of internal ids (oldest first): its newest
    `model.max_history` items, right-aligned."""
    history = np.array(history, dtype=np.int64)  # a writable copy: torch shares its memory
    return history_batch(
        np.array([0, len(history)]),
        history,
        np.array([0]),
        model.max_history,
        users=np.array([-1 if user is None else user]),
        timestamps=timestamps,
    )
