"""KuaiFormer-style retrieval (Liu et al. 2024, https://arxiv.org/abs/2411.10057): several interests per user, long
histories compressed by age.

The history (at most `max_len` events) becomes tokens: the newest `recent` events stay one token each; older events
are mean-pooled into groups whose size doubles with age (`tier_groups` groups of 2 events, then of 4, 8, ...), each
token tagged with its tier. `interests` learned query tokens follow the history; a transformer (bidirectional over
the history, padding masked) reads them all, and the query tokens' outputs are the user's interest vectors.
An item's score is the maximum over interests of interest . item. Training predicts, at a few random cut points
of each user's training sequence (`cuts_per_user` per epoch, the newest always among them), the next item with the
interest that scores it highest (the label-aware hard choice of multi-interest retrievers), under the usual
next-item objective (`train.objective`).

Deviations from the paper: its groups are compressed by a small bidirectional transformer each, here by a mean
(plus a learned tier embedding); its in-batch softmax with logQ correction is our `sampled_softmax`, the default is
the full softmax. `compress: false` keeps every event raw (the uncompressed reference). Capabilities: `score` and
`log_likelihood`, no `item_vectors` (a max over several queries is not one dot product).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from genrec.config.models.kuaiformer import KuaiFormerConfig
from genrec.data.batching import HistoryBatch, SequenceBatch
from genrec.data.split import Split
from genrec.models.base import register
from genrec.models.next_item import NextItemModel, NextItemOutputs, make_item_tables
from genrec.nn.transformer import TransformerBlock


def group_index(max_len: int, recent: int, tier_groups: int, compress: bool) -> tuple[np.ndarray, np.ndarray]:
    """For right-aligned positions 0..max_len-1 (max_len - 1 = newest): the token each position is pooled into
    (tokens numbered oldest first) and each token's tier (0 = raw recent event, t = groups of 2^t events)."""
    token_of_age, tiers = [], []  # age 0 = newest event
    age, token = 0, 0
    while age < max_len:
        if not compress or age < recent:
            size, tier = 1, 0
        else:
            tier = 1 + (token - recent) // tier_groups if compress else 0
            size = 2**tier
        token_of_age += [token] * min(size, max_len - age)
        tiers.append(tier)
        age += size
        token += 1
    n = token
    group = (n - 1 - np.array(token_of_age))[::-1].copy()  # by position, oldest token = 0
    return group, np.array(tiers[::-1])


@register
class KuaiFormer(NextItemModel):
    config_class = KuaiFormerConfig
    capabilities = frozenset({"score", "log_likelihood"})

    def __init__(self, cfg: KuaiFormerConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        make_item_tables(self, n_items, cfg.dim)
        group, tiers = group_index(cfg.max_len, cfg.recent, cfg.tier_groups, cfg.compress)
        self.register_buffer("group", torch.from_numpy(group).long(), persistent=False)
        self.register_buffer("tiers", torch.from_numpy(tiers).long(), persistent=False)
        # The group layout also on the host, deliberately: which tokens a batch width spans is read without a
        # device-to-host copy (the buffer's copy is what indexes tensors on the model's device).
        self._group_host = group
        self.n_tokens = len(tiers)
        self.tier_emb = nn.Embedding(int(tiers.max()) + 1, cfg.dim)
        self.pos_emb = nn.Embedding(self.n_tokens, cfg.dim)
        self.queries = nn.Parameter(torch.randn(cfg.interests, cfg.dim) * 0.02)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.heads, cfg.dropout, cfg.ffn_mult) for _ in range(cfg.layers)
        )
        self.final_norm = nn.LayerNorm(cfg.dim)

    def tokens(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L] right-aligned items -> tokens [B, T, d] and their validity [B, T] (a group with no real event
        is padding); T = tokens the newest L positions fall into."""
        length = items.shape[1]
        first = int(self._group_host[-length])
        n = int(self._group_host[-1]) - first + 1
        group = self.group[-length:] - first
        real = (items > 0).to(self.item_emb.weight.dtype)
        x = self.item_emb(items) * real[..., None]
        pooled = x.new_zeros(items.shape[0], n, x.shape[-1]).index_add_(1, group, x)
        count = real.new_zeros(items.shape[0], n).index_add_(1, group, real)
        tokens = pooled / count.clamp(min=1)[..., None]
        tokens = tokens + self.tier_emb(self.tiers[first:]) + self.pos_emb.weight[first:]
        return tokens, count > 0

    def interests(self, items: torch.Tensor) -> torch.Tensor:
        """[B, L] history -> [B, K, d] projected interest vectors."""
        tokens, valid = self.tokens(items)
        b = items.shape[0]
        k = self.cfg.interests
        x = torch.cat([tokens * self.cfg.dim**0.5, self.queries.expand(b, -1, -1)], 1)
        x = self.dropout(x)
        valid = torch.cat([valid, valid.new_ones(b, k)], 1)
        eye = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
        mask = valid[:, None, None, :] | eye  # every token reads every real token; none is left without one
        for block in self.blocks:
            x = block(x, mask)
        return self._project(self.final_norm(x[:, -k:]))

    def training_batches(self, split: Split, rng: np.random.Generator, batch_size: int) -> Iterator:
        """[B, max_len + 1] windows ending at random cut points (the last column is the target)."""
        train = split.train
        lengths = train.lengths()
        users = np.flatnonzero(lengths >= 2)
        cuts = []
        for u in users:
            start, n = train.offsets[u], lengths[u]
            picks = rng.choice(np.arange(1, n - 1), min(self.cfg.cuts_per_user - 1, n - 2), replace=False)
            cuts += [start + t for t in (n - 1, *picks.tolist())]
        cuts = np.array(cuts)
        owner = np.repeat(users, [1 + min(self.cfg.cuts_per_user - 1, lengths[u] - 2) for u in users])
        width = self.cfg.max_len + 1
        idx = cuts[:, None] - width + 1 + np.arange(width)[None, :]
        windows = np.where(idx >= train.offsets[owner][:, None], train.items[np.clip(idx, 0, None)], 0)
        order = rng.permutation(len(windows))
        for i in range(0, len(order), batch_size):
            yield SequenceBatch(torch.from_numpy(windows[order[i : i + batch_size]]).long())

    def next_item_outputs(self, batch) -> NextItemOutputs:
        items, _ = batch
        inputs, targets = items[:, :-1], items[:, -1]
        interests = self.interests(inputs)  # [B, K, d]
        weight = self.output_weight()
        with torch.no_grad():  # the interest that scores the target highest learns it
            best = (interests * weight[targets][:, None, :]).sum(-1).argmax(1)
        query = interests[torch.arange(len(items)), best]
        return NextItemOutputs(query, targets, weight, query)

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        """[B, n_items + 1]: each item's best interest's logit."""
        return (self.interests(batch.items) @ self.output_weight().t()).amax(1)
