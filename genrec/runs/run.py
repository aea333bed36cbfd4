"""`Run`: a finished run directory loaded back, for every task.

`load_run(dir)` returns a `Run` whose model is ready to evaluate, recommend, score candidates and serve, as far
as its task allows (`run.task.can("recommend")`); `Run` asks its task object (`genrec.runs.task.Task`), never
the task's name. Raw ids (strings or integers, as the source gave them) go in and come out; internal indices
stay inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import torch

from genrec.config import RunConfig, build_config, migrate
from genrec.data.ids import IdMap
from genrec.data.provenance import check_same_data
from genrec.errors import ConfigError, DataError
from genrec.io import read_json, read_parquet, read_yaml
from genrec.runs.retrieval import one_history_batch
from genrec.runs.store import MODEL_FILE
from genrec.runs.task import Task, make_task
from genrec.runtime import module_device, resolve_device, to_device
from genrec.training.checkpoint import load_model_weights


def stored_config(run_dir: Path) -> RunConfig:
    """The run's config.yaml, read by this version of genrec (keys that moved since are migrated:
    `genrec.config.migrate`). Raises DataError (one line, with how to retrain) when the run used a setting that
    no longer exists."""
    raw = read_yaml(run_dir / "config.yaml")
    try:
        return build_config(migrate(raw))
    except ConfigError as e:
        raise DataError(f"{run_dir}/config.yaml: {e}; retrain the run with this version of genrec") from None


@dataclass
class Run:
    dir: Path
    cfg: RunConfig
    model: torch.nn.Module
    items: pl.DataFrame
    users: pl.DataFrame
    meta: dict
    task: Task

    @property
    def device(self) -> torch.device:
        """Where the model is (`load_run(..., device=...)`); inputs go there, answers come back to the host."""
        return module_device(self.model)

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
        return self.task.feedback

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
        if not self.task.can("recommend"):
            raise DataError(
                f"{self.dir} is a {self.task.name} run: it scores given candidates (rank), it does not retrieve"
            )
        history = np.array(history, dtype=np.int64)
        batch = one_history_batch(self.model, history, user, timestamps)
        exclude = torch.from_numpy(history)[None, :] if exclude_seen and len(history) else None
        batch, exclude = to_device((batch, exclude), self.device)
        ids, scores = self.model.recommend(batch, k, exclude)
        ids, scores = ids[0].cpu(), scores[0].float().cpu()
        keep = torch.isfinite(scores)
        return ids[keep].numpy(), scores[keep].numpy()

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

    # ---- candidates ---------------------------------------------------------------------------------------------

    def rank(self, candidates: list, user=None, history=None) -> pl.DataFrame:
        """Scores of `candidates` (raw item ids) for a known user or a history of raw item ids, in the given
        order: like-logits for a ranking run, retrieval scores for a retrieval run."""
        cand = self.item_index(candidates)
        if not len(cand):
            raise DataError("candidates is empty: give at least one item id")
        user_idx, times, hist = self._history(user, history)
        scores = self.rank_internal(cand, user_idx, hist, times)
        return pl.DataFrame({"item_id": list(candidates), "score": scores.astype(np.float64)}, strict=False)

    def rank_internal(
        self, cand: np.ndarray, user: int | None, history: np.ndarray, times, live: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores [C] of internal candidate ids after a history of internal ids (`Task.rank`). `live`:
        [len(history)] bool, the events that arrived live (served) among a known user's newest stored ones;
        default: those after them."""
        return self.task.rank(self, cand, user, history, times, live)

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
        from genrec.runs.pipeline import evaluate_run

        return evaluate_run(self, dataset, progress)


def load_run(run_dir: Path, device: str = "cpu") -> Run:
    """A finished run directory of any task, its model on `device` (auto, cpu, cuda, cuda:N or mps: weights are
    stored device-independent). Raises DataError with what is missing or how to retrain, ConfigError (one line)
    for a device that is not available."""
    run_dir = Path(run_dir)
    where = resolve_device(device, "--device")
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
    run = Run(run_dir, cfg, None, items, users, meta, make_task(cfg))
    model = run.task.load_model(run)
    if (
        run.task.dataset is not None
    ):  # a task that reads its data to load (ranking): it must be the run's data
        check_same_data(meta.get("data"), run.task.dataset, str(run_dir), "retrain it on this data")
    load_model_weights(model, run_dir / MODEL_FILE)
    run.model = model.to(where).eval()
    return run
