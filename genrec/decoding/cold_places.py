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


def cold_place_mask(share: float, k: int) -> torch.Tensor:
    """[k] True at the places of a top-k list kept for cold items: the j-th at ceil(j / share)."""
    place = torch.zeros(k, dtype=torch.bool)
    place[[math.ceil(j / share - 1e-9) - 1 for j in range(1, cold_count(share, k) + 1)]] = True
    return place


def keep_cold_places(
    warm_items: torch.Tensor,
    warm_scores: torch.Tensor,
    cold_items: torch.Tensor,
    cold_scores: torch.Tensor,
    share: float,
    k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warm and cold lists, best first ([B, *]; an entry with item 0 or score -inf is empty) -> [B, k] items and
    scores, cold ones at their places (`cold_place_mask`). `k` defaults to the two widths together.

    A group that runs short of its places gives them to the other (a user whose history excludes every cold
    item gets warm items there), so a row holds min(k, its non-empty entries) items, empty slots last."""
    if k is None:
        k = warm_items.shape[1] + cold_items.shape[1]
    cold_place = cold_place_mask(share, k)
    cold_place[cold_place.nonzero()[:, 0][cold_items.shape[1] :]] = False  # fewer cold items than places
    cold_place = cold_place.to(warm_items.device)
    n_cold = int(cold_place.sum())
    b = warm_items.shape[0]
    warm_ok = (warm_items > 0) & (warm_scores > float("-inf"))
    cold_ok = (cold_items > 0) & (cold_scores > float("-inf"))
    full = warm_items.shape[1] >= k - n_cold and warm_ok[:, : k - n_cold].all() and cold_ok[:, :n_cold].all()
    if full:  # every place filled by its own group
        items = warm_items.new_empty(b, k)
        scores = warm_scores.new_empty(b, k)
        items[:, cold_place], items[:, ~cold_place] = cold_items[:, :n_cold], warm_items[:, : k - n_cold]
        scores[:, cold_place], scores[:, ~cold_place] = cold_scores[:, :n_cold], warm_scores[:, : k - n_cold]
        return items, scores
    items = warm_items.new_zeros(b, k)
    scores = warm_scores.new_full((b, k), float("-inf"))
    for row in range(b):
        groups = [
            [(int(i), s) for i, s, ok in zip(warm_items[row], warm_scores[row], warm_ok[row]) if ok],
            [(int(i), s) for i, s, ok in zip(cold_items[row], cold_scores[row], cold_ok[row]) if ok],
        ]
        taken = [0, 0]
        for place in range(k):
            own = int(cold_place[place])
            pick = own if taken[own] < len(groups[own]) else 1 - own
            if taken[pick] >= len(groups[pick]):
                break
            items[row, place], scores[row, place] = groups[pick][taken[pick]]
            taken[pick] += 1
    return items, scores
