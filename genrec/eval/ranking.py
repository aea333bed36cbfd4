"""Metrics of labelled impressions: AUC, per-user GAUC, LogLoss, NDCG of each user's candidate list.

- AUC: over all impressions; tied scores count half (ranks are averaged).
- GAUC: per-user AUC weighted by the user's number of impressions, over users with both a liked and a disliked
  impression (others have no AUC; their count is reported).
- LogLoss: mean binary cross-entropy of sigmoid(logit).
- NDCG@K: each user's impressions ranked by score, gain = like label; averaged over users with >= 1 like.
  Ties are ordered pessimistically (dislikes first), so a constant scorer gets no credit.
A NaN score ranks below every other score (as a miss), never above; LogLoss of a NaN logit is undefined (NaN).
A metric that is undefined (AUC of a single-class set, GAUC without a user of both classes) is NaN here and
null in the JSON files (`train.checkpoint.write_json`).
"""

from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties averaged."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    boundaries = np.flatnonzero(xs[1:] != xs[:-1]) + 1  # not diff: -inf - -inf is NaN, which splits a tie
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = np.asarray(labels) > 0.5
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _ranks(_nan_last(scores))
    return float((r[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _nan_last(scores) -> np.ndarray:
    """float64 scores with NaN as -inf: an undefined score ranks below every other one."""
    x = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(x), -np.inf, x)


def logloss(labels: np.ndarray, logits: np.ndarray) -> float:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    # log(1 + e^z) - y z, computed stably; a NaN logit makes it NaN (undefined), without a warning.
    with np.errstate(invalid="ignore"):
        return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _groups(users: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(users, kind="stable")
    cuts = np.flatnonzero(np.diff(users[order])) + 1
    return np.split(order, cuts)


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    """(impression-weighted mean per-user AUC, number of users with both labels)."""
    total, weight, n = 0.0, 0, 0
    for idx in _groups(np.asarray(users)):
        a = auc(labels[idx], scores[idx])
        if not np.isnan(a):
            total += a * len(idx)
            weight += len(idx)
            n += 1
    return (total / weight if weight else float("nan")), n


def ndcg_at(users: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int | None) -> float:
    out = []
    for idx in _groups(np.asarray(users)):
        y = labels[idx]
        if y.sum() == 0:
            continue
        order = np.lexsort((y, -_nan_last(scores[idx])))  # by score descending, dislikes first among ties
        gains = y[order][:k]
        disc = 1.0 / np.log2(np.arange(2, len(gains) + 2))
        ideal = np.sort(y)[::-1][:k]
        out.append(float((gains * disc).sum() / (ideal * disc[: len(ideal)]).sum()))
    return float(np.mean(out)) if out else float("nan")


def ranking_metrics(
    users: np.ndarray, labels: np.ndarray, logits: np.ndarray, ks: tuple[int, ...] = (10,)
) -> dict:
    users, labels, logits = np.asarray(users), np.asarray(labels, dtype=np.float64), np.asarray(logits)
    g, n_users = gauc(users, labels, logits)
    out = {
        "auc": auc(labels, logits),
        "gauc": g,
        "logloss": logloss(labels, logits),
        **{f"ndcg@{k}": ndcg_at(users, labels, logits, k) for k in ks},
        "ndcg": ndcg_at(users, labels, logits, None),
        "impressions": int(len(labels)),
        "users": int(len(np.unique(users))),
        "gauc_users": n_users,
        "positive_rate": float(labels.mean()) if len(labels) else float("nan"),
    }
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}


def evaluate_ranker(model, data, impressions, ks=(10,), batch_size: int | None = None) -> dict:
    """Ranking metrics (module docstring) of a ranker's like-logits on labelled `impressions`."""
    scores = model.predict(data, impressions, batch_size)
    return ranking_metrics(impressions.users, impressions.labels, scores, tuple(ks))
