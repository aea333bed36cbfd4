"""Live events of a served run: a durable store (SQLite) and the time order of a user's events.

`EventStore` keeps every event the server acknowledges in an SQLite database (WAL journal) and commits it before
the server answers, so a crash, `kill -9` or restart loses no acknowledged event; the serving engine keeps only a
bounded set of users in memory and reloads the others from here. Rows hold raw ids as text (the run's integer
ids written canonically, "7"), so the file is readable with any SQLite tool and tied to a catalogue, not to a
model: two runs over the same items can share one.

Tables (created when absent, so the file may be an existing database of the user's own):
  genrec_events(seq INTEGER PRIMARY KEY, user TEXT, item TEXT, ts INTEGER, received INTEGER)
      one row per event; seq is the arrival order, ts the event's unix seconds, received when it was stored;
  genrec_users(user TEXT PRIMARY KEY, last_seq INTEGER)
      the users with live events and their newest event, for listing and for "is this user known".
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from genrec.errors import ConfigError, GenrecError

SYNC_MODES = ("full", "normal")
_NEVER = np.iinfo(
    np.int64
).max  # the sort key of a missing time (-1): after every real time, as the loader sorts

_TABLES = """
CREATE TABLE IF NOT EXISTS genrec_events (
    seq INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    item TEXT NOT NULL,
    ts INTEGER NOT NULL,
    received INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS genrec_users (
    user TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS genrec_events_by_user ON genrec_events (user, ts, seq);
CREATE INDEX IF NOT EXISTS genrec_users_by_recency ON genrec_users (last_seq);
"""
_COLUMNS = {
    "genrec_events": ["seq", "user", "item", "ts", "received"],
    "genrec_users": ["user", "last_seq"],
}


class StoreError(GenrecError):
    """The store could not write or read (disk full, file removed, I/O error): the request changed nothing."""


def time_order(ts: np.ndarray) -> np.ndarray:
    """Indices that sort events by (time, position), as the data loader orders a user's events: a stable sort on
    the time, missing times (-1) last. ts: [n] int64 unix seconds -> [n] int64."""
    return np.argsort(np.where(ts < 0, _NEVER, ts), kind="stable")


def newest_time(ts: np.ndarray) -> int:
    """The sort key of the last event of a history in time order (a missing time sorts after every time)."""
    return int(_NEVER if ts[-1] < 0 else ts[-1])


class EventStore:
    """Append-only log of live events in one SQLite file (or `":memory:"`, which keeps nothing).

    sync: "full" (default) makes every commit reach the disk (fsync) before it returns: an acknowledged event
    survives `kill -9`, an OS crash and a power loss. "normal" leaves the fsync to WAL checkpoints: an event still
    survives `kill -9` or any crash of the server process, but the newest events may be lost when the machine
    itself goes down. One connection serves every thread under a lock: writes are serialised anyway (one writer
    per SQLite file), and the engine already holds its own lock around a user's update.
    Raises ConfigError (one line) when the file cannot be opened, is not an SQLite database, or holds tables of
    these names with other columns.
    """

    def __init__(self, path: str | Path, sync: str = "full") -> None:
        if sync not in SYNC_MODES:
            raise ConfigError(f"state sync must be one of {', '.join(SYNC_MODES)}, got {sync!r}")
        self.path = str(path)
        self._lock = threading.Lock()
        if self.path != ":memory:":
            parent = Path(self.path).parent
            if not parent.is_dir():
                raise ConfigError(f"--state {self.path}: folder {parent} does not exist")
        try:
            # Autocommit mode: transactions are begun and committed explicitly below.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if self.path != ":memory:" and mode.lower() != "wal":
                raise ConfigError(f"--state {self.path}: SQLite refused WAL mode (journal mode {mode})")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            self._db.executescript(_TABLES)
            for table, expected in _COLUMNS.items():
                found = [row[1] for row in self._db.execute(f"PRAGMA table_info({table})")]
                if found != expected:
                    self._db.close()
                    raise ConfigError(
                        f"--state {self.path}: table {table} has columns {found}, expected {expected}; "
                        "point --state at another file"
                    )
            self._db.executescript(_INDEXES)
        except sqlite3.DatabaseError as e:
            raise ConfigError(f"--state {self.path}: cannot use it as an SQLite database ({e})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def append(self, user: str, items: list[str], ts: np.ndarray) -> None:
        """Store one request's events (already validated) in one transaction; returns once committed.
        Raises StoreError, after which nothing of the request is stored."""
        now = int(time.time())
        rows = [(user, item, int(t), now) for item, t in zip(items, ts.tolist())]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT INTO genrec_events (user, item, ts, received) VALUES (?, ?, ?, ?)", rows
                    )
                    last = self._db.execute("SELECT last_insert_rowid()").fetchone()[0]
                    self._db.execute(
                        "INSERT INTO genrec_users (user, last_seq) VALUES (?, ?) "
                        "ON CONFLICT (user) DO UPDATE SET last_seq = excluded.last_seq",
                        (user, last),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StoreError(
                    f"could not store the events in {self.path} ({e}); nothing was changed"
                ) from None

    def events(self, user: str, newest: int, by_time: bool) -> tuple[list[str], np.ndarray]:
        """A user's `newest` latest events oldest first: (raw item ids as text, [n] int64 unix seconds), in
        (time, arrival) order when `by_time`, else in arrival order."""
        order = "ts DESC, seq DESC" if by_time else "seq DESC"
        rows = self._read(
            f"SELECT item, ts FROM genrec_events WHERE user = ? ORDER BY {order} LIMIT ?", (user, newest)
        )
        rows.reverse()
        return [r[0] for r in rows], np.array([r[1] for r in rows], dtype=np.int64)

    def has_user(self, user: str) -> bool:
        return bool(self._read("SELECT 1 FROM genrec_users WHERE user = ?", (user,)))

    def recent_users(self, limit: int) -> list[str]:
        """Users with live events, the most recently active first."""
        rows = self._read("SELECT user FROM genrec_users ORDER BY last_seq DESC LIMIT ?", (limit,))
        return [r[0] for r in rows]

    def items(self) -> list[str]:
        """Every distinct item id the events name (to check them against a catalogue at start)."""
        return [r[0] for r in self._read("SELECT DISTINCT item FROM genrec_events", ())]

    def count(self) -> int:
        return self._read("SELECT count(*) FROM genrec_events", ())[0][0]

    def _read(self, sql: str, args: tuple) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"could not read the live events in {self.path} ({e})") from None
