"""The serving engine: one run's model and catalogue, users' live histories with cached state, top-K and ranking.

The engine asks the model what it can do (its declared capabilities, `genrec.models.base`), never its class.

State per user:
- the history: the run's stored history (`users.parquet`) until an event arrives, then a live copy that events
  append to (items are validated before anything changes, so a bad event leaves the history as it was);
- the retrieval query for the current history (models with `item_vectors`), and for models with
  `incremental_state` (HSTU) the per-layer keys/values, so an event costs one new position instead of a
  re-encode. Other sequence models (SASRec:
  absolute positions shift when an item is appended) recompute their query once per event. These states live in
  an LRU of `cache_users` users; an evicted one is rebuilt from the history when needed.

The query of a user without events is computed exactly as `Run.recommend` does it, so the server and
`genrec recommend` return the same ids and scores. `/rank` scores given candidates: a ranking run's ranker
(`score_candidates`, through M-FALCON for the generative rankers) or a retrieval model's scores.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from genrec.data.batching import HistoryBatch
from genrec.errors import ConfigError, DataError
from genrec.inference.retrieval import (
    history_offset,
    item_matrix,
    make_backend,
    search_with_history_offset,
)
from genrec.runs import Run
from genrec.runs.retrieval import one_history_batch

MAX_K = 1000
MAX_LIVE_HISTORY = 10_000  # a live history keeps its newest items only (events beyond that drop the oldest)


@dataclass
class UserState:
    query: torch.Tensor | None
    cache: object = None  # the model's incremental state (incremental_state capability)


@dataclass
class Recommendation:
    ids: np.ndarray
    scores: np.ndarray
    history_length: int
    history_used: int  # items the model read (its window); the rest only count for exclude_seen
    available: int = 0  # catalogue items the request allows (all, or those outside the history)


class Engine:
    def __init__(self, run: Run, backend: str = "exact", cache_users: int = 10_000) -> None:
        self.run = run
        self.model = run.model
        self.n_items = int(run.meta["n_items"])
        self.window = self.model.max_history
        self.items = item_matrix(self.model)
        self.offset = history_offset(self.model)  # weights are fixed while serving: read once
        if self.items is None and backend != "exact":
            raise ConfigError(
                f"backend {backend!r} needs an embedding model; {run.cfg.model.name} is not one"
            )
        self.backend = make_backend(backend, self.items) if self.items is not None else None
        self.backend_name = backend
        self.incremental = self.model.can("incremental_state")
        self.ranking = not run.task.can("recommend")
        self.has_time = "timestamps" in run.users.columns
        self.max_k = min(MAX_K, self.n_items)
        self.cache_users = cache_users
        self._rows = {u: i for i, u in enumerate(run.users["user_id"].to_list())}
        self._live: dict[int, tuple[np.ndarray, np.ndarray | None, int | None]] = {}
        self._states: OrderedDict[int, UserState] = OrderedDict()
        self._lock = threading.RLock()

    # ---- histories -------------------------------------------------------------------------------------------

    def user_key(self, raw_user):
        """A user id as the caller sent it (text or integer) in the run's id type; one that cannot be of that type
        is kept as sent (it can only be a user created by events, unknown to the run)."""
        try:
            return self.run.user_ids.coerce(raw_user)
        except DataError:
            return raw_user

    def knows_user(self, raw_user) -> bool:
        raw_user = self.user_key(raw_user)
        return raw_user in self._live or raw_user in self._rows

    def history(self, raw_user) -> tuple[np.ndarray, np.ndarray | None, int | None]:
        """(internal item ids oldest first, timestamps or None, internal user index or None)."""
        raw_user = self.user_key(raw_user)
        with self._lock:
            if raw_user in self._live:
                return self._live[raw_user]
            row = self._rows.get(raw_user)
            if row is None:
                raise DataError(f"unknown user id {raw_user} (this run knows {len(self._rows)} users)")
            users = self.run.users
            times = np.array(users["timestamps"][row], dtype=np.int64) if self.has_time else None
            return np.array(users["history"][row], dtype=np.int64), times, int(users["user"][row])

    def users(self, limit: int) -> list[int]:
        with self._lock:
            new = [u for u in self._live if u not in self._rows]
        return (new + self.run.users["user_id"].head(limit).to_list())[:limit]

    # ---- scoring ---------------------------------------------------------------------------------------------

    def window_of(self, values: np.ndarray) -> np.ndarray:
        """The newest `window` entries of a history (all of it for models without a window)."""
        return values[-self.window :] if self.window else values

    def batch(self, items: np.ndarray, ts: np.ndarray | None, user: int | None) -> HistoryBatch:
        """The batch the evaluator and `Run.recommend` build for one history (its newest `window` items)."""
        return one_history_batch(self.model, items, user, ts)

    def check_k(self, k: int) -> None:
        if not 1 <= k <= self.max_k:
            raise DataError(f"k={k} is out of range: ask for 1 to {self.max_k} items")

    def _topk(self, items, ts, user, query, k, exclude_seen) -> Recommendation:
        if self.ranking:
            raise DataError(
                "this is a ranking run: it scores given candidates (POST /rank), it does not retrieve"
            )
        exclude = items if exclude_seen else None
        if self.backend is None:  # popularity / itemknn / TIGER: the model's own scoring or generation
            ids, scores = self.run.recommend_internal(items, k, exclude_seen, user, ts)
        else:
            if query is None:
                query = self._query(items, ts, user)
            if self.offset is None:
                ids, scores = self.backend.search(query, k, exclude)
            else:
                ids, scores = search_with_history_offset(
                    self.backend, self.items, query, k, exclude, self.window_of(items), self.offset
                )
        used = len(self.window_of(items))
        available = self.n_items - (len(np.unique(items[items > 0])) if exclude_seen else 0)
        return Recommendation(ids, scores, len(items), used, available)

    @torch.no_grad()
    def _query(self, items, ts, user) -> torch.Tensor:
        return self.model.query_vectors(self.batch(items, ts, user))[0]

    def recommend_user(self, raw_user, k: int, exclude_seen: bool = True) -> Recommendation:
        self.check_k(k)
        raw_user = self.user_key(raw_user)
        with self._lock:
            items, ts, user = self.history(raw_user)
            state = self._state(raw_user)
            if state is None and self.backend is not None:
                state = self._remember(raw_user, UserState(self._query(items, ts, user)))
            return self._topk(items, ts, user, None if state is None else state.query, k, exclude_seen)

    def recommend_history(
        self, raw_items: list[int], timestamps: list[int] | None, k: int, exclude_seen: bool = True
    ) -> Recommendation:
        self.check_k(k)
        items, ts = self._validate(raw_items, timestamps)
        if not len(items):
            raise DataError("history is empty: give at least one item id")
        # No user state is read or written: concurrent requests may compute in parallel.
        return self._topk(items, ts, None, None, k, exclude_seen)

    @torch.no_grad()
    def rank(
        self,
        candidates: list[int],
        raw_user: int | None = None,
        raw_items: list[int] | None = None,
        timestamps: list[int] | None = None,
    ) -> np.ndarray:
        """Scores of `candidates` (raw ids) in the given order for a user or an ad-hoc history."""
        cand = self.run.item_index(candidates) if candidates else np.zeros(0, dtype=np.int64)
        if not len(cand):
            raise DataError("candidates is empty: give at least one item id")
        with self._lock:
            if raw_user is not None:
                raw_user = self.user_key(raw_user)
                items, ts, user = self.history(raw_user)
                state = self._state(raw_user)
            else:
                items, ts = self._validate(raw_items or [], timestamps)
                if not len(items):
                    raise DataError("history is empty: give at least one item id")
                user, state = None, None
            if self.model.can("score_candidates"):
                return self.run.rank_internal(cand, user if raw_user is not None else None, items, ts)
            batch = self.batch(items, ts, user)
            c = torch.from_numpy(np.array(cand))  # a writable copy: torch shares the memory
            if self.items is not None:
                query = state.query if state is not None else self.model.query_vectors(batch)[0]
                scores = self.items[c] @ query
                if self.offset is not None:
                    scores = scores + self.offset * torch.isin(c, batch.items[0]).float()
                return scores.numpy()
            if not self.model.can("score"):
                raise DataError(
                    f"{self.run.cfg.model.name} generates a ranked list and cannot score candidates"
                )
            return self.model.score(batch)[0, c].float().numpy()

    # ---- events ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def add_events(self, raw_user: int, raw_items: list[int], timestamps: list[int] | None = None) -> dict:
        """Append interactions to a user's live history (a new user id starts an empty one).

        Everything is validated and computed before the history is replaced, so a bad event changes nothing.
        """
        new_items, new_ts = self._validate(raw_items, timestamps)
        if not len(new_items):
            raise DataError("items is empty: give at least one item id")
        raw_user = self.user_key(raw_user)
        with self._lock:
            new_user = not self.knows_user(raw_user)
            if new_user:
                empty = np.zeros(0, np.int64)
                items, ts, user = empty, (empty if self.has_time else None), None
            else:
                items, ts, user = self.history(raw_user)
            # The model reads time gaps: an event without a time happened now.
            if ts is not None and new_ts is None:
                new_ts = np.full(len(new_items), int(time.time()), dtype=np.int64)
            full = np.concatenate([items, new_items])[-MAX_LIVE_HISTORY:]
            full_ts = None if ts is None else np.concatenate([ts, new_ts])[-MAX_LIVE_HISTORY:]
            if ts is None:
                new_ts = None
            update, state = "recompute", None
            if self.incremental:
                old = self._state(raw_user)
                if old is not None and old.cache is not None:
                    cache, inc = self.model.extend_state(
                        old.cache,
                        torch.from_numpy(new_items),
                        None if new_ts is None else torch.from_numpy(new_ts),
                        torch.from_numpy(full),
                        None if full_ts is None else torch.from_numpy(full_ts),
                    )
                    update = "incremental" if inc else "recompute (history longer than the model window)"
                else:
                    cache = self.model.init_state(
                        torch.from_numpy(full),
                        None if full_ts is None else torch.from_numpy(full_ts),
                    )
                state = UserState(self.model.state_query(cache), cache)
            elif self.backend is not None:
                state = UserState(self._query(full, full_ts, user))
            self._live[raw_user] = (full, full_ts, user)
            if state is not None:
                self._remember(raw_user, state)
            return {
                "user_id": raw_user,
                "added": len(new_items),
                "history_length": len(full),
                "new_user": new_user,
                "update": update,
            }

    # ---- helpers ---------------------------------------------------------------------------------------------

    def _validate(self, raw_items: list[int], timestamps: list[int] | None):
        items = self.run.item_index(raw_items) if raw_items else np.zeros(0, dtype=np.int64)
        if timestamps is None:
            return items.astype(np.int64), None
        if len(timestamps) != len(raw_items):
            raise DataError(f"timestamps has {len(timestamps)} values for {len(raw_items)} items")
        return items.astype(np.int64), np.asarray(timestamps, dtype=np.int64)

    def _state(self, raw_user: int) -> UserState | None:
        state = self._states.get(raw_user)
        if state is not None:
            self._states.move_to_end(raw_user)
        return state

    def _remember(self, raw_user: int, state: UserState) -> UserState:
        self._states[raw_user] = state
        self._states.move_to_end(raw_user)
        while len(self._states) > self.cache_users:
            self._states.popitem(last=False)
        return state
