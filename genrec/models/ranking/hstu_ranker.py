"""HSTU generative ranker (Zhai et al. 2024): interleaved item and action tokens, target-aware.

A history of events (i_1, a_1), ..., (i_L, a_L) becomes the sequence i_1 a_1 i_2 a_2 ... i_L a_L: an item token
(item features + user demographics) followed by its action token (the rating's embedding plus, with
`action_item`, the features of the item it rates). Causal HSTU blocks read it; the output at item token i_t
predicts a_t (like or not), so a training window of W events gives W labels in one pass. A candidate is one
more item token after the history: it attends to every history token (target-aware: the attention is computed
for that candidate) and to itself, and M-FALCON scores many at once.

Why the action token carries its item: a bare rating embedding has five values, so in the first block a
candidate's attention to an action token cannot depend on which item was rated; "how did this user rate items
like me" then needs a second block (a_t first reads i_t, then the candidate reads a_t), leaving one block of
target-aware attention out of two. With `head_features` the prediction head reads the candidate's input token
(item features + demographics) beside its final state, as DIN's output MLP reads the candidate and the user.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from genrec.data.feedback import FeedbackData
from genrec.models.ranking.base import RankBatch, mlp, register_ranker
from genrec.models.ranking.generative import GenerativeRanker, GenerativeRankerConfig, Tokens, prefix_mask


class HSTURankerConfig(GenerativeRankerConfig):
    name: Literal["hstu_ranker"] = "hstu_ranker"
    action_item: bool = Field(True, description="action tokens add the features of the item they rate")
    head_features: bool = Field(True, description="the head reads the candidate's input token too")


@register_ranker
class HSTURanker(GenerativeRanker):
    config_class = HSTURankerConfig

    def __init__(self, cfg: HSTURankerConfig, data: FeedbackData, text: np.ndarray | None = None) -> None:
        super().__init__(cfg, data, text)
        if cfg.head_features:
            self.head = mlp([2 * cfg.dim, cfg.dim, 1], cfg.dropout)

    def max_tokens(self, max_len: int) -> int:
        return 2 * max_len

    def item_tokens(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return self.item_features(items) + self.user_features(users)[:, None, :]

    def prefix_tokens(self, batch: RankBatch) -> tuple[Tokens, torch.Tensor]:
        b, length = batch.hist_items.shape
        items = self.item_tokens(batch.hist_items, batch.users)
        actions = self.action_emb(batch.hist_actions)
        if self.cfg.action_item:
            actions = actions + self.item_features(batch.hist_items)
        x = torch.stack([items, actions], 2).reshape(b, 2 * length, -1)
        valid = (batch.hist_items > 0).repeat_interleave(2, dim=1)
        times = batch.hist_times.repeat_interleave(2, dim=1)
        pos = torch.arange(2 * length).expand(b, -1)
        return Tokens(x, pos, times, valid), pos[:, ::2]

    def candidate_tokens(self, batch: RankBatch) -> torch.Tensor:
        return self.item_tokens(batch.items, batch.users)

    def score(self, h: torch.Tensor, cand_x: torch.Tensor) -> torch.Tensor:
        if self.cfg.head_features:
            h = torch.cat([h, cand_x], -1)
        return self.head(h).squeeze(-1)

    def training_logits(self, batch: RankBatch) -> torch.Tensor:
        # The item tokens of the window are the candidates: causal attention already lets i_t see exactly
        # the events before it and itself, so no extra candidate tokens are needed.
        prefix, _ = self.prefix_tokens(batch)
        h = self.run_blocks(prefix, prefix_mask(prefix))
        return self.score(h[:, ::2], prefix.x[:, ::2])
