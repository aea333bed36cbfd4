"""Item-based k-nearest neighbours (Sarwar et al. 2001) with a recency weight for sequential data.

Similarity is cosine over the binary user-item matrix of the training split with a shrink term; each item keeps
its `neighbours` most similar items. A user's score for item j is sum_h w_h * sim(h, j) over history items h,
with w_h = recency_decay ** (steps from the end), so recent items can count more.
"""

from __future__ import annotations

import numpy as np
import torch

from genrec.config.models.itemknn import ItemKNNConfig
from genrec.data.batching import HistoryBatch
from genrec.data.split import Split
from genrec.models.base import Recommender, Resources, register


@register
class ItemKNN(Recommender):
    config_class = ItemKNNConfig

    def __init__(self, cfg: ItemKNNConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        k = min(cfg.neighbours, n_items)
        # Neighbour lists as a dense [I+1, k] table: safetensors-friendly and fast to gather.
        self.register_buffer("neighbour_ids", torch.zeros(n_items + 1, k, dtype=torch.long))
        self.register_buffer("neighbour_sims", torch.zeros(n_items + 1, k))

    @torch.no_grad()
    def prepare(self, split: Split, resources: Resources) -> dict:
        n = self.n_items + 1
        users = np.repeat(np.arange(len(split.train)), split.train.lengths())
        pairs = np.unique(np.stack([users, split.train.items]), axis=1)  # binary matrix: repeats count once
        xt = torch.sparse_coo_tensor(
            torch.from_numpy(pairs[::-1].copy()),
            torch.ones(pairs.shape[1]),
            (n, len(split.train)),
            check_invariants=True,
        ).coalesce()
        user_idx, item_idx = (torch.from_numpy(a) for a in pairs)
        norms = torch.from_numpy(np.bincount(pairs[1], minlength=n).astype(np.float32)).sqrt()
        k = self.neighbour_ids.shape[1]
        chunk = max(1, 2**25 // n)  # keeps each dense block near 128 MB
        for start in range(0, n, chunk):
            cols = torch.arange(start, min(n, start + chunk))
            block = torch.zeros(len(split.train), len(cols))  # the users x chunk slice of the binary matrix
            inside = (item_idx >= start) & (item_idx < start + len(cols))
            block[user_idx[inside], item_idx[inside] - start] = 1.0
            co = (xt @ block).t()  # [chunk, n] co-occurrence counts
            sim = co / (norms[cols, None] * norms[None, :] + self.cfg.shrink + 1e-12)
            sim[torch.arange(len(cols)), cols] = 0.0  # an item is not its own neighbour
            sim[:, 0] = 0.0
            top = torch.topk(sim, k, dim=1)
            self.neighbour_ids[cols] = top.indices
            self.neighbour_sims[cols] = top.values
        return {"neighbours": k}

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        hist = batch.items  # [B, L], right-aligned
        steps_from_end = torch.arange(hist.shape[1] - 1, -1, -1, dtype=torch.float32, device=hist.device)
        weights = (self.cfg.recency_decay**steps_from_end)[None, :] * (hist > 0)
        ids = self.neighbour_ids[hist].flatten(1)  # [B, L*k]
        sims = (self.neighbour_sims[hist] * weights[..., None]).flatten(1)
        scores = sims.new_zeros(hist.shape[0], self.n_items + 1)
        return scores.scatter_add_(1, ids, sims)
