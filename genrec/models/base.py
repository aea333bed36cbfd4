"""The one interface the evaluator, the CLI and the server use for every model.

A model either scores every item (`score`) or generates a ranked list (`recommend`); a scoring model gets
`recommend` for free. Training is the model's own `fit`: closed-form baselines count, neural models hand
themselves to the shared `Trainer` through `training_batches` and `loss`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from genrec.config import EvalConfig, ModelConfig, TrainConfig
from genrec.data.batching import HistoryBatch
from genrec.data.split import Split


@dataclass
class FitContext:
    train: TrainConfig
    eval: EvalConfig
    run_dir: Path | None = None
    resume: bool = False
    log: object = None  # logging.Logger; None = silent
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def info(self, msg: str, *args) -> None:
        if self.log is not None:
            self.log.info(msg, *args)


class Recommender(nn.Module):
    config_class: ClassVar[type[ModelConfig]]
    scores_all_items: ClassVar[bool] = True
    # Neural models train with the shared Trainer and pick the best validation epoch; baselines fit directly.
    trainable: ClassVar[bool] = False

    def __init__(self, cfg: ModelConfig, n_items: int, n_users: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.n_users = n_users

    @property
    def max_history(self) -> int | None:
        """How many of the most recent history items the model reads (None = all)."""
        return getattr(self.cfg, "max_len", None)

    def fit(self, split: Split, ctx: FitContext) -> dict:
        from genrec.train.trainer import Trainer

        return Trainer(self, split, ctx).fit()

    def training_batches(self, split: Split, rng: np.random.Generator, batch_size: int) -> Iterator:
        raise NotImplementedError

    def loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        """[B, n_items + 1] scores; column 0 is padding and is ignored."""
        raise NotImplementedError

    @torch.no_grad()
    def recommend(self, batch: HistoryBatch, k: int, exclude: torch.Tensor | None = None):
        """Top-k internal item ids and scores. `exclude` is a [B, M] tensor of item ids to leave out (0 = none)."""
        scores = candidate_scores(self, batch, exclude)
        k = min(k, self.n_items)
        top = torch.topk(scores, k, dim=1)
        return top.indices, top.values

    def checkpoint_selection(self) -> str:
        if self.trainable:
            return "weights of the epoch with the best validation score (history-excluded), evaluated once on test"
        return "none: the model is fitted in closed form on the training split"


def candidate_scores(model, batch: HistoryBatch, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """`model.score(batch)` as [B, n_items + 1] floats, with padding (column 0), the `exclude`d item ids
    ([B, M], 0 = none) and NaN scores at -inf: an item without a defined score is never recommended nor
    counted as a hit (top-k would otherwise put NaN first). Needs only `score`, so any scoring model works."""
    scores = model.score(batch).float().clone()
    scores.masked_fill_(scores.isnan(), float("-inf"))
    scores[:, 0] = float("-inf")
    if exclude is not None:
        scores.scatter_(1, exclude, float("-inf"))
    return scores


MODELS: dict[str, type[Recommender]] = {}


def register(cls: type[Recommender]) -> type[Recommender]:
    name = cls.config_class.model_fields["name"].default
    MODELS[name] = cls
    return cls


def build_model(cfg: ModelConfig, n_items: int, n_users: int) -> Recommender:
    return MODELS[cfg.name](cfg, n_items, n_users)
