"""Approximate top-K by inner product: one FAISS HNSW index over item vectors, for models and the server.

Item vectors come as [n_items + 1, d] with row 0 the padding item, which is left out of the graph (FAISS row r is
item r + 1). Excluded items are dropped after the search, so the index is asked for k + (excluded per row)
neighbours; a row with fewer than k allowed items found is padded with id 0 and score -inf.

The index lives in host memory (faiss-cpu), deliberately: queries are copied to the host for the search and the
results come back on the queries' device.
"""

from __future__ import annotations

import numpy as np
import torch


class HNSWIndex:
    def __init__(
        self, vectors: torch.Tensor, m: int = 32, ef_construction: int = 80, ef_search: int = 128
    ) -> None:
        """`vectors` [n_items + 1, d] (row 0 padding); `m` graph degree; `ef_*` beam widths of build and search."""
        import faiss

        self.faiss = faiss
        rows = vectors[1:].detach().float().cpu().contiguous().numpy()
        self.index = faiss.IndexHNSWFlat(rows.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.add(rows)
        self.ef_search = ef_search
        self.n = len(rows)

    def search(self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None = None):
        """Top-k ids [B, k'] (k' = min(k, n_items)) and scores [B, k'] for queries [B, d]. `exclude` [B, M] item
        ids to leave out (0 = none). The search beam is per call, so concurrent searches are safe."""
        device = queries.device
        exclude = exclude.cpu() if exclude is not None else None
        extra = 0 if exclude is None or not exclude.numel() else int((exclude > 0).sum(1).max())
        want = min(self.n, k + extra)
        params = self.faiss.SearchParametersHNSW(efSearch=max(self.ef_search, want))
        host = queries.detach().float().cpu().contiguous().numpy()
        scores, idx = self.index.search(host, want, params=params)
        ids, scores = torch.from_numpy(idx + 1).long(), torch.from_numpy(scores)
        scores = scores.masked_fill(ids <= 0, float("-inf"))  # faiss pads missing neighbours with -1
        if exclude is not None:
            scores = scores.masked_fill((ids[:, :, None] == exclude[:, None, :]).any(-1), float("-inf"))
        top = torch.topk(scores, min(k, want), dim=1)
        ids = ids.gather(1, top.indices).masked_fill(torch.isinf(top.values), 0)
        return ids.to(device), top.values.to(device)


def single_query(index: HNSWIndex, query: torch.Tensor, k: int, exclude: np.ndarray | None):
    """One query [d]: (ids, scores) numpy arrays of the allowed items found, best first (at most k)."""
    ex = (
        None
        if exclude is None or not len(exclude)
        else torch.as_tensor(np.asarray(exclude, dtype=np.int64))[None]
    )
    ids, scores = index.search(query[None], k, ex)
    keep = ids[0] > 0
    return ids[0][keep].numpy(), scores[0][keep].numpy().astype(np.float32)
