"""Ranking metrics from the rank of each example's single target (0 = first place).

With one target per example Recall@K equals HR@K; NDCG@K = 1 / log2(rank + 2) when rank < K; MRR = 1 / (rank + 1)
over the full ranking (over the generated list for list-generating models).

A target that is not ranked at all is a miss at every K, however large, with reciprocal rank 0: its rank is
`MISS` (+inf), never a number such as the catalogue size, which a K above it would count as a hit. That holds
for a target the protocol removed (history excluded, score -inf), a target whose score is NaN, the padding id 0,
and a target missing from a generated list.
"""

from __future__ import annotations

import torch

MISS = float("inf")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B, N] scores, [B] target columns -> [B] float64 0-based ranks, `MISS` for a target scored -inf or NaN.

    Ties count against the target (pessimistic), so a model that gives every item the same score ranks the
    target last, never first. Another column's NaN score is never ahead of the target (NaN compares false)."""
    target_scores = scores.gather(1, targets[:, None])
    ahead = (scores >= target_scores).sum(1, dtype=torch.int64) - 1
    ranked = target_scores[:, 0] > float("-inf")  # false for -inf and for NaN
    return torch.where(ranked, ahead.double(), MISS)


def compact_lists(ids: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B, L] generated lists -> [B, L]: each row's entries that count, in order, then 0s.

    An entry counts when it is a real item id (> 0), `valid` says so (e.g. a finite score, not excluded) and no
    earlier entry of the row that counts has the same id: dead slots, excluded items and repeats take no place."""
    keep = ids > 0 if valid is None else valid & (ids > 0)
    length = ids.shape[1]
    earlier = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril(-1)
    keep = keep & ~((ids[:, :, None] == ids[:, None, :]) & earlier & keep[:, None, :]).any(-1)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    return torch.where(keep, ids, 0).gather(1, order)


def ranks_from_lists(top_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B, L] lists (as `compact_lists` returns them: 0 = no item), [B] targets -> [B] float64 0-based rank of
    each target in its list, `MISS` when it is not there (a target 0 never matches an empty slot)."""
    hit = (top_ids == targets[:, None]) & (top_ids > 0)
    pos = hit.to(torch.int8).argmax(1)
    return torch.where(hit.any(1), pos.double(), MISS)


class MetricAccumulator:
    """Sums per-example metrics and catalogue coverage over batches (coverage only when top-K lists are given)."""

    def __init__(self, ks: list[int], n_items: int) -> None:
        self.ks = ks
        self.n_items = n_items
        self.count = 0
        self.sums: dict[str, float] = {}
        self.covered = {k: torch.zeros(n_items + 1, dtype=torch.bool) for k in ks}
        self.has_lists = False

    def add(self, ranks: torch.Tensor, top_ids: torch.Tensor | None = None) -> None:
        """`ranks`: [B] 0-based ranks (`MISS` = not ranked); `top_ids`: [B, L] lists best first, 0 = no item.
        Either may be on any device (they are summed on the host)."""
        ranks = ranks.double().cpu()
        top_ids = top_ids.cpu() if top_ids is not None else None
        if (ranks < 0).any() or ranks.isnan().any():
            raise ValueError("ranks must be >= 0 (MISS for a target that is not ranked)")
        self.count += len(ranks)
        values = {"mrr": (1.0 / (ranks + 1)).sum()}
        self.has_lists = self.has_lists or top_ids is not None
        for k in self.ks:
            hit = ranks < k
            values[f"recall@{k}"] = hit.sum()
            values[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 2), 0.0).sum()
            if top_ids is not None:
                self.covered[k][top_ids[:, :k].flatten()] = True
        for name, v in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(v)

    def result(self) -> dict[str, float]:
        n = max(self.count, 1)
        out: dict[str, float] = {}
        for k in self.ks:
            out[f"recall@{k}"] = self.sums.get(f"recall@{k}", 0.0) / n
            out[f"hr@{k}"] = out[f"recall@{k}"]
            out[f"ndcg@{k}"] = self.sums.get(f"ndcg@{k}", 0.0) / n
        out["mrr"] = self.sums.get("mrr", 0.0) / n
        for k in self.ks if self.has_lists else []:
            covered = self.covered[k].clone()
            covered[0] = False
            out[f"coverage@{k}"] = float(covered.sum()) / self.n_items
        out["examples"] = self.count
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}
