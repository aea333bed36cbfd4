"""Cleaning steps applied to raw interactions before indices are built."""

from __future__ import annotations

import polars as pl

from genrec.data.schema import Dataset


def _with(ds: Dataset, inter: pl.DataFrame, note: str | None) -> Dataset:
    notes = ds.notes + ([note] if note else [])
    return Dataset(ds.name, inter, ds.items, ds.users, ds.unordered_users, ds.source, notes)


def drop_unordered_users(ds: Dataset) -> Dataset:
    """Remove users whose chronological order is unknown: a sequence model must not learn a fake order."""
    if len(ds.unordered_users) == 0:
        return ds
    inter = ds.interactions.filter(~pl.col("user_id").is_in(ds.unordered_users.tolist()))
    ds = _with(ds, inter, f"dropped {len(ds.unordered_users)} users without a known order")
    ds.unordered_users = ds.unordered_users[:0]
    return ds


def deduplicate(ds: Dataset, keep: str = "first") -> Dataset:
    """Keep one interaction per (user, item): the first or the last in time."""
    before = ds.interactions.height
    inter = ds.interactions.sort(["user_id", "timestamp", "position"], nulls_last=True).unique(
        ["user_id", "item_id"], keep=keep, maintain_order=True
    )
    removed = before - inter.height
    return _with(
        ds, inter, f"removed {removed} repeated (user, item) pairs, kept {keep}" if removed else None
    )


def min_sequence_length(ds: Dataset, n: int) -> Dataset:
    counts = ds.interactions.group_by("user_id").len()
    keep = counts.filter(pl.col("len") >= n)["user_id"]
    inter = ds.interactions.filter(pl.col("user_id").is_in(keep.implode()))
    dropped = counts.height - keep.len()
    return _with(ds, inter, f"dropped {dropped} users with fewer than {n} interactions" if dropped else None)


def k_core(ds: Dataset, k: int) -> Dataset:
    """Iteratively drop users and items with fewer than k interactions until none remain."""
    inter = ds.interactions
    before = inter.height
    while True:
        user_ok = inter.group_by("user_id").len().filter(pl.col("len") >= k)["user_id"]
        item_ok = inter.group_by("item_id").len().filter(pl.col("len") >= k)["item_id"]
        kept = inter.filter(
            pl.col("user_id").is_in(user_ok.implode()) & pl.col("item_id").is_in(item_ok.implode())
        )
        if kept.height == inter.height:
            break
        inter = kept
    note = f"{k}-core kept {inter.height} of {before} interactions" if inter.height != before else None
    return _with(ds, inter, note)
