"""Matrix factorisation trained with BPR (Rendle et al. 2009): one uniform negative per positive pair.

Users seen in training have their own factor; a history from an unknown user is folded in as the mean of its
item factors, so `recommend --history` works too.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from genrec.config.models.mf import MFConfig
from genrec.data.batching import HistoryBatch, PairBatch
from genrec.data.split import Split
from genrec.models.base import Recommender, register


@register
class MF(Recommender):
    config_class = MFConfig
    trainable = True
    capabilities = frozenset({"score", "item_vectors"})

    def __init__(self, cfg: MFConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        self.user_emb = nn.Embedding(n_users, cfg.dim)
        self.item_emb = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        self.item_bias = nn.Embedding(n_items + 1, 1, padding_idx=0)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)

    def training_batches(self, split: Split, rng: np.random.Generator, batch_size: int) -> Iterator:
        users = np.repeat(np.arange(len(split.train)), split.train.lengths())
        items = split.train.items
        order = rng.permutation(len(items))
        negatives = rng.integers(1, self.n_items + 1, size=len(items))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield PairBatch(
                torch.from_numpy(users[idx]),
                torch.from_numpy(items[idx]),
                torch.from_numpy(negatives[idx]),
            )

    def pair_scores(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(score(user, positive) - score(user, negative) [B], the batch's L2 penalty (scalar)) for BPR."""
        users, pos, neg = batch
        u = self.user_emb(users)
        p, n = self.item_emb(pos), self.item_emb(neg)
        diff = (u * (p - n)).sum(-1) + (self.item_bias(pos) - self.item_bias(neg)).squeeze(-1)
        reg = self.cfg.l2 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(users)
        return diff, reg

    def user_vectors(self, batch: HistoryBatch) -> torch.Tensor:
        # Padding (id 0) must not count: its row is initialised like any other and the fold is a mean.
        real = (batch.items > 0)[..., None]
        folded = (self.item_emb(batch.items) * real).sum(1) / batch.lengths.clamp(min=1)[:, None]
        if batch.users is None:
            return folded
        known = (batch.users >= 0) & (batch.users < self.n_users)
        own = self.user_emb(batch.users.clamp(0, self.n_users - 1))
        return torch.where(known[:, None], own, folded)

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        return self.user_vectors(batch) @ self.item_emb.weight.t() + self.item_bias.weight.t()

    def item_vectors(self) -> torch.Tensor:
        """[n_items + 1, d + 1]: the item table with the item bias as one more column."""
        return torch.cat([self.item_emb.weight, self.item_bias.weight], 1).detach().contiguous()

    def query_vectors(self, batch: HistoryBatch) -> torch.Tensor:
        """[B, d + 1]: the user vector with a constant 1 that meets the item bias."""
        u = self.user_vectors(batch)
        return torch.cat([u, u.new_ones(len(u), 1)], 1)

    def history_offset(self) -> float | None:
        return None
