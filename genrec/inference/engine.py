"""The serving engine: one run's model and catalogue, users' live histories with cached state, top-K and ranking.

The engine asks the model what it can do (its declared capabilities, `genrec.models.base`), never its class.

State per user:
- the history: the run's stored history (`users.parquet`) merged with the user's live events, in time order
  ((time, position) as the data loader orders events: a late event goes to its place in time, not to the end);
  at most `MAX_LIVE_HISTORY` newest items. Every live event is first committed to the `EventStore`
  (`genrec.inference.state`, SQLite), then applied in memory: a bad event changes nothing, and an acknowledged one
  survives a restart;
- the retrieval query for the current history (models with `item_vectors`), and for models with
  `incremental_state` (HSTU) the per-layer keys/values, so an event appended after the newest one costs one new
  position instead of a re-encode (a late event re-encodes the window). Other sequence models (SASRec: absolute
  positions shift when an item is appended) recompute their query once per event.
Memory holds these for at most `max_live_users` users (least recently used leave first); a user who left is
reloaded from the run and the store on the next request and its state recomputed from the history, which gives
the same answers.

The query of a user without events is computed exactly as `Run.recommend` does it, so the server and
`genrec recommend` return the same ids and scores. `/rank` scores given candidates: a ranking run's ranker
(`score_candidates`, through M-FALCON for the generative rankers) or a retrieval model's scores.

The engine computes on the device of the run's model (`load_run(..., device=...)`, `genrec serve --device`):
each request's tensors go there and its answer comes back to the host.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, fields, is_dataclass, replace

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
from genrec.inference.state import EventStore, newest_time, time_order
from genrec.runs import Run
from genrec.runs.retrieval import one_history_batch
from genrec.runtime import to_device

MAX_K = 1000
MAX_LIVE_HISTORY = 10_000  # a live history keeps its newest items only (events beyond that drop the oldest)
MAX_LIVE_USERS = 2_000  # users whose history and state stay in memory (least recently used leave first)
# Bytes of Python objects around one user's arrays (dict entry, dataclasses, array headers).
_USER_OVERHEAD = 1024


@dataclass
class UserState:
    query: torch.Tensor | None
    cache: object = None  # the model's incremental state (incremental_state capability)


@dataclass
class LiveUser:
    items: np.ndarray  # internal item ids in time order, oldest first
    ts: np.ndarray | None  # their unix seconds (None: the run's data has no times)
    user: int | None  # the run's user index; None for a user created by events
    state: UserState | None = None
    live: np.ndarray | None = None  # ranking runs: which events arrived live (the others have stored ratings)


@dataclass
class Recommendation:
    ids: np.ndarray
    scores: np.ndarray
    history_length: int
    history_used: int  # items the model read (its window); the rest only count for exclude_seen
    available: int = 0  # catalogue items the request allows (all, or those outside the history)


def _tensor(values: np.ndarray | None) -> torch.Tensor | None:
    return None if values is None else torch.from_numpy(values)


def tensor_bytes(value) -> int:
    """Bytes of memory the tensors and arrays inside a (nested) dataclass, list or tuple keep alive (a tensor's
    whole storage, which may be larger than the tensor)."""
    if isinstance(value, torch.Tensor):
        return value.untyped_storage().nbytes()
    if isinstance(value, np.ndarray):
        return value.nbytes
    if is_dataclass(value):
        return sum(tensor_bytes(getattr(value, f.name)) for f in fields(value))
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(v) for v in value)
    return 0


def compact(value):
    """The same (nested) state with every tensor in a storage of its own size. A cached tensor may be a view
    into a larger one (HSTU's keys and values are slices of one fused projection, four times their size), which
    would keep all of it alive for as long as the user stays in memory."""
    if isinstance(value, torch.Tensor):
        return (
            value.clone()
            if value.untyped_storage().nbytes() > value.nelement() * value.element_size()
            else value
        )
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: compact(getattr(value, f.name)) for f in fields(value) if f.init})
    if isinstance(value, list | tuple):
        return type(value)(compact(v) for v in value)
    return value


class Engine:
    """Serves one run. `store` keeps live events (default: an in-memory SQLite database, which keeps nothing
    past the process); `max_live_users` bounds the users held in memory."""

    def __init__(
        self,
        run: Run,
        backend: str = "exact",
        max_live_users: int = MAX_LIVE_USERS,
        store: EventStore | None = None,
    ) -> None:
        if max_live_users < 1:
            raise ConfigError(f"max_live_users must be at least 1, got {max_live_users}")
        self.run = run
        self.model = run.model
        self.device = run.device
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
        self.has_actions = "actions" in run.users.columns  # ranking runs read each stored event's rating
        self.max_k = min(MAX_K, self.n_items)
        self.max_live_users = max_live_users
        self.store = store if store is not None else EventStore(":memory:")
        self._check_store()
        self._rows = {u: i for i, u in enumerate(run.users["user_id"].to_list())}
        self._live: OrderedDict[object, LiveUser] = OrderedDict()
        self._lock = threading.RLock()
        self.user_bytes = self._user_bytes()

    def _check_store(self) -> None:
        """Every item the store's events name must be in this run's catalogue (else it was written for
        another one, and its users' histories would silently lose items)."""
        items = self.store.items()
        known = self.run.item_ids.contains(items) if items else np.ones(0, dtype=bool)
        if not known.all():
            bad = [i for i, k in zip(items, known.tolist()) if not k]
            raise ConfigError(
                f"--state {self.store.path}: its events name {len(bad)} item ids this run's catalogue lacks "
                f"(e.g. {bad[0]!r}); it was written for another catalogue: point --state at another file"
            )

    def _user_bytes(self) -> int:
        """Most bytes one user in memory can take: a full live history (items and times) and the model state
        of a full window (a query vector; for incremental models also their keys/values)."""
        history = MAX_LIVE_HISTORY * 8 * (2 if self.has_time else 1)
        state = 0
        if self.items is not None:
            state += self.items.shape[1] * self.items.element_size()
        if self.incremental and self.window:
            with torch.no_grad():
                ones = torch.ones(self.window, dtype=torch.int64, device=self.device)
                state += tensor_bytes(compact(self.model.init_state(ones, ones if self.has_time else None)))
        return history + state + _USER_OVERHEAD

    # ---- histories -------------------------------------------------------------------------------------------

    def user_key(self, raw_user):
        """A user id as the caller sent it (text or integer) in the run's id type; one that cannot be of that type
        is kept as sent (it can only be a user created by events, unknown to the run)."""
        try:
            return self.run.user_ids.coerce(raw_user)
        except DataError:
            return raw_user

    def knows_user(self, raw_user) -> bool:
        key = self.user_key(raw_user)
        return key in self._live or key in self._rows or self.store.has_user(str(key))

    def history(self, raw_user) -> tuple[np.ndarray, np.ndarray | None, int | None]:
        """(internal item ids in time order, oldest first; their timestamps or None; internal user index or
        None). Raises DataError (unknown user id) for a user neither the run nor the events know."""
        live = self._user(self.user_key(raw_user))
        return live.items, live.ts, live.user

    def live_users(self) -> int:
        """Users whose history and state are in memory now (at most `max_live_users`)."""
        return len(self._live)

    def users(self, limit: int) -> list:
        """Up to `limit` user ids: those with live events (most recently active first), then the run's."""
        seen: set[str] = set()
        out = []
        for u in [*self.store.recent_users(limit), *self.run.users["user_id"].head(limit).to_list()]:
            if str(u) not in seen:
                seen.add(str(u))
                out.append(u)
        return out[:limit]

    def _user(self, key) -> LiveUser:
        with self._lock:
            live = self._live.get(key)
            if live is not None:
                self._live.move_to_end(key)
                return live
            live = self._load(key)
            if live is None:
                raise DataError(f"unknown user id {key} (this run knows {len(self._rows)} users)")
            return self._keep(key, live)

    def _load(self, key) -> LiveUser | None:
        """A user's history from the run's stored history and the store's events, in time order."""
        row = self._rows.get(key)
        raw_items, live_ts = self.store.events(str(key), MAX_LIVE_HISTORY, by_time=self.has_time)
        if row is None and not raw_items:
            return None
        users = self.run.users
        if row is None:
            items, ts, user = np.zeros(0, np.int64), (np.zeros(0, np.int64) if self.has_time else None), None
        else:
            items = np.array(users["history"][row], dtype=np.int64)
            ts = np.array(users["timestamps"][row], dtype=np.int64) if self.has_time else None
            user = int(users["user"][row])
        if not raw_items:
            return LiveUser(items, ts, user, live=np.zeros(len(items), bool) if self.has_actions else None)
        live = np.arange(len(items) + len(raw_items)) >= len(items)
        items = np.concatenate([items, self.run.item_index(raw_items)])
        if ts is not None:
            ts = np.concatenate([ts, live_ts])
            order = time_order(ts)
            items, ts, live = items[order], ts[order], live[order]
        return self._capped(LiveUser(items, ts, user, live=live if self.has_actions else None))

    @staticmethod
    def _capped(live: LiveUser) -> LiveUser:
        """The newest MAX_LIVE_HISTORY events of a history."""
        cut = slice(-MAX_LIVE_HISTORY, None)
        return LiveUser(
            live.items[cut],
            None if live.ts is None else live.ts[cut],
            live.user,
            live.state,
            None if live.live is None else live.live[cut],
        )

    def _keep(self, key, live: LiveUser) -> LiveUser:
        self._live[key] = live
        self._live.move_to_end(key)
        while len(self._live) > self.max_live_users:
            self._live.popitem(last=False)
        return live

    # ---- scoring ---------------------------------------------------------------------------------------------

    def window_of(self, values: np.ndarray) -> np.ndarray:
        """The newest `window` entries of a history (all of it for models without a window)."""
        return values[-self.window :] if self.window else values

    def batch(self, items: np.ndarray, ts: np.ndarray | None, user: int | None) -> HistoryBatch:
        """The batch the evaluator and `Run.recommend` build for one history (its newest `window` items)."""
        return to_device(one_history_batch(self.model, items, user, ts), self.device)

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
        with self._lock:
            live = self._user(self.user_key(raw_user))
            if live.state is None and self.backend is not None:
                live.state = UserState(self._query(live.items, live.ts, live.user))
            query = None if live.state is None else live.state.query
            return self._topk(live.items, live.ts, live.user, query, k, exclude_seen)

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
                live = self._user(self.user_key(raw_user))
                items, ts, user, state, arrived = live.items, live.ts, live.user, live.state, live.live
            else:
                items, ts = self._validate(raw_items or [], timestamps)
                if not len(items):
                    raise DataError("history is empty: give at least one item id")
                user, state, arrived = None, None, None
            if self.model.can("score_candidates"):
                return self.run.rank_internal(cand, user, items, ts, arrived)
            batch = self.batch(items, ts, user)
            # A copy of the ids: torch would share the numpy array's memory.
            c = torch.from_numpy(np.array(cand)).to(self.device)
            if self.items is not None:
                query = state.query if state is not None else self.model.query_vectors(batch)[0]
                scores = self.items[c] @ query
                if self.offset is not None:
                    scores = scores + self.offset * torch.isin(c, batch.items[0]).float()
                return scores.cpu().numpy()
            if not self.model.can("score"):
                raise DataError(
                    f"{self.run.cfg.model.name} generates a ranked list and cannot score candidates"
                )
            return self.model.score(batch)[0, c].float().cpu().numpy()

    # ---- events ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def add_events(self, raw_user: int, raw_items: list[int], timestamps: list[int] | None = None) -> dict:
        """Add interactions to a user's live history (a new user id starts an empty one), in time order.

        Events without times happened now. With times, the request's events are ordered by (time, position); an
        event older than the user's newest goes to its place in time and the model state is recomputed for the
        new history (`update: recompute (late event)`). Everything is validated and computed first, then the
        events are committed to the store, then the history in memory is replaced: a bad event or a failed
        write (StoreError) changes nothing.
        """
        new_items, new_ts = self._validate(raw_items, timestamps)
        if not len(new_items):
            raise DataError("items is empty: give at least one item id")
        key = self.user_key(raw_user)
        # The model reads time gaps: events without a time happened now (already in time order otherwise).
        stamps = new_ts if new_ts is not None else np.full(len(new_items), int(time.time()), dtype=np.int64)
        with self._lock:
            new_user = not self.knows_user(key)
            if new_user:
                empty = np.zeros(0, np.int64)
                old = LiveUser(empty, empty if self.has_time else None, None)
                old.live = np.zeros(0, bool) if self.has_actions else None
            else:
                old = self._user(key)
            late = old.ts is not None and len(old.ts) > 0 and int(stamps[0]) < newest_time(old.ts)
            new = LiveUser(
                np.concatenate([old.items, new_items]),
                None if old.ts is None else np.concatenate([old.ts, stamps]),
                old.user,
                live=None if old.live is None else np.concatenate([old.live, np.ones(len(new_items), bool)]),
            )
            if late:
                placed = time_order(new.ts)
                new.items, new.ts = new.items[placed], new.ts[placed]
                new.live = None if new.live is None else new.live[placed]
            new = self._capped(new)
            new.state, update = self._next_state(old, new_items, stamps, new.items, new.ts, late)
            # Durable before visible: the 200 is only sent after the commit, and memory only changes after it.
            self.store.append(str(key), [str(r) for r in self.run.raw_item_ids(new_items)], stamps)
            self._keep(key, new)
            return {
                "user_id": key,
                "added": len(new_items),
                "history_length": len(new.items),
                "new_user": new_user,
                "update": update,
            }

    def _next_state(self, old: LiveUser, new_items, stamps, full, full_ts, late: bool):
        """(the model state after the events, how it was made): incremental when the events come after the
        user's newest and the model can extend its state, else recomputed from the whole new history."""
        if self.incremental:
            cache = None if old.state is None else old.state.cache
            new, full, stamps, t = to_device(
                (torch.from_numpy(new_items), torch.from_numpy(full), _tensor(stamps), _tensor(full_ts)),
                self.device,
            )
            if cache is not None and not late:
                cache, inc = self.model.extend_state(cache, new, None if t is None else stamps, full, t)
                update = "incremental" if inc else "recompute (history longer than the model window)"
            else:
                cache = self.model.init_state(full, t)
                update = "recompute (late event)" if late else "recompute"
            return UserState(self.model.state_query(cache), compact(cache)), update
        update = "recompute (late event)" if late else "recompute"
        if self.backend is not None:
            return UserState(self._query(full, full_ts, old.user)), update
        return None, update

    # ---- helpers ---------------------------------------------------------------------------------------------

    def _validate(self, raw_items: list[int], timestamps: list[int] | None):
        """Internal ids and times of a request's items, in time order ((time, position), as the loader orders
        events) when times are given. Raises DataError for unknown ids or a length mismatch."""
        items = self.run.item_index(raw_items) if raw_items else np.zeros(0, dtype=np.int64)
        items = items.astype(np.int64)
        if timestamps is None:
            return items, None
        if len(timestamps) != len(raw_items):
            raise DataError(f"timestamps has {len(timestamps)} values for {len(raw_items)} items")
        ts = np.asarray(timestamps, dtype=np.int64)
        order = time_order(ts)
        return items[order], ts[order]
