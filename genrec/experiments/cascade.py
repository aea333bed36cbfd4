"""Cascade: a retrieval run's top-K candidates re-ranked by a ranking run, against retrieval alone.

Both runs must use the same data and time cut-offs (retrieval: `data.split=temporal`, the ranker's default
quantiles). For every evaluated user of the retrieval split (history = events before the cut-off):
- retrieval alone: the retrieval model's top `k_final` (history items excluded);
- cascade: the retrieval model's top `k_retrieve`, scored by the ranker (history of (item, rating) events
  before the cut-off, candidates at the cut-off time), top `k_final` by like-logit;
- blend: the same candidates ordered by log P(like) + w * log P(retrieval), where P(retrieval) is the
  retrieval model's softmax over its `k_retrieve` candidates. The ranker alone answers "would the user like it
  if they rated it", not "will they pick it"; the blend weighs both. w is chosen on the validation users
  (the grid `blend_weights`, best validation liked_ndcg@K) and then applied once to the test users.
Every list is judged on the same users against (a) the retrieval protocol's target, the user's first item after
the cut-off (HR@K, NDCG@K), and (b) every item the user rated after the cut-off (validation: before the test
cut-off) and liked (rating >= 4): Precision@K and NDCG@K with binary gains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genrec.models.ranking.mfalcon import make_batch

BLEND_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SELECT_METRIC = "liked_ndcg"


@dataclass
class _UserLists:
    """One user's retrieval candidates (raw ids, best first) with both models' scores, and the judgements."""

    raw_ids: np.ndarray
    retrieval_log_prob: np.ndarray
    like_log_prob: np.ndarray  # -inf where the ranker does not know the item (kept after the known ones)
    target: int
    liked: set[int]


def _list_metrics(ranked: np.ndarray, target: int, liked: set[int], k: int) -> dict:
    top = ranked[:k]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    hit = np.flatnonzero(top == target)
    gains = np.array([1.0 if i in liked else 0.0 for i in top])
    ideal = disc[: min(k, len(liked))].sum()
    return {
        f"hr@{k}": float(len(hit) > 0),
        f"ndcg@{k}": float(disc[hit[0]]) if len(hit) else 0.0,
        f"liked_precision@{k}": float(gains.mean()) if len(top) else 0.0,
        f"liked_ndcg@{k}": float((gains * disc[: len(top)]).sum() / ideal) if ideal > 0 else float("nan"),
    }


def _mean(rows: list[dict]) -> dict:
    out = {key: round(float(np.nanmean([r[key] for r in rows])), 5) for key in rows[0]}
    out["users"] = len(rows)
    return out


def _judge(users: list[_UserLists], k: int, order) -> dict:
    """Mean metrics of the lists `order(user) -> raw ids ranked` over `users`."""
    return _mean([_list_metrics(order(u), u.target, u.liked, k) for u in users])


def _blend_order(weight: float):
    def order(u: _UserLists) -> np.ndarray:
        score = u.like_log_prob + weight * u.retrieval_log_prob
        return u.raw_ids[np.argsort(-score, kind="stable")]

    return order


@torch.no_grad()
def _user_lists(run, split, ranker, data, part: str, k_retrieve: int) -> list[_UserLists]:
    """Retrieval candidates and both models' scores for every user of `part` ("valid" or "test")."""
    cut = data.details[f"{part}_cutoff"]
    if split.details[f"{part}_cutoff"] != cut:
        raise ValueError(
            f"{part} cut-offs differ: retrieval {split.details[f'{part}_cutoff']} vs ranker {cut}"
        )
    judged_until = data.details["test_cutoff"] if part == "valid" else np.iinfo(np.int64).max
    # Retrieval index -> ranker index, through the raw ids.
    r_items = run.items["item_id"].to_numpy()
    to_rank = data.sequences.item_index(r_items)  # [n_retrieval_items], 0 = unknown to the ranker
    rank_user = {int(u): i for i, u in enumerate(data.sequences.user_ids)}
    ev = getattr(split, part)
    seq = data.sequences
    users = []
    for row in range(len(ev)):
        u_internal = int(ev.users[row])
        ru = rank_user.get(int(split.sequences.user_ids[u_internal]))
        if ru is None:
            continue
        h = ev.history.items[ev.history.offsets[row] : ev.history.offsets[row + 1]]
        ht = ev.history.timestamps[ev.history.offsets[row] : ev.history.offsets[row + 1]]
        ids, scores = run.recommend_internal(h, k_retrieve, exclude_seen=True, user=u_internal, timestamps=ht)
        # The ranker's view of the same user: events before the cut-off, and the liked items after it.
        start, end = seq.offsets[ru], seq.offsets[ru + 1]
        times = seq.timestamps[start:end]
        before = int(start + (times < cut).sum())
        after = np.arange(before, int(start + (times < judged_until).sum()))
        liked = {int(seq.item_ids[seq.items[e] - 1]) for e in after if data.labels[e] > 0}
        lo = max(start, before - ranker.cfg.max_len)
        cand = to_rank[ids - 1]
        known = cand > 0
        cross = None
        if ranker.n_cross:
            cross = data.cross_features(np.full(known.sum(), ru), cand[known], np.full(known.sum(), before))
        batch = make_batch(
            seq.items[lo:before],
            data.actions[lo:before],
            cand[known],
            seq.timestamps[lo:before],
            np.full(known.sum(), cut),
            user=ru,
            cross=cross,
        )
        like = np.full(len(ids), -np.inf)
        like[known] = torch.nn.functional.logsigmoid(ranker.logits(batch)[0].double()).numpy()
        retrieval = torch.as_tensor(scores, dtype=torch.float64).log_softmax(0).numpy()
        users.append(_UserLists(r_items[ids - 1], retrieval, like, int(r_items[ev.targets[row] - 1]), liked))
    return users


def cascade(
    retrieval_dir: Path,
    ranker_dir: Path,
    k_retrieve: int = 200,
    k_final: int = 10,
    blend_weights: tuple[float, ...] = BLEND_WEIGHTS,
) -> dict:

    from genrec.runs import load_run, make_split, prepare_dataset

    run = load_run(retrieval_dir)
    if run.cfg.data.split != "temporal":
        raise ValueError("the cascade needs a retrieval run trained with data.split=temporal")
    ds = prepare_dataset(run.cfg.data)
    split = make_split(ds, run.cfg.data, run.items["item_id"].to_numpy(), run.users["user_id"].to_numpy())
    ranker_run = load_run(ranker_dir)
    ranker, data = ranker_run.model, ranker_run.feedback
    select = f"{SELECT_METRIC}@{k_final}"
    valid = _user_lists(run, split, ranker, data, "valid", k_retrieve)
    valid_by_weight = {w: _judge(valid, k_final, _blend_order(w))[select] for w in blend_weights}
    best_weight = max(blend_weights, key=lambda w: (valid_by_weight[w], -w))  # ties: the smaller weight
    test = _user_lists(run, split, ranker, data, "test", k_retrieve)
    return {
        "retrieval": _judge(test, k_final, lambda u: u.raw_ids),
        "cascade": _judge(test, k_final, _blend_order(0.0)),
        "blend": _judge(test, k_final, _blend_order(best_weight)),
        "blend_weight": best_weight,
        "valid_by_weight": {str(w): v for w, v in valid_by_weight.items()},
        "valid_retrieval_alone": _judge(valid, k_final, lambda u: u.raw_ids)[select],
        "protocol": {
            "retrieval_run": str(retrieval_dir),
            "ranker_run": str(ranker_dir),
            "ranker": ranker_run.cfg.model.name,
            "k_retrieve": k_retrieve,
            "k_final": k_final,
            "test_cutoff": int(data.details["test_cutoff"]),
            "users": "test users of the retrieval temporal split known to the ranker (history before the cut-off)",
            "judged_against": "hr/ndcg: the first item after the cut-off (retrieval protocol); liked_*: every item "
            "rated >= 4 after the cut-off; history items excluded from every list",
            "blend": "log P(like) + w * log softmax of the retrieval scores over the candidates; w from "
            f"{list(blend_weights)} with the best validation {select} (validation users, likes before the "
            "test cut-off)",
        },
    }
