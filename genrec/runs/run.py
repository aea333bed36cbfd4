"""`Run`: a finished run directory loaded back, for either task, and the one entry point that trains a run.

`train_run(cfg, out)` trains whatever the config's task is; `load_run(dir)` returns a `Run` whose model is ready
to evaluate, recommend (retrieval), score candidates (ranking) and serve. Raw ids (strings or integers, as the
source gave them) go in and come out; internal indices stay inside.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import torch

from genrec.config import RunConfig, build_config
from genrec.data.ids import IdMap
from genrec.data.provenance import check_same_data, resolve_data_paths
from genrec.errors import ConfigError, DataError
from genrec.io import read_json, read_parquet, read_yaml
from genrec.runs import ranking, retrieval
from genrec.runs.store import MODEL_FILE
from genrec.training import distributed
from genrec.training.checkpoint import load_model_weights

TRAIN = {"retrieval": retrieval.train_retrieval, "ranking": ranking.train_ranking}
# Keys removed from the configs, with the value that meant "off": a stored run that has them off loads as before.
REMOVED_KEYS = {("model", "item_dropout"): 0.0, ("model", "text_dropout"): 0.0, ("train", "ema_decay"): None}


def stored_config(run_dir: Path) -> RunConfig:
    """The run's config.yaml, read by this version of genrec. Raises DataError (one line, with the command to
    retrain) when the run used a setting that no longer exists."""
    raw = read_yaml(run_dir / "config.yaml")
    for (section, key), off in REMOVED_KEYS.items():
        part = raw.get(section) if isinstance(raw, dict) else None
        if isinstance(part, dict) and key in part:
            if part[key] != off:
                raise DataError(
                    f"{run_dir} was trained with {section}.{key}={part[key]}, which genrec no longer has; retrain "
                    f"it without that key"
                )
            del part[key]
    try:
        return build_config(raw)
    except ConfigError as e:
        raise DataError(f"{run_dir}/config.yaml: {e}; retrain the run with this version of genrec") from None


def train_run(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train, select, evaluate and write a complete run directory of the config's task; metrics.json's content.

    Under `torchrun` (WORLD_SIZE > 1) every process trains its share of each global batch
    (`genrec.training.distributed`); rank 0 writes `out` and returns the metrics, the other ranks work in a
    scratch directory that is removed (a resumed run's state reaches them from rank 0) and return only their
    training summary. Paths in the data section are stored absolute (`resolve_data_paths`)."""
    cfg = cfg.model_copy(update={"data": resolve_data_paths(cfg.data)})
    if not distributed.init_from_env().is_main:
        with tempfile.TemporaryDirectory(prefix="genrec-rank") as scratch:
            return TRAIN[cfg.task](cfg, Path(scratch) / "run", resume=False, progress=False)
    return TRAIN[cfg.task](cfg, out, resume=resume, progress=progress)


@dataclass
class Run:
    dir: Path
    cfg: RunConfig
    model: torch.nn.Module
    items: pl.DataFrame
    users: pl.DataFrame
    meta: dict
    _feedback: object = field(default=None, repr=False)

    @property
    def task(self) -> str:
        return self.cfg.task

    @property
    def metrics(self) -> dict:
        """metrics.json of the run (valid / test metrics, protocol, training summary)."""
        path = self.dir / "metrics.json"
        return read_json(path) if path.exists() else {}

    @cached_property
    def item_ids(self) -> IdMap:
        """Raw item id <-> internal index (1..n_items)."""
        return IdMap.from_series(self.items["item_id"], start=1, kind="item")

    @cached_property
    def user_ids(self) -> IdMap:
        """Raw user id <-> internal index (0..n_users-1)."""
        return IdMap.from_series(self.users["user_id"], start=0, kind="user")

    @property
    def feedback(self):
        """Ranking runs: the explicit-feedback data with its feature tables, rebuilt from the run's dataset."""
        if self._feedback is None:
            ds = ranking.feedback_dataset(self.cfg.data)
            check_same_data(self.meta.get("data"), ds, str(self.dir), "retrain it on this data")
            self._feedback, _, _ = ranking.prepare_feedback(self.cfg.data, ds)
        return self._feedback

    # ---- ids ------------------------------------------------------------------------------------------------

    def titles(self, idx) -> list[str]:
        titles = (
            self.items["title"].to_list() if "title" in self.items.columns else [None] * self.items.height
        )
        raw = self.items["item_id"].to_list()
        out = []
        for i in np.asarray(idx).tolist():
            out.append((titles[i - 1] or f"item {raw[i - 1]}") if 0 < i <= len(raw) else "?")
        return out

    def raw_item_ids(self, idx) -> list:
        return self.item_ids.raw(idx)

    def item_index(self, raw_ids: list) -> np.ndarray:
        """Internal ids of raw item ids (strings or integers). Raises DataError naming unknown ids."""
        return self.item_ids.index(raw_ids)

    def user_history(self, raw_user) -> tuple[int, np.ndarray, np.ndarray | None]:
        """(internal user index, history of internal item ids, their timestamps or None)."""
        row = int(self.user_ids.index([raw_user])[0])
        times = None
        if "timestamps" in self.users.columns:
            times = np.array(self.users["timestamps"][row], dtype=np.int64)
        return int(self.users["user"][row]), np.array(self.users["history"][row], dtype=np.int64), times

    # ---- retrieval --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def recommend_internal(
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
        if self.task != "retrieval":
            raise DataError(
                f"{self.dir} is a ranking run: it scores given candidates (rank), it does not retrieve"
            )
        history = np.array(history, dtype=np.int64)
        batch = retrieval.one_history_batch(self.model, history, user, timestamps)
        exclude = torch.from_numpy(history)[None, :] if exclude_seen and len(history) else None
        ids, scores = self.model.recommend(batch, k, exclude)
        keep = torch.isfinite(scores[0])
        return ids[0][keep].numpy(), scores[0][keep].numpy()

    def recommend(self, user=None, history=None, k: int = 10, exclude_seen: bool = True) -> pl.DataFrame:
        """Top-k for a known user (raw id) or a history of raw item ids (oldest first), as a table of raw
        item_id, score and title. Raises DataError for unknown ids, an empty history or a ranking run."""
        user_idx, times, hist = self._history(user, history)
        ids, scores = self.recommend_internal(hist, k, exclude_seen, user_idx, times)
        return pl.DataFrame(
            {
                "item_id": self.raw_item_ids(ids),
                "score": scores.astype(np.float64),
                "title": self.titles(ids),
            },
            strict=False,
        )

    # ---- ranking ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def rank(self, candidates: list, user=None, history=None) -> pl.DataFrame:
        """Scores of `candidates` (raw item ids) for a known user or a history of raw item ids, in the given
        order: like-logits for a ranking run, retrieval scores for a retrieval run."""
        cand = self.item_index(candidates)
        if not len(cand):
            raise DataError("candidates is empty: give at least one item id")
        user_idx, times, hist = self._history(user, history)
        if self.task == "ranking":
            scores = self.rank_internal(cand, user_idx, hist, times)
        else:
            batch = retrieval.one_history_batch(self.model, hist, user_idx, times)
            scores = self.model.score(batch)[0, torch.from_numpy(np.array(cand))].float().numpy()
        return pl.DataFrame({"item_id": list(candidates), "score": scores.astype(np.float64)}, strict=False)

    def rank_internal(
        self, cand: np.ndarray, user: int | None, history: np.ndarray, times, live: np.ndarray | None = None
    ) -> np.ndarray:
        """Like-logits [C] of internal candidate ids after a history (a known user's: with its actions and
        cross features; an ad-hoc one: every event counted as liked). `live`: [len(history)] bool, the events
        that arrived live (served) among a known user's newest stored ones; default: those after them."""
        from genrec.models.ranking.mfalcon import make_batch

        model = self.model
        window = model.cfg.max_len
        actions, cross = None, None
        if user is not None:
            # The stored events' ratings; events that arrived live count as liked.
            stored = np.array(self.users["actions"][user], dtype=np.int64)
            if live is None:
                actions = np.concatenate([stored, np.full(max(0, len(history) - len(stored)), 5)])[
                    -len(history) :
                ]
            else:
                actions = np.full(len(history), 5, dtype=np.int64)
                actions[~live] = stored[len(stored) - int((~live).sum()) :]
            if model.n_cross:
                data = self.feedback
                n = len(cand)
                end = np.full(n, data.seq.offsets[user + 1])
                cross = data.cross_features(np.full(n, user), cand, end)
        elif model.n_cross:
            raise DataError(f"{self.cfg.model.name} reads user x item cross features: give a known user")
        acts = np.full(len(history), 5) if actions is None else actions
        batch = make_batch(
            history[-window:], acts[-window:], cand, None if times is None else times[-window:],
            user=-1 if user is None else user, cross=cross,
        )  # fmt: skip
        return model.score_candidates(batch)[0].float().numpy()

    def _history(self, user, history) -> tuple[int | None, np.ndarray | None, np.ndarray]:
        if (user is None) == (history is None):
            raise DataError("give exactly one of user or history")
        if user is not None:
            user_idx, hist, times = self.user_history(user)
            return user_idx, times, hist
        hist = self.item_index(list(history))
        if not len(hist):
            raise DataError("history is empty: give at least one item id")
        return None, None, hist

    def evaluate(self, dataset: str | None = None, progress: bool = False) -> dict:
        """Metrics of the run's model on its dataset (or another one), with the protocol."""
        return evaluate_run(self, dataset, progress)


def load_run(run_dir: Path) -> Run:
    """A finished run directory of either task. Raises DataError with what is missing or how to retrain."""
    run_dir = Path(run_dir)
    needed = ["config.yaml", "meta.json", "items.parquet", MODEL_FILE]
    missing = [n for n in needed if not (run_dir / n).exists()]
    if missing:
        raise DataError(f"{run_dir} is not a finished genrec run (missing {', '.join(missing)})")
    cfg = stored_config(run_dir)
    meta = read_json(run_dir / "meta.json")
    items = read_parquet(run_dir / "items.parquet")
    users_file = run_dir / "users.parquet"
    if not users_file.exists():
        raise DataError(
            f"{run_dir} was written by an older genrec without users.parquet; retrain it with "
            f"`genrec train {cfg.model.name} --dataset {cfg.data.dataset}`"
        )
    users = read_parquet(users_file)
    if cfg.task == "ranking":
        run = Run(run_dir, cfg, None, items, users, meta)
        model = ranking.build_ranker(cfg.model, run.feedback)
        model.eval_batch_size = cfg.eval.batch_size
    else:
        from genrec.models import build_model

        model = build_model(cfg.model, meta["n_items"], meta["n_users"])
        run = Run(run_dir, cfg, model, items, users, meta)
    load_model_weights(model, run_dir / MODEL_FILE)
    run.model = model.eval()
    return run


def evaluate_run(run: Run, dataset: str | None = None, progress: bool = True, reward=None) -> dict:
    """Re-evaluate a run (either task) on its dataset or another SPEC. `reward` (retrieval): a reward model
    (`genrec.alignment.reward.RewardModel`) for the `reward@10` list metric."""
    if run.task == "ranking":
        return ranking.evaluate_ranking(run, dataset, progress)
    return retrieval.evaluate_retrieval(run, dataset, progress, reward)
