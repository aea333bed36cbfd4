"""Places kept for cold items in a top-K list (the cold-start share of TIGER, Rajput et al. 2023).

A model trained only on interactions with warm items scores items it never trained on low, whatever their
content, so a plain top-K list almost never shows them. With a share e, the j-th best cold item is put at position
ceil(j / e) and warm items fill the other places, each group in its own score order: every prefix of the list
(top-5, top-10, ...) then holds the same share of cold items.
"""

from __future__ import annotations

import math

import torch


def cold_count(share: float, k: int) -> int:
    """How many of k places go to cold items."""
    return int(share * k + 1e-9)


def keep_cold_places(
    warm_items: torch.Tensor,
    warm_scores: torch.Tensor,
    cold_items: torch.Tensor,
    cold_scores: torch.Tensor,
    share: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, k - c] warm and [B, c] cold lists, best first -> [B, k] items and scores, cold ones at their places."""
    b, n_cold = cold_items.shape
    k = warm_items.shape[1] + n_cold
    cold_place = torch.zeros(k, dtype=torch.bool)
    cold_place[[math.ceil(j / share - 1e-9) - 1 for j in range(1, n_cold + 1)]] = True
    items = torch.empty(b, k, dtype=warm_items.dtype)
    scores = torch.empty(b, k, dtype=warm_scores.dtype)
    items[:, cold_place], items[:, ~cold_place] = cold_items, warm_items
    scores[:, cold_place], scores[:, ~cold_place] = cold_scores, warm_scores
    return items, scores
