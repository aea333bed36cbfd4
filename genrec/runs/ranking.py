"""Ranking runs: explicit-feedback data -> ranker -> AUC / GAUC / LogLoss / NDCG; the ranking half of `Run`.

The run directory's layout is in `genrec.runs.store`. Feature tables (genres, years, text vectors, cross
features) come from the data, not from training: a loaded ranking run rebuilds them from its dataset.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl

from genrec.config import DataConfig, RankDataConfig, RunConfig
from genrec.data.feedback import FeedbackData, build_feedback
from genrec.data.provenance import check_resume_data, data_record
from genrec.data.schema import Dataset
from genrec.eval.evaluator import code_version
from genrec.eval.ranking import evaluate_ranker
from genrec.io import write_json, write_parquet
from genrec.models.ranking import Ranker, RankerConfig
from genrec.registry import get as registered_class
from genrec.runs.retrieval import prepare_dataset
from genrec.runs.store import MODEL_FILE, fit, open_run_dir, run_logger, seed_everything, write_metrics
from genrec.training import distributed
from genrec.training.checkpoint import save_weights
from genrec.training.trainer import FitContext, stop_note


def feedback_dataset(cfg: RankDataConfig) -> Dataset:
    """The interactions (with ratings) and item table a ranking run's data section names."""
    keys = ("dataset", "data_dir", "download", "unreadable_ratings")
    return prepare_dataset(DataConfig(**{key: getattr(cfg, key) for key in keys}))


def prepare_feedback(cfg: RankDataConfig, ds: Dataset | None = None) -> tuple[FeedbackData, dict, list[str]]:
    """(labelled impressions and features, dataset statistics, preprocessing notes) of `ds`, loaded from `cfg`
    when not given."""
    ds = ds if ds is not None else feedback_dataset(cfg)
    data = build_feedback(
        ds, cfg.valid_quantile, cfg.test_quantile, cfg.like_threshold, cfg.candidate_time, cfg.rating_scale
    )
    return data, ds.stats(), list(ds.notes)


def text_embeddings(data: FeedbackData, encoder: str | None = None, pooling: str = "mean") -> np.ndarray:
    """Frozen embeddings of each item's "title | genres" (cached on disk): all-MiniLM-L6-v2 by default, or the
    pooled hidden states of a generative LLM (`encoder`, see genrec.items.text)."""
    from genrec.items.text import encode_texts

    return encode_texts(data.features.item_text, encoder, pooling=pooling)


def build_ranker(cfg: RankerConfig, data: FeedbackData) -> Ranker:
    wants_text = cfg.text_features or cfg.text_interest
    text = text_embeddings(data, cfg.text_encoder, cfg.text_pooling) if wants_text else None
    return registered_class(cfg.name)(cfg, data, text)


def protocol(
    cfg: RunConfig,
    data: FeedbackData,
    stats: dict,
    notes: list[str],
    model: Ranker,
    summary: dict | None = None,
) -> dict:
    """The metrics' protocol; `summary` is the training summary (how training ended)."""
    summary = summary or {}
    return {
        "task": "ranking",
        "candidates": "labelled impressions of each user (explicit feedback), scored by the ranker",
        "dataset": cfg.data.dataset,
        "dataset_stats": stats,
        "preprocessing": notes,
        "split": data.details,
        "history": f"the last {cfg.model.max_len} events (item, rating) before the impression's cut-off",
        "training": "windows of max_len consecutive training events; every label uses only earlier events",
        "metrics": "AUC over all impressions (ties half); GAUC = impression-weighted per-user AUC over users "
        "with both labels; LogLoss of sigmoid(logit); NDCG@K / NDCG of each user's impressions ranked by "
        "score, gain = like, ties pessimistic",
        "checkpoint_selection": f"epoch with the best validation {cfg.eval.select_metric}, evaluated once on test"
        + stop_note(summary),
        **({"training_stop": summary["stop"]} if "stop" in summary else {}),
        "seed": cfg.train.seed,
        "data_parallel": summary.get("data_parallel") or distributed.protocol(cfg.train.batch_size),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "code_version": code_version(),
    }


def train_ranking(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train, select, evaluate and write a complete ranking run directory; returns metrics.json's content."""
    ds = feedback_dataset(cfg.data)
    data, stats, notes = prepare_feedback(cfg.data, ds)  # input errors surface before anything is written
    check_resume_data(out, ds, resume)
    seed_everything(cfg)
    with open_run_dir(cfg, out, resume) as out:
        items = pl.DataFrame({"item_id": data.seq.item_ids}).join(
            ds.items.select(["item_id", "title", "categories"]),
            on="item_id",
            how="left",
            maintain_order="left",
        )
        write_parquet(out / "items.parquet", items)
        seq = data.seq
        rows = [slice(seq.offsets[u], seq.offsets[u + 1]) for u in range(seq.n_users)]
        users = pl.DataFrame(
            {
                "user": np.arange(seq.n_users),
                "user_id": seq.user_ids,
                "history": [seq.items[r].tolist() for r in rows],
                "timestamps": [seq.timestamps[r].tolist() for r in rows],
                "actions": [data.actions[r].tolist() for r in rows],
            }
        )
        write_parquet(out / "users.parquet", users)
        meta = {
            "task": "ranking",
            "model": cfg.model.name,
            "n_items": data.n_items,
            "n_users": data.n_users,
            "dataset": cfg.data.dataset,
            "data": data_record(ds),
        }
        write_json(out / "meta.json", meta)
        log = run_logger(out)
        log.info("ranking data %s: %s", cfg.data.dataset, data.details)
        model = build_ranker(cfg.model, data)
        model.eval_batch_size = cfg.eval.batch_size
        ctx = FitContext(cfg.train, cfg.eval, out, resume, log, progress)

        def validate(m, _progress) -> float:
            return float(evaluate_ranker(m, data, data.valid)[cfg.eval.select_metric])

        summary = fit(model, data, ctx, validate)
        if not distributed.current().is_main:  # rank 0 alone evaluates and writes the run
            return {"training": summary}
        save_weights(out / MODEL_FILE, model.state_dict())
        t1 = time.perf_counter()
        metrics = {
            "valid": evaluate_ranker(model, data, data.valid, cfg.eval.ks),
            "test": evaluate_ranker(model, data, data.test, cfg.eval.ks),
        }
        metrics["eval_seconds"] = round(time.perf_counter() - t1, 2)
        metrics["protocol"] = protocol(cfg, data, stats, notes, model, summary)
        metrics["training"] = summary
        write_metrics(out, metrics)
        log.info("test %s", metrics["test"])
        return metrics


def evaluate_ranking(run, dataset: str | None = None, progress: bool = True) -> dict:
    """Re-evaluate a ranking run on its dataset (or another one with the same item ids)."""
    data = (
        run.feedback
        if dataset is None
        else prepare_feedback(run.cfg.data.model_copy(update={"dataset": dataset}))[0]
    )
    metrics = {
        split: evaluate_ranker(run.model, data, getattr(data, split), run.cfg.eval.ks)
        for split in ("valid", "test")
    }
    metrics["protocol"] = protocol(run.cfg, data, {}, [], run.model, run.metrics.get("training", {}))
    return metrics
