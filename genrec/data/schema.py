"""The one canonical representation every loader produces and every model consumes.

A `Dataset` holds raw tables (original ids). `Dataset.encode()` turns it into `Sequences`: contiguous internal
indices (users 0..U-1, items 1..I with 0 reserved for padding) and one chronological sequence per user in CSR form.
Nothing downstream of `encode()` sees raw ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from genrec.errors import DataError

INTERACTION_SCHEMA = {
    "user_id": pl.Int64,
    "item_id": pl.Int64,
    "timestamp": pl.Int64,  # unix seconds (floor), null when the source has none
    # Order within the source; ties in timestamp are broken by it. Where the source's times are finer than a
    # second it follows the exact time (then file order), so (timestamp, position) is the exact order.
    "position": pl.Int64,
    "rating": pl.Float32,  # null for implicit feedback
}


@dataclass
class Dataset:
    """Raw tables of one dataset, as loaded.

    `ordered` says whether the position column is a real chronological order for every user (P5 sequences,
    timestamped logs). `unordered_users` lists users whose order is unknown (ML-1M users 3000-6040).
    """

    name: str
    interactions: pl.DataFrame
    items: pl.DataFrame  # item_id, title (nullable), categories (list[str]), any extra columns
    users: pl.DataFrame | None = None
    unordered_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        missing = [c for c in INTERACTION_SCHEMA if c not in self.interactions.columns]
        if missing:
            raise DataError(f"{self.name}: interactions lack columns {missing}")
        self.interactions = self.interactions.select(
            [pl.col(c).cast(t) for c, t in INTERACTION_SCHEMA.items()]
        )
        if self.interactions.height == 0:
            raise DataError(f"{self.name}: no interactions")
        if "item_id" not in self.items.columns:
            raise DataError(f"{self.name}: item table lacks item_id")
        if "title" not in self.items.columns:
            self.items = self.items.with_columns(pl.lit(None, dtype=pl.Utf8).alias("title"))
        if "categories" not in self.items.columns:
            self.items = self.items.with_columns(pl.lit([], dtype=pl.List(pl.Utf8)).alias("categories"))

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

        Passing a trained run's `item_ids` / `user_ids` encodes this data in that run's index: interactions with
        items outside the catalogue are dropped (and noted), unknown users get indices after the known ones.
        """
        inter = self.interactions
        if item_ids is None:
            item_ids = np.sort(inter["item_id"].unique().to_numpy())
        else:
            known = inter["item_id"].is_in(pl.Series(item_ids).implode())
            if not known.all():
                self.notes.append(
                    f"dropped {int((~known).sum())} interactions with items outside the catalogue"
                )
                inter = inter.filter(known)
        present = np.sort(inter["user_id"].unique().to_numpy())
        if user_ids is None:
            user_ids = present
        else:
            user_ids = np.asarray(user_ids, dtype=np.int64)
            new = np.setdiff1d(present, user_ids)
            user_ids = np.concatenate([user_ids, new])
        # Sort by user, then time (nulls last keep file order), then source position.
        inter = inter.sort(["user_id", "timestamp", "position"], nulls_last=True)
        user_order = np.argsort(user_ids, kind="stable")
        users = user_order[np.searchsorted(user_ids, inter["user_id"].to_numpy(), sorter=user_order)]
        items = (np.searchsorted(item_ids, inter["item_id"].to_numpy()) + 1).astype(np.int64)
        # Rows must follow the internal user index, which may differ from raw-id order for a run's index.
        order = np.argsort(users, kind="stable")
        users, items = users[order], items[order]
        counts = np.bincount(users, minlength=len(user_ids))
        offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
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
            user_ids=user_ids,
            item_ids=np.asarray(item_ids, dtype=np.int64),
            offsets=offsets,
            items=items,
            timestamps=timestamps,
            ratings=rating_arr,
        )


@dataclass
class Sequences:
    """Per-user chronological sequences in CSR form over internal indices.

    User u's items are `items[offsets[u]:offsets[u+1]]`; `user_ids[u]` and `item_ids[i-1]` are the raw ids.
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

    def row(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def item_index(self, raw_ids) -> np.ndarray:
        """Raw item ids -> internal indices; 0 for ids outside the catalogue."""
        raw = np.asarray(raw_ids, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, raw)
        pos = np.clip(pos, 0, len(self.item_ids) - 1)
        found = self.item_ids[pos] == raw
        return np.where(found, pos + 1, 0)


def csr_from_lists(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and flat values from a list of 1-D arrays."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, dtype=np.int64)
    return offsets, values
