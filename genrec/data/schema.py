"""The one canonical representation every loader produces and every model consumes.

A `Dataset` holds raw tables (original ids, Int64 or String as the source gives them; see `genrec.data.ids`).
`Dataset.encode()` turns it into `Sequences`: contiguous internal indices (users 0..U-1, items 1..I with 0 reserved
for padding) and one chronological sequence per user in CSR form. Nothing downstream of `encode()` sees raw ids
except through `Sequences.item_map` / `user_map`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from genrec.data.fingerprint import arrays_fingerprint, frames_fingerprint
from genrec.data.ids import IdMap, check_ids, ids_from_typed, match_dtype
from genrec.errors import DataError

ID_COLUMNS = ("user_id", "item_id")  # Int64 or String, as the source gives them (genrec.data.ids)
INTERACTION_SCHEMA = {
    "timestamp": pl.Int64,  # unix seconds (floor), null when the source has none
    # Order within the source; ties in timestamp are broken by it. Where the source's times are finer than a
    # second it follows the exact time (then file order), so (timestamp, position) is the exact order.
    "position": pl.Int64,
    "rating": pl.Float32,  # null for implicit feedback
}


class OfSequences:
    """A data object built on `sequences` (a split, the ranking data): its catalogue and user counts."""

    sequences: Sequences

    @property
    def n_items(self) -> int:
        return self.sequences.n_items

    @property
    def n_users(self) -> int:
        return self.sequences.n_users


@dataclass
class Dataset:
    """Raw tables of one dataset, as loaded.

    `ordered` says whether the position column is a real chronological order for every user (P5 sequences,
    timestamped logs). `unordered_users` lists users whose order is unknown (ML-1M users 3000-6040).
    `user_id` / `item_id` are Int64 or String (other integer dtypes become Int64; null ids or other dtypes raise
    DataError). The item and user tables' ids are matched to the interactions' dtype where their text is
    identical; item-table rows whose id cannot match (`"007"` against integer ids) are dropped with a note.
    """

    name: str
    interactions: pl.DataFrame
    items: pl.DataFrame  # item_id, title (nullable), categories (list[str]), any extra columns
    users: pl.DataFrame | None = None
    unordered_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source: str = ""
    notes: list[str] = field(default_factory=list)
    # The temporal split's (valid, test) cut-offs when fixed before events were dropped (`quality.clean`), so
    # that cleaning the training period does not move them; None = computed from the data at split time.
    cutoffs: tuple[int, int] | None = None
    # The tables are not changed after __post_init__ (filters build new Datasets), so the hash is taken once.
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = [c for c in (*ID_COLUMNS, *INTERACTION_SCHEMA) if c not in self.interactions.columns]
        if missing:
            raise DataError(f"{self.name}: interactions lack columns {missing}")
        ids = [ids_from_typed(self.interactions[c], self.name) for c in ID_COLUMNS]
        for col in ids:
            check_ids(col, self.name)
        self.interactions = self.interactions.select(
            ids + [pl.col(c).cast(t) for c, t in INTERACTION_SCHEMA.items()]
        )
        if self.interactions.height == 0:
            raise DataError(f"{self.name}: no interactions")
        if "item_id" not in self.items.columns:
            raise DataError(f"{self.name}: item table lacks item_id")
        self.items = self._matched(self.items, "item_id", "item table")
        if self.users is not None and "user_id" in self.users.columns:
            self.users = self._matched(self.users, "user_id", "user table")
        if "title" not in self.items.columns:
            self.items = self.items.with_columns(pl.lit(None, dtype=pl.Utf8).alias("title"))
        if "categories" not in self.items.columns:
            self.items = self.items.with_columns(pl.lit([], dtype=pl.List(pl.Utf8)).alias("categories"))

    def _matched(self, table: pl.DataFrame, column: str, what: str) -> pl.DataFrame:
        """`table` with its id column in the interactions' id dtype; rows that cannot match are dropped."""
        dtype = self.interactions.schema[column]
        if table.schema[column] == dtype:
            return table
        ids = match_dtype(ids_from_typed(table[column], f"{self.name} {what}"), dtype)
        lost = ids.null_count() - table[column].null_count()
        if lost:
            self.notes.append(f"ignored {lost} {what} rows whose {column} cannot match the {dtype} ids")
        return table.with_columns(ids).filter(pl.col(column).is_not_null())

    def fingerprint(self) -> str:
        """16 hex digits that change with any interaction (ids, time, order, rating), item table row (id, title,
        categories, other columns) or user table row, and only then (`genrec.data.fingerprint`). Its name, source
        and notes do not count: the same data found in two places has one fingerprint."""
        if self._fingerprint is None:
            unordered = (
                pl.DataFrame({"unordered_users": self.unordered_users}) if len(self.unordered_users) else None
            )
            self._fingerprint = frames_fingerprint(self.interactions, self.items, self.users, unordered)
        return self._fingerprint

    @property
    def has_timestamps(self) -> bool:
        return self.interactions["timestamp"].null_count() < self.interactions.height

    def stats(self) -> dict:
        inter = self.interactions
        n_users = inter["user_id"].n_unique()
        n_items = inter["item_id"].n_unique()
        lengths = inter.group_by("user_id").len()["len"]
        with_text = self.items.filter(pl.col("title").is_not_null()).height
        return {
            "users": n_users,
            "items": n_items,
            "interactions": inter.height,
            "avg_seq_len": round(float(lengths.mean()), 2),
            "median_seq_len": float(lengths.median()),
            "density": round(inter.height / max(1, n_users * n_items), 6),
            "timestamps": "all"
            if inter["timestamp"].null_count() == 0
            else ("none" if not self.has_timestamps else "partial"),
            "unordered_users": int(len(self.unordered_users)),
            "ratings": inter["rating"].null_count() < inter.height,
            "items_with_title": with_text,
        }

    def encode(self, item_ids: np.ndarray | None = None, user_ids: np.ndarray | None = None) -> Sequences:
        """Chronological per-user sequences over contiguous indices (items from 1, 0 = padding).

        Without ids, items and users are numbered in ascending raw-id order (numeric for Int64 ids,
        lexicographic for String ids). Passing a trained run's `item_ids` / `user_ids` (raw ids in index order,
        e.g. its items.parquet / users.parquet column) encodes this data in that run's index: interactions with
        items outside the catalogue are dropped (and noted), unknown users get indices after the known ones.
        Ids of the other dtype match where their text is identical (`IdMap.index`).
        """
        inter = self.interactions
        if item_ids is None:
            item_map = IdMap.sorted(inter["item_id"], start=1, kind="item")
        else:
            item_map = IdMap(item_ids, start=1, kind="item")
            known = pl.Series(item_map.contains(inter["item_id"]))
            if not known.all():
                self.notes.append(
                    f"dropped {int((~known).sum())} interactions with items outside the catalogue"
                )
                inter = inter.filter(known)
        if user_ids is None:
            user_map = IdMap.sorted(inter["user_id"], start=0, kind="user")
        else:
            given = IdMap(user_ids, start=0, kind="user")
            raw_users = inter["user_id"].unique().sort()
            present = match_dtype(raw_users, given.dtype)
            if present.null_count():
                bad = raw_users.filter(present.is_null()).head(3).to_list()
                raise DataError(f"{self.name}: user ids {bad} cannot join an index of {given.dtype} user ids")
            new = present.filter(~pl.Series(given.contains(present)))
            user_map = IdMap(pl.concat([given.to_series(), new.alias("user_id")]), start=0, kind="user")
        # Sort by user, then time (nulls last keep file order), then source position.
        inter = inter.sort(["user_id", "timestamp", "position"], nulls_last=True)
        users = user_map.index(inter["user_id"])
        items = item_map.index(inter["item_id"])
        # Rows must follow the internal user index, which may differ from raw-id order for a run's index.
        order = np.argsort(users, kind="stable")
        users, items = users[order], items[order]
        counts = np.bincount(users, minlength=len(user_map))
        offsets = np.zeros(len(user_map) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        ts = inter["timestamp"]
        timestamps = (
            ts.fill_null(-1).to_numpy().astype(np.int64)[order] if ts.null_count() < len(ts) else None
        )
        ratings = inter["rating"]
        rating_arr = (
            ratings.to_numpy().astype(np.float32)[order] if ratings.null_count() < len(ratings) else None
        )
        return Sequences(
            user_ids=user_map.ids,
            item_ids=item_map.ids,
            offsets=offsets,
            items=items,
            timestamps=timestamps,
            ratings=rating_arr,
        )


@dataclass
class Sequences:
    """Per-user chronological sequences in CSR form over internal indices.

    User u's items are `items[offsets[u]:offsets[u+1]]`; `user_ids[u]` and `item_ids[i-1]` are the raw ids, as
    numpy int64 arrays for integer ids or object arrays of str for string ids. `user_map` / `item_map` convert
    between raw ids and indices.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    offsets: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None
    ratings: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def fingerprint(self) -> str:
        """16 hex digits of the encoded events and the id tables (`genrec.data.fingerprint`): equal exactly when
        every user's sequence, time and rating and the raw id of every index are."""
        return arrays_fingerprint(
            user_ids=np.asarray(self.user_ids), item_ids=np.asarray(self.item_ids), offsets=self.offsets,
            items=self.items, timestamps=self.timestamps, ratings=self.ratings,
        )  # fmt: skip

    def row(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    @cached_property
    def item_map(self) -> IdMap:
        """Raw item id <-> internal item index (1..n_items)."""
        return IdMap(self.item_ids, start=1, kind="item")

    @cached_property
    def user_map(self) -> IdMap:
        """Raw user id <-> internal user index (0..n_users-1)."""
        return IdMap(self.user_ids, start=0, kind="user")

    def item_index(self, raw_ids) -> np.ndarray:
        """int64 internal indices of raw item ids; 0 for ids outside the catalogue."""
        return self.item_map.index(raw_ids, missing=0)


def csr_from_lists(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and flat values from a list of 1-D arrays."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, dtype=np.int64)
    return offsets, values
