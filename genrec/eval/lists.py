"""List-level metrics of the top-K lists, beside the accuracy metrics: what users thought of what was shown.

Computed over each example's top-K list in the headline convention (history excluded unless
`eval.exclude_history: false`), for any model (scored or generated lists; only real, distinct items count).
K = 10 (`LIST_K`), or the largest `eval.ks` below it. With explicit ratings in the data:
- `liked_precision@K`: among the top-K items that the user rated after the example's cut-off (in the
  evaluated period: validation examples look at the events before the test history starts, test examples at
  every later event), the share rated >= `like` (4 on a 1-5 scale). Pooled over all examples: sum of liked
  top-K items / sum of rated top-K items (a user's first rating of an item counts);
- `disliked_share@K`: the same with rated <= `dislike` (2);
- `rated@K`: mean number of top-K items per example that the user rated after the cut-off (the denominator
  above, per example), so that a share over few rated items is read as such;
With item categories (genres):
- `ild@K` (intra-list diversity): mean over lists of the mean pairwise Jaccard distance of the items' genre
  sets (items without genres are left out; lists with fewer than 2 such items are skipped);
Always:
- `popular_share@K`: share of top-K slots taken by the most popular 1% of items (by training interactions);
- `reward@K`: with a reward model (`genrec.alignment.reward`), the mean reward of the top-K lists.
Catalogue coverage is `coverage@K` of `genrec.eval.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from genrec.data.split import EvalSet, Split

LIST_K = 10
POPULAR_SHARE = 0.01
PROTOCOL = (
    "over each top-K list of the headline convention: liked_precision@K / disliked_share@K = share of the "
    "top-K items the user rated in the evaluated period (validation: before the test period; test: after the "
    "test cut-off) that were rated >= 4 / <= 2, pooled over examples (first rating of an item); rated@K = mean "
    "number of such items per list; ild@K = mean pairwise Jaccard distance of the items' genre sets; "
    "popular_share@K = share of slots taken by the 1% most-trained items; reward@K = mean reward-model score"
)


@dataclass
class FutureRatings:
    """Per example, the items the user rated in the evaluated period and their ratings (CSR over examples)."""

    offsets: np.ndarray
    items: np.ndarray
    ratings: np.ndarray

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.items[self.offsets[i] : self.offsets[i + 1]], self.ratings[
            self.offsets[i] : self.offsets[i + 1]
        ]


@dataclass
class ListContext:
    """What the list metrics read besides the lists. `item_genres`: per internal item (index 0 unused) a
    frozenset of genre names, or None; `popular`: [n_items + 1] bool, the most popular 1%; `reward`:
    (users [B], history lengths [B], lists [B, 1, K]) -> [B, 1] rewards, or None."""

    item_genres: list[frozenset] | None
    popular: np.ndarray
    reward: Callable | None = None
    like: float = 4.0
    dislike: float = 2.0


def future_ratings(split: Split, which: str) -> FutureRatings | None:
    """The rated items of each example of `split.<which>` after its history: test examples, every later event of
    the user; validation examples, the events before the user's test history ends (so that validation never
    reads the test period). None when the data has no ratings. Needs histories that are prefixes of the user's
    sequence (both built-in splits)."""
    seq = split.sequences
    if seq.ratings is None:
        return None
    examples: EvalSet = getattr(split, which)
    lengths = seq.lengths()
    end = lengths.copy()
    if which == "valid":
        test = split.test
        end[test.users] = np.diff(test.history.offsets)
    hist = np.diff(examples.history.offsets)
    lo = seq.offsets[examples.users] + hist
    hi = seq.offsets[examples.users] + np.maximum(end[examples.users], hist)
    counts = hi - lo
    offsets = np.zeros(len(examples) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat = np.repeat(lo - offsets[:-1], counts) + np.arange(offsets[-1])
    return FutureRatings(offsets, seq.items[flat], seq.ratings[flat])


def popular_items(train_items: np.ndarray, n_items: int, share: float = POPULAR_SHARE) -> np.ndarray:
    """[n_items + 1] bool: the ceil(share * n_items) items with the most training interactions (ties by id)."""
    counts = np.bincount(train_items, minlength=n_items + 1)[: n_items + 1].astype(np.int64)
    counts[0] = -1
    n = max(1, int(np.ceil(share * n_items)))
    top = np.argsort(-counts, kind="stable")[:n]
    out = np.zeros(n_items + 1, dtype=bool)
    out[top] = True
    return out


def genre_sets(categories: list) -> list[frozenset]:
    """Per internal item 1..n (index 0: empty), its categories as a frozenset, from an items table's column."""
    return [frozenset()] + [frozenset(c or []) for c in categories]


class ListAccumulator:
    """Sums the list metrics over batches of top-K lists."""

    def __init__(self, ctx: ListContext, future: FutureRatings | None, k: int) -> None:
        self.ctx, self.future, self.k = ctx, future, k
        self.n = 0
        self.rated = self.liked = self.disliked = 0
        self.slots = self.popular = 0
        self.ild_sum, self.ild_n = 0.0, 0
        self.reward_sum = 0.0

    def add(self, rows: np.ndarray, users: np.ndarray, hist_len: np.ndarray, lists: torch.Tensor) -> None:
        """`rows`: example indices; `users`, `hist_len`: their users and history lengths; `lists`: [B, L] top
        lists best first, 0 = no item."""
        top = lists[:, : self.k].numpy()
        self.n += len(top)
        real = top > 0
        self.slots += int(real.sum())
        self.popular += int((self.ctx.popular[top] & real).sum())
        for j, row in enumerate(rows):
            items = top[j][real[j]]
            if self.future is not None:
                fut_items, fut_ratings = self.future.row(int(row))
                if len(fut_items):
                    # the first rating of each item in the period
                    uniq, first = np.unique(fut_items, return_index=True)
                    hit = np.isin(uniq, items)
                    r = fut_ratings[first[hit]]
                    self.rated += len(r)
                    self.liked += int((r >= self.ctx.like).sum())
                    self.disliked += int((r <= self.ctx.dislike).sum())
            if self.ctx.item_genres is not None:
                sets = [self.ctx.item_genres[i] for i in items.tolist() if self.ctx.item_genres[i]]
                if len(sets) >= 2:
                    d = [1 - len(a & b) / len(a | b) for x, a in enumerate(sets) for b in sets[x + 1 :]]
                    self.ild_sum += float(np.mean(d))
                    self.ild_n += 1
        if self.ctx.reward is not None:
            r = self.ctx.reward(users, hist_len, torch.from_numpy(top)[:, None, :])
            self.reward_sum += float(r.sum())

    def result(self) -> dict[str, float]:
        k, out = self.k, {}
        if self.future is not None:
            nan = float("nan")
            out[f"liked_precision@{k}"] = self.liked / self.rated if self.rated else nan
            out[f"disliked_share@{k}"] = self.disliked / self.rated if self.rated else nan
            out[f"rated@{k}"] = self.rated / max(1, self.n)
        if self.ctx.item_genres is not None:
            out[f"ild@{k}"] = self.ild_sum / self.ild_n if self.ild_n else float("nan")
        out[f"popular_share@{k}"] = self.popular / max(1, self.slots)
        if self.ctx.reward is not None:
            out[f"reward@{k}"] = self.reward_sum / max(1, self.n)
        return {name: round(v, 6) for name, v in out.items()}
