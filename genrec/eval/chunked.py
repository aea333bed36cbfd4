"""Full-catalogue ranking one item chunk at a time: memory O(batch x (K + chunk)), not O(batch x catalogue).

A model with `item_vectors` scores a chunk of items as query @ items[chunk]^T (plus its history offset on the
items of the input window), so no batch x catalogue matrix is ever held. For every chunk the sweep
- counts, per example, the items scored at least as high as the target (the pessimistic rank of
  `metrics.target_ranks`: ties count against the target, and a target scored -inf or NaN is a miss);
- merges the chunk's best K into a running top-K (the lists behind coverage and the list metrics), once as it
  is and once without the history's items (the history-excluded convention);
- reads the scores of the history's items (history excluded, the ones among the items ahead are not counted)
  and of any other items asked for (sampled negatives).

The target's score must be known before the first chunk is counted. It comes from a matmul of the same height
and depth (queries @ the targets' rows) and is checked against the target's own cell when its chunk comes: where
the two differ in the last bit (BLAS kernels may sum in another order for small shapes; at evaluation sizes the
values measured here were bitwise equal to the whole matrix's), the batch is counted again with the cell's value,
so ranks and lists always read the same scores.

A model with only `score` is ranked in one chunk holding its whole score matrix, as before. The same code runs
on any device: every tensor is made on the scores' device, and no shape depends on the data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from genrec.data.batching import HistoryBatch
from genrec.eval.metrics import MISS
from genrec.models.base import candidate_scores

# Cells of one chunk's score matrix (batch x chunk): 2^24 float32 scores = 64 MB, plus masks of a quarter of that.
CHUNK_CELLS = 2**24
NEG_INF = float("-inf")


def item_chunk(batch_size: int, n_items: int, cells: int = CHUNK_CELLS) -> int:
    """Items per chunk for `batch_size` histories: as many as `cells` allows, at least 1024."""
    return min(n_items + 1, max(1024, cells // max(batch_size, 1)))


def chunkable(model) -> bool:
    """Whether `model`'s full-catalogue scores are query @ item rows (`item_vectors`), so chunks can be scored."""
    return {"score", "item_vectors"} <= set(model.capabilities)


class ItemTable:
    """What chunks are scored against, read once per evaluation: the model's item vectors, its history offset,
    and whether every vector is finite (then no score can be NaN and the NaN clean-up pass is skipped)."""

    def __init__(self, model) -> None:
        self.vectors = model.item_vectors()
        self.offset = model.history_offset()
        self.finite = bool(torch.isfinite(self.vectors).all())


class CatalogueScores:
    """A batch's scores of every item (column 0 = padding), available chunk by chunk: `chunks()` yields
    (first item id, [B, c] float32 scores) with NaN and the padding column at -inf, as `candidate_scores` has them.
    `remove` takes items out of a chunk (in place where the chunk is a new tensor each time).

    `chunk=None` holds the model's whole `score` matrix as one chunk (any scoring model); an int scores `chunk`
    items at a time from the model's item vectors (needs `chunkable(model)`); `table` reuses an `ItemTable`."""

    def __init__(
        self, model, batch: HistoryBatch, chunk: int | None = None, table: ItemTable | None = None
    ) -> None:
        self.full = None
        if chunk is None or not chunkable(model):
            self.full = candidate_scores(model, batch)
            self.n = self.full.shape[1]
            self.chunk, self.device, self.finite = self.n, self.full.device, False
            return
        table = table or ItemTable(model)
        self.vectors, self.offset = table.vectors, table.offset
        self.n = len(self.vectors)  # n_items + 1: row 0 is padding
        self.query = model.query_vectors(batch)
        self.finite = table.finite and bool(torch.isfinite(self.query).all())
        self.window = batch.items
        self.chunk, self.device = chunk, self.query.device

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(start, scores [B, c]) of items start..start + c - 1."""
        if self.full is not None:
            yield 0, self.full
            return
        window = None
        if self.offset is not None:  # the learned offset of the items in the input window, once each
            window = _Places(_distinct(self.window), self.offset)
        for start in range(0, self.n, self.chunk):
            end = min(self.n, start + self.chunk)
            scores = (self.query @ self.vectors[start:end].t()).float()
            if window is not None:
                window.add_to(scores, start, end)
            if not self.finite:
                torch.nan_to_num_(scores, nan=NEG_INF, posinf=float("inf"), neginf=NEG_INF)
            if start == 0:
                scores[:, 0] = NEG_INF
            yield start, scores

    def remove(self, chunk: torch.Tensor, start: int, places: _Places) -> torch.Tensor:
        """`chunk` with the items of `places` at -inf (in place, but never in the whole matrix, which is reused)."""
        if chunk is self.full:
            chunk = chunk.clone()
        places.add_to(chunk, start, start + chunk.shape[1])
        if not self.finite:  # +inf - inf: an item scored +inf is removed too
            torch.nan_to_num_(chunk, nan=NEG_INF, posinf=float("inf"), neginf=NEG_INF)
        return chunk

    def of(self, items: torch.Tensor) -> torch.Tensor:
        """[B, m] scores of the given items by the chunks' arithmetic: one matmul of the queries with the rows of
        all B x m items, whose diagonal blocks are kept (the whole matrix's own cells with one chunk)."""
        if self.full is not None:
            return self.full.gather(1, items)
        b, m = items.shape
        rows = torch.arange(b, device=items.device)
        flat = (self.query @ self.vectors[items.reshape(-1)].t()).float()  # [B, B * m]
        scores = flat.view(b, b, m)[rows, rows]
        if self.offset is not None:
            in_window = (items[:, :, None] == self.window[:, None, :]).any(-1) & (items > 0)
            scores = torch.where(in_window, scores + self.offset, scores)
        scores = scores.masked_fill(scores.isnan() | (items == 0), NEG_INF)
        return scores


class _Places:
    """Per row, distinct item ids ([B, M], 0 = none) and a value added to their scores in any chunk: the history
    offset, or -inf to remove them. One scatter-add of B x M values per chunk, whatever the chunk's width."""

    def __init__(self, ids: torch.Tensor, value: float) -> None:
        self.ids, self.value = ids, value
        self.rows = torch.arange(len(ids), device=ids.device)[:, None].expand_as(ids)

    def add_to(self, scores: torch.Tensor, start: int, end: int) -> None:
        inside = (self.ids >= start) & (self.ids < end) & (self.ids > 0)
        cols = (self.ids - start).clamp(0, end - start - 1)
        # Ids outside the chunk add 0 to whichever cell they are clamped to; ids are distinct, so no cell gets
        # the value twice.
        values = torch.where(inside, self.value, 0.0).to(scores.dtype)
        scores.index_put_((self.rows, cols), values, accumulate=True)


def _distinct(ids: torch.Tensor) -> torch.Tensor:
    """[B, M] item ids -> the same rows sorted, each id once (repeats and padding set to 0)."""
    ids = ids.sort(1).values
    repeat = torch.cat([torch.zeros_like(ids[:, :1], dtype=torch.bool), ids[:, 1:] == ids[:, :-1]], 1)
    return ids.masked_fill(repeat, 0)


@dataclass
class Ranking:
    """One convention's result for a batch: ranks [B] (0-based, float64, `MISS`), top-K ids [B, K] (0 = no
    item; None unless asked) and their scores."""

    ranks: torch.Tensor
    top: torch.Tensor | None = None
    top_scores: torch.Tensor | None = None


class _TopK:
    """Running top-K over chunks: the best K of everything merged so far."""

    def __init__(self, k: int) -> None:
        self.k, self.values, self.ids = k, None, None

    def add(self, scores: torch.Tensor, start: int) -> None:
        best = torch.topk(scores, min(self.k, scores.shape[1]), dim=1)
        ids = best.indices + start
        if self.values is None:
            self.values, self.ids = best.values, ids
            return
        values = torch.cat([self.values, best.values], 1)
        merged = torch.topk(values, min(self.k, values.shape[1]), dim=1)
        self.ids = torch.cat([self.ids, ids], 1).gather(1, merged.indices)
        self.values = merged.values

    def lists(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Where fewer than K items are left, the -inf (excluded) ones that fill the list were not recommended.
        return torch.where(self.values > NEG_INF, self.ids, 0), self.values


def rank_catalogue(
    scores: CatalogueScores,
    targets: torch.Tensor,
    seen: torch.Tensor,
    k: int,
    conventions: tuple[str, ...] = ("filtered", "unfiltered"),
    lists: tuple[str, ...] = (),
    extra: torch.Tensor | None = None,
) -> tuple[dict[str, Ranking], torch.Tensor | None]:
    """Rank every example's target among all items, in each asked convention, from one sweep over the chunks.

    `targets` [B] item ids; `seen` [B, M] the history's item ids (0 = none), removed in `filtered`; `k` the list
    length of the conventions named in `lists`; `extra` [B, m] item ids whose unfiltered scores are returned too
    (sampled negatives). Returns ({convention: Ranking}, extra scores or None).

    History excluded, the items ahead of the target are those ahead of it anyway minus the distinct history items
    among them (their scores are collected on the way), so one count per chunk serves both conventions."""
    target_col = targets[:, None]
    in_history = (seen == target_col).any(1) & (targets > 0)
    history = _distinct(seen)
    guess = scores.of(target_col)[:, 0]
    exact, history_scores = guess.clone(), torch.full(history.shape, NEG_INF, device=history.device)
    collect = [(target_col, exact[:, None]), (history, history_scores)]
    extra_scores = None
    if extra is not None:
        extra_scores = torch.full(extra.shape, NEG_INF, device=extra.device)
        collect.append((extra, extra_scores))
    tops = {c: _TopK(k) for c in lists}
    removed = _Places(history, NEG_INF)
    ahead = _sweep(scores, guess, removed, tops, collect)
    # A target scored otherwise than in its own cell: the batch is counted again against the cell's value (all
    # rows, so that every chunk is the same matmul as before and gives the same scores).
    redo = (exact != guess) & ~(exact.isnan() & guess.isnan())
    if scores.full is None and bool(redo.any()):
        ahead = torch.where(redo, _sweep(scores, exact, removed), ahead)
    out = {}
    for name in conventions:
        t = exact
        count = ahead
        if name == "filtered":
            t = exact.masked_fill(in_history, NEG_INF)
            count = ahead - ((history_scores >= exact[:, None]) & (history > 0)).sum(1)
        ranked = t > NEG_INF  # false for -inf and NaN
        rank = torch.where(ranked, (count - 1).double(), MISS)
        top = tops[name].lists() if name in tops else (None, None)
        out[name] = Ranking(rank, *top)
    return out, extra_scores


def _sweep(
    scores: CatalogueScores,
    target_scores: torch.Tensor,
    removed: _Places,
    tops: dict | None = None,
    collect: list | None = None,
) -> torch.Tensor:
    """[B] items scored at least `target_scores` (int64), merging each chunk into the top-K lists of `tops`
    ({convention: _TopK}; `filtered` without the `removed` items) and writing the scores of the (ids [B, m],
    into [B, m]) pairs of `collect`."""
    tops, t = tops or {}, target_scores[:, None]
    ahead = torch.zeros(len(target_scores), dtype=torch.int64, device=target_scores.device)
    for start, chunk in scores.chunks():
        end = start + chunk.shape[1]
        for ids, into in collect or ():
            _collect(chunk, start, end, ids, into)
        ahead += (chunk >= t).sum(1, dtype=torch.int32)  # int32 sums run about twice as fast as bools'
        if "unfiltered" in tops:
            tops["unfiltered"].add(chunk, start)
        if "filtered" in tops:
            tops["filtered"].add(scores.remove(chunk, start, removed), start)
    return ahead


def _collect(chunk: torch.Tensor, start: int, end: int, ids: torch.Tensor, into: torch.Tensor) -> None:
    """Write the chunk's scores of `ids` ([B, m] item ids) that fall in start..end - 1 into `into` ([B, m])."""
    inside = (ids >= start) & (ids < end)
    found = chunk.gather(1, (ids - start).clamp(0, end - start - 1))
    into.copy_(torch.where(inside, found, into))


def top_k(scores: CatalogueScores, k: int, exclude: torch.Tensor | None = None):
    """Top-k (ids [B, k], scores [B, k]) of every item but `exclude` ([B, M] ids, 0 = none), chunk by chunk: the
    same list as `Recommender.recommend` gives (excluded items score -inf and come last when fewer than k are
    left)."""
    best = _TopK(k)
    removed = _Places(_distinct(exclude), NEG_INF) if exclude is not None else None
    for start, chunk in scores.chunks():
        best.add(chunk if removed is None else scores.remove(chunk, start, removed), start)
    return best.ids, best.values
