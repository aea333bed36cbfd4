"""The ranking task: explicit-feedback impressions split by time, scored by a ranker, AUC / GAUC / LogLoss /
NDCG; and what a loaded ranking run answers (scores of given candidates).

The run directory's layout is in `genrec.runs.store`. Feature tables (genres, years, text vectors, cross
features) come from the data, not from training: a loaded ranking run rebuilds them from its dataset.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import polars as pl
import torch

from genrec.config import DataConfig, RankDataConfig
from genrec.config.tasks import RankingSpec
from genrec.data.feedback import FeedbackData, build_feedback
from genrec.data.schema import Dataset
from genrec.errors import DataError
from genrec.eval.ranking import evaluate_ranker
from genrec.models.ranking import Ranker, RankerConfig
from genrec.registry import get as registered_class
from genrec.runs.retrieval import prepare_dataset
from genrec.runs.task import Tables, Task, item_table
from genrec.runtime import to_device


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
    wants_text = cfg.text_features
    text = text_embeddings(data, cfg.text_encoder, cfg.text_pooling) if wants_text else None
    return registered_class(cfg.name)(cfg, data, text)


class RankingTask(Task):
    """Data: `FeedbackData` (labelled impressions and feature tables); metrics: AUC, GAUC, LogLoss, NDCG@K."""

    spec = RankingSpec
    actions = frozenset({"rank"})

    @cached_property
    def feedback(self) -> FeedbackData:
        """The explicit-feedback data with its feature tables, built once from the data section."""
        self.dataset = feedback_dataset(self.cfg.data)
        return prepare_feedback(self.cfg.data, self.dataset)[0]

    def load_data(self, like=None) -> FeedbackData:
        # The ids come from the dataset itself (build_feedback's order), so a run's own data has its index.
        return self.feedback

    def tables(self, data: FeedbackData) -> Tables:
        seq = data.sequences
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
        meta = {
            "task": self.name,
            "model": self.cfg.model.name,
            "n_items": data.n_items,
            "n_users": data.n_users,
            "dataset": self.cfg.data.dataset,
        }
        return Tables(item_table(seq.item_ids, self.dataset), users, meta)

    def build_model(self, data: FeedbackData) -> Ranker:
        return build_ranker(self.cfg.model, data)

    def validate(self, model, data: FeedbackData, progress) -> float:
        metrics = evaluate_ranker(model, data, data.valid, self.cfg.eval.ks, self.cfg.eval.batch_size)
        return float(metrics[self.cfg.eval.select_metric])

    def evaluate(self, model, data: FeedbackData, progress: bool = True, reward=None) -> dict:
        ks, batch = self.cfg.eval.ks, self.cfg.eval.batch_size
        return {
            split: evaluate_ranker(model, data, getattr(data, split), ks, batch)
            for split in ("valid", "test")
        }

    def data_protocol(self, data: FeedbackData) -> dict:
        return {
            "dataset": self.cfg.data.dataset,
            "dataset_stats": self.dataset.stats(),
            "preprocessing": list(self.dataset.notes),
            "split": data.details,
        }

    def eval_protocol(self, data: FeedbackData, model) -> dict:
        return {
            "candidates": "labelled impressions of each user (explicit feedback), scored by the ranker",
            "metrics": "AUC over all impressions (ties half); GAUC = impression-weighted per-user AUC over users "
            "with both labels; LogLoss of sigmoid(logit); NDCG@K / NDCG of each user's impressions ranked by "
            "score, gain = like, ties pessimistic",
        }

    def own_protocol(self, data: FeedbackData, model) -> dict:
        return {
            "history": f"the last {self.cfg.model.max_len} events (item, rating) before the impression's cut-off",
            "training": "windows of max_len consecutive training events; every label uses only earlier events",
            "parameters": int(sum(p.numel() for p in model.parameters())),
        }

    def load_model(self, run) -> Ranker:
        return build_ranker(self.cfg.model, self.feedback)

    @torch.no_grad()
    def rank(self, run, candidates: np.ndarray, user: int | None, history: np.ndarray, times, live=None):
        """Like-logits [C] of internal candidate ids after a history (a known user's: with its actions and
        cross features; an ad-hoc one: every event counted as liked). `live`: which of a known user's events
        arrived live (default: those after its stored ones)."""
        from genrec.models.ranking.mfalcon import make_batch

        model = run.model
        window = model.cfg.max_len
        actions, cross = None, None
        if user is not None:
            # The stored events' ratings; events that arrived live (served) count as liked.
            stored = np.array(run.users["actions"][user], dtype=np.int64)
            if live is None:
                actions = np.concatenate([stored, np.full(max(0, len(history) - len(stored)), 5)])[
                    -len(history) :
                ]
            else:
                actions = np.full(len(history), 5, dtype=np.int64)
                actions[~live] = stored[len(stored) - int((~live).sum()) :]
            if model.n_cross:
                data = self.feedback
                n = len(candidates)
                end = np.full(n, data.sequences.offsets[user + 1])
                cross = data.cross_features(np.full(n, user), candidates, end)
        elif model.n_cross:
            raise DataError(f"{self.cfg.model.name} reads user x item cross features: give a known user")
        acts = np.full(len(history), 5) if actions is None else actions
        batch = make_batch(
            history[-window:], acts[-window:], candidates, None if times is None else times[-window:],
            user=-1 if user is None else user, cross=cross,
        )  # fmt: skip
        return model.score_candidates(to_device(batch, run.device))[0].float().cpu().numpy()
