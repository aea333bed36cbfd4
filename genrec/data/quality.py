"""Data quality: scores of events and users that flag noise, and the filter `data.clean` applies.

Event signals (one row per interaction, in (user, time, position) order, `event_table`):
- `exact_duplicate`: a repeat of the same (user, item, timestamp) (or, without timestamps, of the same item at
  the next position);
- `near_duplicate`: the same item among the user's `context` previous events;
- `burst`: how many of the user's other events lie within `burst_seconds` (0 without timestamps);
- `cooccurrence`: how often, elsewhere in the data, the item appears within `context` positions of its neighbours
  here, normalised by popularity: mean over neighbours j of (c_ij - 1) / sqrt(n_i n_j) (this occurrence left
  out). An item dropped into a sequence at random shares little with its neighbours;
- `implausibility` (optional, computed above the data layer): -log p(item | history) under a trained model
  (`genrec.eval.likelihood.prefix_log_likelihood`).
- `affinity`: cosine between the item's vector and the user's other items (`profile_affinity`, truncated SVD);
`noise` = mean of the standardised signals (low co-occurrence, low affinity, implausibility), plus 3 per exact and
1 per near duplicate, plus the user's standardised bot score where positive. User signals: activity (log events),
item diversity (distinct share), popularity profile (mean log item
count), burst share, mean co-occurrence; `bot` = mean of their absolute z-scores (an abnormal profile in any
direction), the low-co-occurrence one signed. Heuristics in the spirit of the survey's quality-aware cleaning; the
benchmark (benchmarks/cleaning.py) measures how well they detect injected noise.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from genrec.config import CleanConfig
from genrec.data.schema import Dataset
from genrec.data.split import heldout_events
from genrec.errors import DataError


def event_table(ds: Dataset) -> pl.DataFrame:
    """The interactions in (user, timestamp, position) order with `user` / `item` dense codes (0-based)."""
    inter = ds.interactions.sort(["user_id", "timestamp", "position"], nulls_last=True)
    return inter.with_columns(
        (pl.col("user_id").rank("dense") - 1).cast(pl.Int64).alias("user"),
        (pl.col("item_id").rank("dense") - 1).cast(pl.Int64).alias("item"),
    )


def _z(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def event_scores(
    ds: Dataset, burst_seconds: int = 60, context: int = 3, implausibility: np.ndarray | None = None
) -> pl.DataFrame:
    """`event_table(ds)` with the event signals and `noise` (module docstring). `implausibility` [E], aligned to
    `event_table`'s rows (NaN = unknown), joins the score when given."""
    ev = event_table(ds)
    user, item = ev["user"].to_numpy(), ev["item"].to_numpy()
    n = len(item)
    ts = ev["timestamp"].to_numpy() if ev["timestamp"].null_count() == 0 else None
    counts = np.bincount(item).astype(np.float64)
    n_items = len(counts)

    exact = np.zeros(n, dtype=bool)
    same_prev = (user[1:] == user[:-1]) & (item[1:] == item[:-1])
    if ts is not None:
        same_prev &= ts[1:] == ts[:-1]
    exact[1:] = same_prev
    near = np.zeros(n, dtype=bool)
    # Pairs (t, t + k) inside one user: their co-occurrence counts, and near duplicates.
    firsts, seconds = [], []
    for k in range(1, context + 1):
        a = np.arange(n - k)
        ok = user[a] == user[a + k]
        firsts.append(a[ok])
        seconds.append(a[ok] + k)
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    near[second[(item[first] == item[second])]] = True
    near &= ~exact
    lo, hi = np.minimum(item[first], item[second]), np.maximum(item[first], item[second])
    key = lo * n_items + hi
    _, inverse, pair_counts = np.unique(key, return_inverse=True, return_counts=True)
    score = (pair_counts[inverse] - 1) / np.sqrt(counts[item[first]] * counts[item[second]])
    total = np.bincount(first, score, n) + np.bincount(second, score, n)
    seen = np.bincount(first, minlength=n) + np.bincount(second, minlength=n)
    cooc = np.where(seen > 0, total / np.maximum(seen, 1), 0.0)

    burst = np.zeros(n, dtype=np.int64)
    if ts is not None:
        # Per user, events within +-burst_seconds: searchsorted on (user, time) made one sortable key.
        span = int(ts.max() - ts.min()) + 2 * burst_seconds + 1
        key_t = user.astype(np.int64) * span + (ts - ts.min())
        burst = (
            np.searchsorted(key_t, key_t + burst_seconds, side="right")
            - np.searchsorted(key_t, key_t - burst_seconds, side="left")
            - 1
        )
    affinity = profile_affinity(user, item, counts)
    parts = [_z(-np.log1p(cooc * 100)), _z(-affinity)]
    if implausibility is not None:
        imp = np.asarray(implausibility, dtype=np.float64)
        known = np.isfinite(imp)
        filled = np.where(known, imp, np.nanmean(imp) if known.any() else 0.0)
        parts.append(_z(filled))
    noise = np.mean(parts, axis=0) + 3.0 * exact + 1.0 * near
    out = ev.with_columns(
        pl.Series("affinity", affinity),
        pl.Series("exact_duplicate", exact),
        pl.Series("near_duplicate", near),
        pl.Series("burst", burst),
        pl.Series("cooccurrence", cooc),
        pl.Series("popularity", np.log(counts[item])),
    )
    if implausibility is not None:
        out = out.with_columns(pl.Series("implausibility", np.asarray(implausibility, dtype=np.float64)))
    # An event of a bot-like user is suspect whatever its item: the user's standardised bot score joins it.
    users = user_scores(out)
    per_user = users.select("user_id", pl.Series("user_bot", _z(users["bot"].to_numpy())))
    user_bot = out.select("user_id").join(per_user, on="user_id", how="left", maintain_order="left")[
        "user_bot"
    ]
    return out.with_columns(user_bot, pl.Series("noise", noise + np.maximum(user_bot.to_numpy(), 0)))


def profile_affinity(user: np.ndarray, item: np.ndarray, counts: np.ndarray, rank: int = 32) -> np.ndarray:
    """Cosine between each event's item vector and its user's other items' summed vectors; item vectors from a
    rank-`rank` truncated SVD of the user x item matrix (popularity-damped by 1/sqrt(count)). An item that fits
    the user's taste scores high; an item dropped in at random, near zero."""
    import torch

    n_users, n_items = int(user.max()) + 1, len(counts)
    pairs = np.unique(user * n_items + item)
    u, i = pairs // n_items, pairs % n_items
    values = torch.from_numpy(1.0 / np.sqrt(counts[i])).float()
    index = torch.from_numpy(np.stack([u, i]))
    matrix = torch.sparse_coo_tensor(index, values, (n_users, n_items), check_invariants=True)
    q = max(1, min(rank, n_users - 1, n_items - 1))
    gen = torch.random.fork_rng()  # a fixed random start without touching the caller's generator
    with gen:
        torch.manual_seed(0)
        _, s, v = torch.svd_lowrank(matrix.coalesce(), q=q, niter=3)
    vec = (v * s.sqrt()).numpy().astype(np.float64)  # [n_items, q]
    vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    ev = vec[item]
    profile = np.stack([np.bincount(user, ev[:, d], n_users) for d in range(vec.shape[1])], 1)
    other = profile[user] - ev  # leave this event out
    norm = np.linalg.norm(other, axis=1)
    return np.where(norm > 0, (ev * other).sum(1) / np.maximum(norm, 1e-12), 0.0)


def user_scores(events: pl.DataFrame) -> pl.DataFrame:
    """One row per user of `event_scores`' table: events, distinct share, mean log popularity, burst share, mean
    co-occurrence, and `bot` (module docstring)."""
    users = events.group_by("user_id", maintain_order=True).agg(
        pl.len().alias("events"),
        (pl.col("item").n_unique() / pl.len()).alias("distinct_share"),
        pl.col("popularity").mean().alias("mean_popularity"),
        (pl.col("burst") > 0).mean().alias("burst_share"),
        pl.col("cooccurrence").mean().alias("mean_cooccurrence"),
    )
    z = [
        np.abs(_z(np.log(users["events"].to_numpy().astype(np.float64)))),
        np.abs(_z(users["distinct_share"].to_numpy())),
        np.abs(_z(users["mean_popularity"].to_numpy())),
        _z(users["burst_share"].to_numpy().astype(np.float64)),
        _z(-np.log1p(users["mean_cooccurrence"].to_numpy() * 100)),
    ]
    return users.with_columns(pl.Series("bot", np.mean(z, axis=0)))


def clean(
    ds: Dataset,
    cfg: CleanConfig,
    implausibility: np.ndarray | None = None,
    split: str = "leave_one_out",
    valid_quantile: float = 0.8,
    test_quantile: float = 0.9,
) -> Dataset:
    """`ds` without what `cfg` asks to drop: exact duplicates, the top `drop_users` share of users by bot score
    (all their events), the top `drop_events` share of events by noise. Notes say what went.

    Only the training part is seen and edited: the events the split (`split`, with the quantiles of a temporal
    one) will hold out for evaluation (`split.heldout_events`) are neither scored nor dropped, so nothing about
    them (a changed test target) changes what goes; the scores are fitted on the training events alone. Each
    user's `keep_last` newest events are kept, and a user keeps at least one training event. A temporal split's
    cut-offs are fixed before anything is dropped and travel with the result (`Dataset.cutoffs`).
    `implausibility` is aligned to `event_table(ds)`'s rows."""
    if not (cfg.exact_duplicates or cfg.drop_users or cfg.drop_events):
        return ds
    table = event_table(ds)
    ts = table["timestamp"].to_numpy() if table["timestamp"].null_count() == 0 else None
    heldout, cutoffs = heldout_events(table["user"].to_numpy(), ts, split, valid_quantile, test_quantile)
    fit = ~heldout
    if not fit.any():
        raise DataError(f"{ds.name}: no training events to clean (every event is held out for evaluation)")
    part = Dataset(ds.name, table.filter(pl.Series(fit)).select(ds.interactions.columns), ds.items, ds.users)
    events = event_scores(
        part,
        cfg.burst_seconds,
        cfg.context,
        None if implausibility is None else np.asarray(implausibility)[fit],
    )
    notes = []
    drop = np.zeros(events.height, dtype=bool)
    gone_users = pl.Series("user_id", [], dtype=table.schema["user_id"])
    if cfg.drop_users:
        users = user_scores(events)
        n_drop = int(round(cfg.drop_users * users.height))
        gone_users = users.sort("bot", descending=True).head(n_drop)["user_id"]
        drop |= events["user_id"].is_in(gone_users.implode()).to_numpy()
        notes.append(f"dropped {n_drop} users with the highest bot score (all their events)")
    age = table.select(pl.int_range(pl.len()).reverse().over("user_id").alias("age"))["age"].to_numpy()
    newest = (age < cfg.keep_last)[fit]
    if cfg.exact_duplicates:
        dup = events["exact_duplicate"].to_numpy() & ~newest & ~drop
        drop |= dup
        notes.append(f"dropped {int(dup.sum())} exact duplicate training events")
    if cfg.drop_events:
        eligible = ~newest & ~drop
        n_drop = int(round(cfg.drop_events * eligible.sum()))
        worst = _noisiest(events["user"].to_numpy(), events["noise"].to_numpy(), eligible, ~drop, n_drop)
        drop[worst] = True
        notes.append(f"dropped {len(worst)} training events with the highest noise score")
    keep = np.ones(table.height, dtype=bool)
    keep[np.flatnonzero(fit)[drop]] = False
    keep &= ~table["user_id"].is_in(gone_users.implode()).to_numpy()
    kept = table.filter(pl.Series(keep)).select(ds.interactions.columns)
    return Dataset(
        ds.name, kept, ds.items, ds.users, ds.unordered_users, ds.source, ds.notes + notes, cutoffs=cutoffs
    )


def _noisiest(
    user: np.ndarray, noise: np.ndarray, eligible: np.ndarray, left: np.ndarray, n: int
) -> np.ndarray:
    """Rows of the `n` noisiest eligible events, skipping any that would take a user's last remaining event
    (`left`: the events still there)."""
    order = np.flatnonzero(eligible)[np.argsort(-noise[eligible], kind="stable")]
    protected = np.bincount(user[left & ~eligible], minlength=user.max() + 1)  # stay whatever happens
    cap = np.bincount(user[eligible], minlength=user.max() + 1) - (protected == 0)  # droppable per user
    rank = np.zeros(len(order), dtype=np.int64)  # how many of the user's events come earlier in `order`
    if len(order):
        by_user = np.argsort(user[order], kind="stable")
        grouped = user[order][by_user]
        starts = np.r_[0, np.flatnonzero(grouped[1:] != grouped[:-1]) + 1]
        run = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        rank[by_user] = run
    return order[rank < cap[user[order]]][:n]


def sample_users(ds: Dataset, share: float, seed: int = 0) -> Dataset:
    """A seeded random `share` of the users with all their events (the data-size axis of scaling sweeps)."""
    if share >= 1:
        return ds
    users = ds.interactions["user_id"].unique().sort()
    keep = users.sample(fraction=share, seed=seed)
    inter = ds.interactions.filter(pl.col("user_id").is_in(keep.implode()))
    note = f"kept a random {share:.0%} of users ({keep.len()} of {users.len()}, seed {seed})"
    return Dataset(ds.name, inter, ds.items, ds.users, ds.unordered_users, ds.source, ds.notes + [note])
