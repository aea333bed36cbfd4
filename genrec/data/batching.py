"""Turning CSR sequences into padded tensors, and batches of training sequences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch


@dataclass
class HistoryBatch:
    """Histories right-aligned in a [B, L] tensor (0 = padding on the left); the newest item is last."""

    items: torch.Tensor
    users: torch.Tensor | None = None
    timestamps: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.Tensor:
        return (self.items > 0).sum(1)


class SequenceBatch(NamedTuple):
    """Training windows of next-item models: `items` [B, L + 1] right-aligned (0 = padding), each position's
    target the item after it; `timestamps` [B, L + 1] seconds, or None for models that read no time."""

    items: torch.Tensor
    timestamps: torch.Tensor | None = None


class PairBatch(NamedTuple):
    """BPR training triples: `users`, `positives` and sampled `negatives`, each [B] internal ids."""

    users: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor


def pad_left(
    offsets: np.ndarray, values: np.ndarray, rows: np.ndarray, max_len: int | None, pad_value: int = 0
) -> np.ndarray:
    """Rows of a CSR array, the last `max_len` values of each, right-aligned into a [len(rows), L] array."""
    starts, ends = offsets[rows], offsets[rows + 1]
    longest = int((ends - starts).max()) if len(rows) else 0
    width = max(1, longest if max_len is None else min(max_len, longest))
    idx = ends[:, None] - width + np.arange(width)[None, :]
    valid = idx >= starts[:, None]
    out = np.where(valid, values[np.clip(idx, 0, max(len(values) - 1, 0))] if len(values) else 0, pad_value)
    return out


def history_batch(
    offsets: np.ndarray,
    items: np.ndarray,
    rows: np.ndarray,
    max_len: int | None,
    users: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
) -> HistoryBatch:
    return HistoryBatch(
        items=torch.from_numpy(pad_left(offsets, items, rows, max_len)).long(),
        users=None if users is None else torch.from_numpy(np.asarray(users)).long(),
        timestamps=None
        if timestamps is None
        else torch.from_numpy(pad_left(offsets, timestamps, rows, max_len)),
    )


def length_bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket_factor: int = 50
) -> list[np.ndarray]:
    """Row batches grouped by similar length so padding is small; order is random at both levels.

    Rows are shuffled, cut into chunks of `bucket_factor` batches, each chunk sorted by length and split into
    batches, and the batches shuffled: close to uniform sampling while wasting little compute on padding.
    """
    order = rng.permutation(len(lengths))
    chunk = batch_size * bucket_factor
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches
