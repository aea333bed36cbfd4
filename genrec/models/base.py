"""The interface every retrieval model implements, and the capabilities a model declares.

A retrieval model either scores every item (`score`) or generates a ranked list (`recommend`); a scoring model
gets `recommend` for free. Models compute: training loops, objectives, evaluation and run files live in the
layers above (`genrec.training`, `genrec.objectives`, `genrec.eval`, `genrec.runs`).

Capabilities (`capabilities`, a frozenset of these names) tell the engine, server and evaluator what a model
can do, so that nothing above the models asks `isinstance`:
- `score`: `score(batch) -> [B, n_items + 1]`, every item scored (full-catalogue evaluation, `/rank`);
- `generate`: `recommend(batch, k, exclude)` generates the list itself (beam search); no per-item score;
- `item_vectors`: `item_vectors() -> [n_items + 1, d]` and `query_vectors(batch) -> [B, d]` with
  score = query @ item row (exact or ANN top-K; `history_offset()` may add a logit to history items);
- `incremental_state`: `init_state(items, times)` / `extend_state(state, ...)` / `state_query(state)`: a
  user's state is extended by one event without re-encoding the history (KV cache);
- `score_candidates`: `score_candidates(batch, candidates) -> [B, C]` (rankers);
- `log_likelihood`: `log_likelihood(batch, items) -> [B, n]` log p(item | history), for preference objectives;
- `generate_sessions`: `generate_sessions(batch, n_beams, N, exclude=None) -> (items [B, n_beams, N], scores
  [B, n_beams])`: whole next sessions of N distinct real items, best first, scores = their log-likelihoods;
- `session_log_likelihood`: `session_log_likelihood(batch, sessions [B, n, N]) -> [B, n]` log p(session |
  history), the sum of the session's token log-probabilities (equal to `generate_sessions`' scores);
- `search`: `search_scores(batch, query_emb [B, d_text]) -> [B, n_items + 1]`, items scored for a typed query
  plus the history (unified search and recommendation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import polars as pl
import torch
from torch import nn

from genrec.config.base import ModelConfig
from genrec.data.batching import HistoryBatch
from genrec.data.split import Split
from genrec.errors import ConfigError
from genrec.registry import get as registered_class
from genrec.registry import register


@dataclass(frozen=True)
class Resources:
    """What the runs layer offers `Recommender.prepare` beside the training split.

    `items`: the run's item table (item_id, title, categories; row i = internal id i + 1), None outside a run.
    `collab_embeddings(run_dir, raw_item_ids) -> [n, d]`: a trained run's item vectors aligned to raw ids (for
    tokenizers that mix collaborative signal into the item input), None when not offered."""

    items: pl.DataFrame | None = None
    collab_embeddings: Callable[[str, np.ndarray], np.ndarray] | None = None

    def item_table(self, model: str) -> pl.DataFrame:
        """The item table, for a model that builds its item side from titles and categories. Raises ConfigError
        (naming `model`) when there is none."""
        if self.items is None:
            raise ConfigError(f"{model} needs the run's item table (titles, categories)")
        return self.items


class Capable:
    """What every model (retriever or ranker) declares: the `capabilities` it has, asked through `can`."""

    capabilities: ClassVar[frozenset[str]] = frozenset()

    def can(self, capability: str) -> bool:
        return capability in self.capabilities


class Recommender(Capable, nn.Module):
    """Base of retrieval models. `n_items` items have internal ids 1..n_items (0 = padding)."""

    config_class: ClassVar[type[ModelConfig]]
    capabilities: ClassVar[frozenset[str]] = frozenset({"score"})
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

    def prepare(self, split: Split, resources: Resources) -> dict:
        """Fit what comes from the data rather than from gradient steps (closed-form baselines, text vectors,
        semantic IDs), before any training, with what the runs layer offers (`Resources`). Returns a summary
        for the run's metrics (may hold `report`, a text the runs layer logs, and `files`, {name: bytes} it
        writes into the run directory)."""
        return {}

    def training_batches(self, split: Split, rng: np.random.Generator, batch_size: int) -> Iterator:
        raise NotImplementedError

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        """[B, n_items + 1] scores; column 0 is padding and is ignored."""
        raise NotImplementedError

    @torch.no_grad()
    def recommend(self, batch: HistoryBatch, k: int, exclude: torch.Tensor | None = None):
        """Top-k internal item ids [B, k] and scores [B, k]. `exclude` is a [B, M] tensor of item ids to leave
        out (0 = none). Excluded items score -inf and come last when fewer than k items remain."""
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


def build_model(cfg: ModelConfig, n_items: int, n_users: int) -> Recommender:
    """A retrieval model of the registered class `cfg.name`, untrained."""
    return registered_class(cfg.name)(cfg, n_items, n_users)


__all__ = ["Capable", "Recommender", "Resources", "build_model", "candidate_scores", "register"]
