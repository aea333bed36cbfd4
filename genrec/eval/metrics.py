"""Ranking metrics from the rank of each example's single target (0 = first place).

With one target per example Recall@K equals HR@K; NDCG@K = 1 / log2(rank + 2) when rank < K; MRR = 1 / (rank + 1)
over the full ranking (over the generated list for list-generating models, 0 when the target is missing).
"""

from __future__ import annotations

import torch


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all columns. Ties count against the target (pessimistic), so a model
    that gives every item the same score ranks the target last, never first."""
    target_scores = scores.gather(1, targets[:, None])
    return (scores >= target_scores).sum(1, dtype=torch.int32).long() - 1


def ranks_from_lists(top_ids: torch.Tensor, targets: torch.Tensor, missing_rank: int) -> torch.Tensor:
    """Rank of each target in a generated list; `missing_rank` when it is not there."""
    hit = top_ids == targets[:, None]
    pos = hit.float().argmax(1)
    return torch.where(hit.any(1), pos, torch.full_like(pos, missing_rank))


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
        ranks = ranks.double()
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
