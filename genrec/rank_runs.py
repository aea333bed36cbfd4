"""Ranking runs: recipe -> explicit-feedback data -> ranker -> AUC / GAUC / LogLoss / NDCG, in a run directory.

Layout of RUN_DIR (as for retrieval runs):
  config.yaml        resolved config
  meta.json          catalogue size, dataset statistics, preprocessing notes, ranker name
  items.parquet      internal index -> raw item_id (so a cascade can map a retrieval run's items)
  model.safetensors  weights of the best validation epoch (feature tables are rebuilt from the data)
  metrics.json       valid / test ranking metrics, the protocol, the training summary
  train.log          log; checkpoint.pt / best.safetensors while training
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
import yaml
from pydantic import Field, SerializeAsAny, ValidationError, field_validator

from genrec.config import (
    DataConfig,
    StrictModel,
    TrainConfig,
    config_keys,
    deep_merge,
    parse_overrides,
    recipe_dict,
    validation_message,
)
from genrec.data.feedback import FeedbackData, build_feedback
from genrec.errors import ConfigError, DataError
from genrec.models.base import FitContext
from genrec.models.ranking import RANKERS, Ranker, RankerConfig
from genrec.runs import cleanup_on_failure, run_logger
from genrec.train.checkpoint import load_model_weights, save_weights, write_json, write_parquet, write_text
from genrec.train.trainer import averaging_note, stop_note

MODEL_FILE = "model.safetensors"


class RankDataConfig(StrictModel):
    dataset: str = "ml-100k"
    data_dir: str | None = None
    download: bool = False
    unordered_users: Literal["drop"] = Field("drop", description="ranking needs real time order")
    valid_quantile: float = 0.8
    test_quantile: float = 0.9
    like_threshold: float = 4.0
    candidate_time: Literal["impression", "last_event"] = Field(
        "impression", description="the candidate's time models see: its own, or its history's last event's"
    )


class RankEvalConfig(StrictModel):
    select_metric: Literal["auc", "gauc"] = "gauc"
    ks: list[int] = Field(default_factory=lambda: [10])
    batch_size: int = Field(64, ge=1, description="history rows per evaluation batch")


class RankRunConfig(StrictModel):
    model: SerializeAsAny[RankerConfig]
    data: RankDataConfig = Field(default_factory=RankDataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: RankEvalConfig = Field(default_factory=RankEvalConfig)

    @field_validator("model", mode="before")
    @classmethod
    def _dispatch(cls, value: Any) -> RankerConfig:
        if isinstance(value, RankerConfig):
            return value
        if not isinstance(value, dict) or value.get("name") not in RANKERS:
            got = value.get("name") if isinstance(value, dict) else value
            raise ValueError(f"unknown ranker {got!r}; known: {', '.join(sorted(RANKERS))}")
        cfg = RANKERS[value["name"]].config_class.model_validate(value)
        if cfg.text_interest and not RANKERS[cfg.name].reads_text_interest:
            readers = ", ".join(sorted(n for n, r in RANKERS.items() if r.reads_text_interest))
            raise ValueError(f"ranker {cfg.name!r} does not read text_interest (rankers that do: {readers})")
        return cfg


def build_rank_config(raw: dict) -> RankRunConfig:
    try:
        return RankRunConfig.model_validate(raw)
    except ValidationError as e:
        model = raw.get("model") if isinstance(raw, dict) else None
        keys = config_keys(RankRunConfig, model_name=model.get("name") if isinstance(model, dict) else None)
        raise ConfigError(validation_message(e, keys)) from None


def ranking_recipe(recipe: str) -> str | None:
    """The ranker a recipe (built-in name or YAML) trains, or None when it is not a ranking recipe."""
    model = recipe_dict(recipe).get("model")
    name = model.get("name") if isinstance(model, dict) else None
    return name if name in RANKERS else None


def load_rank_config(
    recipe: str, overrides: list[str] | None = None, dataset: str | None = None
) -> RankRunConfig:
    raw = recipe_dict(recipe)
    model = raw.get("model")
    if not isinstance(model, dict) or model.get("name") not in RANKERS:
        raise ConfigError(
            f"recipe {recipe!r} is not a ranking recipe (rankers: {', '.join(sorted(RANKERS))})"
        )
    raw = deep_merge(raw, parse_overrides(overrides or []))
    if dataset:
        raw = deep_merge(raw, {"data": {"dataset": dataset}})
    return build_rank_config(raw)


def prepare_feedback(cfg: RankDataConfig) -> tuple[FeedbackData, dict, list[str]]:
    from genrec.runs import prepare_dataset

    ds = prepare_dataset(DataConfig(dataset=cfg.dataset, data_dir=cfg.data_dir, download=cfg.download))
    data = build_feedback(ds, cfg.valid_quantile, cfg.test_quantile, cfg.like_threshold, cfg.candidate_time)
    return data, ds.stats(), list(ds.notes)


def text_embeddings(data: FeedbackData, encoder: str | None = None, pooling: str = "mean") -> np.ndarray:
    """Frozen embeddings of each item's "title | genres" (cached on disk): all-MiniLM-L6-v2 by default, or the
    pooled hidden states of a generative LLM (`encoder`, see genrec.tokenize.text)."""
    from genrec.tokenize.text import encode_texts

    return encode_texts(data.features.item_text, encoder, pooling=pooling)


def build_ranker(cfg: RankerConfig, data: FeedbackData) -> Ranker:
    wants_text = cfg.text_features or cfg.text_interest
    text = text_embeddings(data, cfg.text_encoder, cfg.text_pooling) if wants_text else None
    return RANKERS[cfg.name](cfg, data, text)


def protocol(
    cfg: RankRunConfig,
    data: FeedbackData,
    stats: dict,
    notes: list[str],
    model: Ranker,
    summary: dict | None = None,
) -> dict:
    from genrec.eval.evaluator import code_version

    return {
        "task": "ranking of labelled impressions (explicit feedback)",
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
        + averaging_note(cfg.train)
        + stop_note(summary or {}),
        **({"training_stop": summary["stop"]} if summary and "stop" in summary else {}),
        "seed": cfg.train.seed,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "code_version": code_version(),
    }


def rank_train(cfg: RankRunConfig, out: Path, resume: bool = False, progress: bool = True) -> dict:
    data, stats, notes = prepare_feedback(cfg.data)  # input errors surface before anything is written
    out = Path(out)
    if (out / "metrics.json").exists() and not resume:
        raise ConfigError(f"{out} already holds a finished run; choose another --out")
    if resume and (out / "config.yaml").exists():
        if yaml.safe_load((out / "config.yaml").read_text()) != cfg.model_dump(mode="json"):
            raise ConfigError(f"{out}: --resume needs the same config as the interrupted run")
    with cleanup_on_failure(out):
        return _rank_train_into(cfg, out, data, stats, notes, resume, progress)


def _rank_train_into(cfg: RankRunConfig, out: Path, data, stats, notes, resume: bool, progress: bool) -> dict:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    write_text(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    write_parquet(out / "items.parquet", pl.DataFrame({"item_id": data.seq.item_ids}))
    meta = {"model": cfg.model.name, "task": "ranking", "n_items": data.n_items, "dataset": cfg.data.dataset}
    write_json(out / "meta.json", meta)
    log = run_logger(out)
    log.info("ranking data %s: %s", cfg.data.dataset, data.details)
    model = build_ranker(cfg.model, data)
    ctx = FitContext(cfg.train, cfg.eval, out, resume, log, progress)
    t0 = time.perf_counter()
    summary = model.fit(data, ctx)
    summary["fit_seconds"] = round(time.perf_counter() - t0, 2)
    save_weights(out / MODEL_FILE, model.state_dict())
    t1 = time.perf_counter()
    metrics = {
        "valid": model.evaluate(data, data.valid, cfg.eval.ks),
        "test": model.evaluate(data, data.test, cfg.eval.ks),
    }
    metrics["eval_seconds"] = round(time.perf_counter() - t1, 2)
    metrics["protocol"] = protocol(cfg, data, stats, notes, model, summary)
    metrics["training"] = summary
    write_json(out / "metrics.json", metrics)
    log.info("test %s", metrics["test"])
    return metrics


def load_ranker(
    run_dir: Path, data: FeedbackData | None = None
) -> tuple[RankRunConfig, Ranker, FeedbackData]:
    """A trained ranker with its feature tables rebuilt from the run's dataset (or the given data)."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "meta.json", MODEL_FILE):
        if not (run_dir / name).exists():
            raise DataError(f"{run_dir} is not a finished ranking run (missing {name})")
    if json.loads((run_dir / "meta.json").read_text()).get("task") != "ranking":
        raise DataError(f"{run_dir} is not a ranking run")
    cfg = build_rank_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    if data is None:
        data, _, _ = prepare_feedback(cfg.data)
    model = build_ranker(cfg.model, data)
    load_model_weights(model, run_dir / MODEL_FILE)
    model.eval()
    return cfg, model, data
