"""Fractal expansion: a real interaction log grown into a larger synthetic one with the same statistics.

Belletti et al. 2019, "Scalable Realistic Recommendation Datasets through Fractal Expansions"
(https://arxiv.org/abs/1901.08910; the expansion of MovieLens used by Meta's billion-scale generative-
recommender study): the user x item matrix R (U x I) is replaced by the Kronecker product R (x) K with a small
reduced matrix K (m x n, entries in [0, 1]) and each non-zero of the product is kept with probability K[a, b].
User u becomes m users (u, a), item i becomes n items (i, b); user (u, a) interacts with item (i, b) only if u
interacted with i, with probability K[a, b]. Hence expected sizes: m U users, n I items, sum(K) x nnz(R)
interactions; a user's activity is its source activity times the row sum of K, an item's popularity its source
popularity times the column sum: the fat tails of both distributions keep their shape.

Here K is the source matrix itself coarse-grained (users in m activity groups, items in n popularity groups, K =
the square root of each block's density, rescaled so that sum(K) = factor): the paper derives its reduced matrix
from the source too (a resized low-rank approximation); the square root damps the spread of K's row and column
sums, which would otherwise widen the degree distributions (tests/test_expand.py checks relative popularity and
activity quantiles against the source). `reduced="uniform"` uses a constant K: every copy a thinned replica.

Order and time: the events of user (u, a) are u's events in u's order, each copied to the item copies b that
were kept, at u's timestamps shifted by a per-copy offset (a whole number of days, so time-of-day patterns
survive), the copies of one event one second apart in b's order. Users without timestamps get one event per
minute from the source's median first time (noted in the output's meta.json).

Output: DIR/interactions.parquet (user_id, item_id, timestamp, rating; int64 ids, written one user copy at a
time as row groups, sorted by user then time) and DIR/meta.json. Peak memory: the source plus one user copy.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from genrec.data.schema import Sequences
from genrec.errors import DataError, StorageError
from genrec.io import check_out_dir, io_reason, write_json

DAY = 86_400


def default_shape(factor: float) -> tuple[int, int]:
    """(user copies m, item copies n) for a growth factor: m = n = ceil(sqrt(2 x factor)), so that K's mean
    entry is about 1/2 (room for a non-uniform K below 1)."""
    side = max(1, math.ceil(math.sqrt(2 * factor)))
    return side, side


def reduced_matrix(seq: Sequences, m: int, n: int, factor: float, kind: str = "blocks") -> np.ndarray:
    """K [m, n] with entries in [0, 1] and sum(K) = factor (raises DataError when m x n < factor)."""
    if factor > m * n:
        raise DataError(f"factor {factor:g} needs at least {math.ceil(factor)} blocks; got {m} x {n}")
    if kind == "uniform":
        return np.full((m, n), factor / (m * n))
    if kind != "blocks":
        raise DataError(f"reduced matrix {kind!r}: expected blocks or uniform")
    users = np.repeat(np.arange(seq.n_users), np.diff(seq.offsets))
    activity = np.diff(seq.offsets)
    popularity = np.bincount(seq.items, minlength=seq.n_items + 1)[1:]
    u_group = _quantile_groups(activity, m)[users]
    i_group = _quantile_groups(popularity, n)[seq.items - 1]
    hits = np.zeros((m, n))
    np.add.at(hits, (u_group, i_group), 1)
    size = np.outer(np.bincount(_quantile_groups(activity, m), minlength=m),
                    np.bincount(_quantile_groups(popularity, n), minlength=n))  # fmt: skip
    k = np.sqrt(hits / np.maximum(size, 1))
    for _ in range(100):  # rescale to the factor; entries capped at 1 pass their excess to the others
        k = np.minimum(1.0, k * factor / k.sum())
        if abs(k.sum() - factor) < 1e-9 * factor:
            break
    return k


def _quantile_groups(values: np.ndarray, groups: int) -> np.ndarray:
    """Group 0..groups-1 of each value by rank (equal-sized groups, lowest values first)."""
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values), dtype=np.int64)
    out[order] = np.arange(len(values)) * groups // max(1, len(values))
    return out


def expand(
    seq: Sequences,
    factor: float,
    out: Path,
    users_copies: int | None = None,
    items_copies: int | None = None,
    reduced: str = "blocks",
    seed: int = 0,
    source: str = "",
) -> dict:
    """Write the fractal expansion of `seq` (see the module) to `out`; returns meta.json's content.

    `users_copies` / `items_copies`: m and n (default `default_shape(factor)`; a large n makes a large
    catalogue). Raises DataError for a factor below 1 or a shape too small for it."""
    if factor < 1:
        raise DataError(f"--factor must be at least 1, got {factor:g}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    m0, n0 = default_shape(factor)
    m, n = users_copies or m0, items_copies or n0
    k = reduced_matrix(seq, m, n, factor, reduced)
    rng = np.random.default_rng(seed)
    lengths = np.diff(seq.offsets)
    users = np.repeat(np.arange(seq.n_users, dtype=np.int64), lengths)
    times, note = _times(seq, lengths)
    ratings = seq.ratings if seq.ratings is not None else np.ones(len(seq.items), dtype=np.float32)
    span_days = max(1, int((times.max() - times.min()) // DAY))
    out = Path(out)
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "interactions.parquet"
    tmp = out / ".interactions.parquet.partial"
    schema = pa.schema(
        [
            ("user_id", pa.int64()),
            ("item_id", pa.int64()),
            ("timestamp", pa.int64()),
            ("rating", pa.float32()),
        ]
    )
    try:  # a full disk while writing: one line, and no partial file left
        total = 0
        with pq.ParquetWriter(tmp, schema) as writer:
            for a in range(m):
                shift = int(rng.integers(0, span_days + 1)) * DAY if a else 0
                parts = []
                for b in range(n):
                    keep = np.flatnonzero(rng.random(len(users)) < k[a, b])
                    # Ids: user copy a of u is a * U + u + 1, item copy b of i is b * I + i (both from 1).
                    parts.append(
                        (
                            users[keep],
                            b * seq.n_items + seq.items[keep],
                            times[keep] + shift + b,
                            ratings[keep],
                            keep,
                        )
                    )
                u = np.concatenate([p[0] for p in parts])
                pos = np.concatenate([p[4] for p in parts])
                t = np.concatenate([p[2] for p in parts])
                # By user, then time (the copies of one event in b's order), then source order.
                order = np.lexsort((pos, t, u))
                writer.write_table(
                    pa.table(
                        {
                            "user_id": a * seq.n_users + u[order] + 1,
                            "item_id": np.concatenate([p[1] for p in parts])[order].astype(np.int64),
                            "timestamp": t[order],
                            "rating": np.concatenate([p[3] for p in parts])[order].astype(np.float32),
                        },
                        schema=schema,
                    )
                )
                total += len(order)
        tmp.replace(target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {target}: {io_reason(e)}") from None
    meta = {
        "method": "fractal expansion (Belletti et al. 2019, arXiv:1901.08910): R kron K with Bernoulli(K) "
        "sampling",
        "source": source,
        "factor": factor,
        "user_copies": m,
        "item_copies": n,
        "reduced_matrix": reduced,
        "seed": seed,
        "source_interactions": int(len(seq.items)),
        "interactions": int(total),
        "users_max": int(m * seq.n_users),
        "items_max": int(n * seq.n_items),
        "notes": [note] if note else [],
    }
    write_json(out / "meta.json", meta)
    return meta


def _times(seq: Sequences, lengths: np.ndarray) -> tuple[np.ndarray, str]:
    """Source timestamps, with plausible ones for users that have none (one event a minute)."""
    if seq.timestamps is None:
        start = np.zeros(seq.n_users, dtype=np.int64)
        note = "the source has no timestamps: events are one minute apart from time 0"
        base = np.zeros(len(seq.items), dtype=np.int64)
    else:
        base = seq.timestamps.astype(np.int64)
        known = base >= 0
        if known.all():
            return base, ""
        first = base[seq.offsets[:-1][lengths > 0]]
        start_time = int(np.median(first[first >= 0])) if (first >= 0).any() else 0
        start = np.full(seq.n_users, start_time, dtype=np.int64)
        note = (
            f"{int((~known).sum())} source events without a timestamp got one a minute apart in their "
            "user's order, from the median first time"
        )
    within = np.arange(len(seq.items)) - np.repeat(seq.offsets[:-1], lengths)
    made = np.repeat(start, lengths) + 60 * within
    if seq.timestamps is None:
        return made, note
    return np.where(base >= 0, base, made), note
