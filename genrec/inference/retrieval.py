"""Top-K retrieval over the catalogue: exact (one matmul + topk, as the evaluator) or FAISS HNSW (approximate).

Models with the `item_vectors` capability score an item as <query, item row> (next-item models: their output
table; MF: its item table plus the item bias as one extra column). Other models (popularity, itemknn, TIGER)
have no item vectors and are served by their own `score` or `recommend`.
"""

from __future__ import annotations

import numpy as np
import torch

from genrec.decoding.ann import HNSWIndex, single_query


def item_matrix(model) -> torch.Tensor | None:
    """[n_items + 1, d] rows such that score(item) = query @ row; row 0 is padding. None without item vectors."""
    return model.item_vectors() if model.can("item_vectors") else None


def history_offset(model) -> float | None:
    """The learned logit offset a model adds to the items in its input window, if it has one."""
    return model.history_offset() if model.can("item_vectors") else None


def search_with_history_offset(backend, items, query, k, exclude, window_items, offset):
    """Top-k as `backend.search` would give it if the items in `window_items` scored `offset` more.

    The backend's candidates are widened by the window's size, their window items shifted, and the window items
    the backend did not return scored exactly (with a positive offset they may belong in the top-k).
    """
    ids, scores = backend.search(query, k + len(window_items), exclude)
    window = np.unique(window_items[window_items > 0])
    if exclude is not None:
        window = np.setdiff1d(window, exclude)
    missing = np.setdiff1d(window, ids)
    ids = np.concatenate([ids, missing])
    exact = items[torch.from_numpy(missing).to(items.device)] @ query
    scores = np.concatenate([scores, exact.float().cpu().numpy()]).astype(np.float32)
    scores[np.isin(ids, window)] += offset
    top = np.argsort(-scores, kind="stable")[:k]
    return ids[top], scores[top]


def topk_from_scores(scores: torch.Tensor, k: int, exclude: np.ndarray | None):
    """scores: [n_items + 1] (column 0 padding). Exact top-k ids and scores, excluded items and items without a
    finite score left out (NaN would otherwise take the first places of top-k)."""
    scores = scores.float().clone()
    scores.masked_fill_(scores.isnan(), float("-inf"))
    scores[0] = float("-inf")
    if exclude is not None and len(exclude):
        scores[torch.from_numpy(np.asarray(exclude, dtype=np.int64)).to(scores.device)] = float("-inf")
    top = torch.topk(scores, min(k, len(scores) - 1))
    ids, values = top.indices.cpu(), top.values.cpu()
    keep = torch.isfinite(values)
    return ids[keep].numpy(), values[keep].numpy()


class ExactTopK:
    """Every item scored; the same arithmetic as `Recommender.recommend`, so the same ids and scores."""

    name = "exact"

    def __init__(self, items: torch.Tensor) -> None:
        self.items = items

    def search(self, query: torch.Tensor, k: int, exclude: np.ndarray | None):
        return topk_from_scores((query[None] @ self.items.t())[0], k, exclude)


class FaissTopK:
    """Approximate inner-product search with a FAISS HNSW graph over the item rows (`decoding.ann`)."""

    name = "faiss"

    def __init__(self, items: torch.Tensor, m: int = 32, ef_search: int = 128) -> None:
        import faiss

        faiss.omp_set_num_threads(1)  # one query at a time: threads only add overhead
        self.index = HNSWIndex(items.cpu(), m, 80, ef_search)  # FAISS searches on the host

    def search(self, query: torch.Tensor, k: int, exclude: np.ndarray | None):
        return single_query(self.index, query.cpu(), k, exclude)


def make_backend(name: str, items: torch.Tensor):
    if name == "exact":
        return ExactTopK(items)
    if name == "faiss":
        return FaissTopK(items)
    raise ValueError(f"unknown retrieval backend {name!r} (exact, faiss)")
