"""Cascade: a retrieval run's top-K candidates re-ranked by a ranking run, against retrieval alone.

Both runs must use the same data and time cut-offs (retrieval: `data.split=temporal`, the ranker's default
quantiles). For every test user of the retrieval split (history = events before the test cut-off):
- retrieval alone: the retrieval model's top `k_final` (history items excluded);
- cascade: the retrieval model's top `k_retrieve`, scored by the ranker (history of (item, rating) events
  before the cut-off, candidates at the cut-off time), top `k_final` by like-logit.
Both lists are judged on the same users against (a) the retrieval protocol's target, the user's first item after
the cut-off (HR@K, NDCG@K), and (b) every item the user rated after the cut-off and liked (rating >= 4):
Precision@K and NDCG@K with binary gains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genrec.inference.mfalcon import make_batch


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


@torch.no_grad()
def cascade(retrieval_dir: Path, ranker_dir: Path, k_retrieve: int = 200, k_final: int = 10) -> dict:
    from genrec.rank_runs import load_ranker
    from genrec.runs import load_run, make_split, prepare_dataset

    run = load_run(retrieval_dir)
    if run.cfg.data.split != "temporal":
        raise ValueError("the cascade needs a retrieval run trained with data.split=temporal")
    ds = prepare_dataset(run.cfg.data)
    split = make_split(ds, run.cfg.data, run.items["item_id"].to_numpy(), run.users["user_id"].to_numpy())
    rcfg, ranker, data = load_ranker(ranker_dir)
    cut = data.details["test_cutoff"]
    if split.details["test_cutoff"] != cut:
        raise ValueError(f"time cut-offs differ: retrieval {split.details['test_cutoff']} vs ranker {cut}")
    # Retrieval index -> ranker index, through the raw ids.
    r_items = run.items["item_id"].to_numpy()
    to_rank = data.seq.item_index(r_items)  # [n_retrieval_items], 0 = unknown to the ranker
    rank_user = {int(u): i for i, u in enumerate(data.seq.user_ids)}
    test = split.test
    seq = data.seq
    per: dict[str, list[dict]] = {"retrieval": [], "cascade": []}
    for row in range(len(test)):
        u_internal = int(test.users[row])
        raw_user = int(split.sequences.user_ids[u_internal])
        ru = rank_user.get(raw_user)
        if ru is None:
            continue
        h = test.history.items[test.history.offsets[row] : test.history.offsets[row + 1]]
        ht = test.history.timestamps[test.history.offsets[row] : test.history.offsets[row + 1]]
        ids, _ = run.recommend(h, k_retrieve, exclude_seen=True, user=u_internal, timestamps=ht)
        target_raw = int(r_items[test.targets[row] - 1])
        # The ranker's view of the same user: events before the cut-off, and the liked items after it.
        start, end = seq.offsets[ru], seq.offsets[ru + 1]
        before = int(start + (seq.timestamps[start:end] < cut).sum())
        after = np.arange(before, end)
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
        logits = ranker.logits(batch)[0].numpy()
        raw_ids = r_items[ids - 1]
        reranked = np.concatenate([raw_ids[known][np.argsort(-logits, kind="stable")], raw_ids[~known]])
        per["retrieval"].append(_list_metrics(raw_ids, target_raw, liked, k_final))
        per["cascade"].append(_list_metrics(reranked, target_raw, liked, k_final))
    out = {}
    for name, rows in per.items():
        keys = rows[0].keys()
        out[name] = {k: round(float(np.nanmean([r[k] for r in rows])), 5) for k in keys}
        out[name]["users"] = len(rows)
    out["protocol"] = {
        "retrieval_run": str(retrieval_dir),
        "ranker_run": str(ranker_dir),
        "ranker": rcfg.model.name,
        "k_retrieve": k_retrieve,
        "k_final": k_final,
        "test_cutoff": int(cut),
        "users": "test users of the retrieval temporal split known to the ranker (history before the cut-off)",
        "judged_against": "hr/ndcg: the first item after the cut-off (retrieval protocol); liked_*: every item "
        "rated >= 4 after the cut-off; history items excluded from both lists",
    }
    return out
