"""The retrieval task: a leave-one-out or temporal split, every held-out next item ranked against the full
catalogue (both history conventions), and what a loaded retrieval run answers (top-K, candidate scores).

The run directory's layout is in `genrec.runs.store`; the pipeline that drives this task in `genrec.runs.pipeline`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from genrec.config import DataConfig
from genrec.config.tasks import RetrievalSpec
from genrec.data import filters, quality
from genrec.data.batching import history_batch
from genrec.data.registry import load_dataset
from genrec.data.schema import Dataset
from genrec.data.split import Split, leave_one_out, temporal
from genrec.errors import ConfigError, DataError
from genrec.eval.evaluator import evaluate_split, validation_score
from genrec.eval.evaluator import protocol as evaluator_protocol
from genrec.eval.likelihood import prefix_log_likelihood
from genrec.eval.lists import PROTOCOL as LIST_PROTOCOL
from genrec.eval.lists import ListContext, genre_sets, popular_items
from genrec.models import build_model
from genrec.models.base import Resources
from genrec.progress import make_progress
from genrec.runs.task import Tables, Task, item_table
from genrec.runtime import to_device
from genrec.training.trainer import FitContext


def prepare_dataset(cfg: DataConfig) -> Dataset:
    ds = load_dataset(
        cfg.dataset, cfg.data_dir, cfg.columns or None, cfg.items_path, cfg.download, cfg.unreadable_ratings
    )
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
        ds = quality.clean(ds, cfg.clean, scores, cfg.split, cfg.valid_quantile, cfg.test_quantile)
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
        split = temporal(seq, cfg.valid_quantile, cfg.test_quantile, ds.cutoffs)
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
    weight = run.model.item_vectors().float().cpu().numpy()
    index = {raw: i for i, raw in enumerate(run.items["item_id"].to_list(), start=1)}
    out = np.zeros((len(item_ids), weight.shape[1]), dtype=np.float32)
    for row, raw in enumerate(np.asarray(item_ids).tolist()):
        if raw in index:
            out[row] = weight[index[raw]]
    return out


class RetrievalTask(Task):
    """Data: a `Split` of the interactions; metrics: full-catalogue recall / NDCG / MRR / coverage in both
    history conventions, with list metrics (and session recall on a temporal split when asked)."""

    spec = RetrievalSpec
    actions = frozenset({"recommend", "rank"})

    def read_dataset(self) -> Dataset:
        """The interactions and item table the data section names, filtered and cleaned as it says."""
        return prepare_dataset(self.cfg.data)

    def load_data(self, like=None) -> Split:
        self.dataset = self.read_dataset()
        if like is None:
            return make_split(self.dataset, self.cfg.data)
        return make_split(
            self.dataset, self.cfg.data, like.items["item_id"].to_numpy(), like.users["user_id"].to_numpy()
        )

    def tables(self, split: Split) -> Tables:
        seq = split.sequences
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
        meta = {
            "task": self.name,
            "model": self.cfg.model.name,
            "n_items": seq.n_items,
            "n_users": seq.n_users,
            "dataset": self.cfg.data.dataset,
            "dataset_stats": self.dataset.stats(),
            "preprocessing": self.dataset.notes,
        }
        return Tables(item_table(seq.item_ids, self.dataset), users, meta)

    def build_model(self, split: Split):
        return build_model(self.cfg.model, split.n_items, split.n_users)

    def resources(self, split: Split, tables: Tables) -> Resources:
        # The item table (titles, categories) is what semantic-ID and text models build their item side from.
        return Resources(items=tables.items, collab_embeddings=collab_embeddings)

    def prepare(self, model, split: Split, ctx: FitContext, init=None) -> dict:
        return {"n_train_users": len(split.train), **super().prepare(model, split, ctx, init)}

    def train_items(self, split: Split) -> np.ndarray:
        return split.train.items

    def validate(self, model, split: Split, progress) -> float:
        return validation_score(model, split.valid, split.n_items, self.cfg.eval, progress)

    def evaluate(self, model, split: Split, progress: bool = True, reward=None) -> dict:
        """`reward`: an optional reward model (`genrec.alignment.reward.RewardModel`, bound here to the split's
        sequences) for the `reward@K` list metric (`genrec.eval.lists`)."""
        items = item_table(split.sequences.item_ids, self.dataset)
        context = list_context(split, items, None if reward is None else reward.bind(split.sequences))
        with make_progress(progress) as bar:
            return evaluate_split(model, split, self.cfg.eval, progress=bar, context=context)

    def data_protocol(self, split: Split) -> dict:
        return {
            "dataset": self.cfg.data.dataset,
            "dataset_stats": self.dataset.stats(),
            "preprocessing": self.dataset.notes,
            "split": split.details,
        }

    def eval_protocol(self, split: Split, model) -> dict:
        return {**evaluator_protocol(split, self.cfg.eval, model), "list_metrics": LIST_PROTOCOL}

    def checkpoint_selection(self, model) -> str:
        return model.checkpoint_selection()

    def load_model(self, run):
        return build_model(self.cfg.model, run.meta["n_items"], run.meta["n_users"])

    @torch.no_grad()
    def rank(self, run, candidates: np.ndarray, user: int | None, history: np.ndarray, times, live=None):
        batch = to_device(one_history_batch(run.model, history, user, times), run.device)
        scores = run.model.score(batch)[0].float().cpu()
        return scores[torch.from_numpy(np.array(candidates))].numpy()


def list_context(split: Split, items: pl.DataFrame, reward=None) -> ListContext:
    """What the list-level metrics (`genrec.eval.lists`) read: the items' categories (when any item has one),
    the most popular 1% of items by training interactions, and an optional reward model."""
    categories = items["categories"].to_list() if "categories" in items.columns else []
    genres = genre_sets(categories) if any(categories) else None
    return ListContext(genres, popular_items(split.train.items, split.n_items), reward)


def fit_retrieval(model, split: Split, ctx: FitContext) -> dict:
    """Fit a retrieval model on `split` outside a run directory's pipeline (the pipeline's `fit`, with the
    retrieval task of `ctx`'s sections): checkpoints are selected on `ctx.eval.select_metric` over the
    validation users (full catalogue, history excluded unless `eval.exclude_history` is off)."""
    from genrec.config import RunConfig
    from genrec.runs.pipeline import fit

    cfg = RunConfig.model_construct(model=model.cfg, train=ctx.train, eval=ctx.eval, task="retrieval")
    return fit(RetrievalTask(cfg), model, split, ctx)


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
