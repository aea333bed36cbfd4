"""GenRank-style action-oriented generative ranker (Huang et al. 2025, "Towards Large-scale Generative Ranking").

GenRank treats items as the context and generates actions: instead of separate item and action tokens, each
history event is one token (item features + user demographics + the action's embedding), halving the sequence
the history costs. A candidate is its item's token with a [MASK] action; the model predicts the action there.
Training puts one candidate token per window event at that event's position; it sees the fused tokens of the
earlier events and itself (the same mask M-FALCON uses). The paper's parameter-free ALiBi biases are replaced
here by the learned relative position/time bias shared with HSTU.
"""

from __future__ import annotations

import torch

from genrec.config.models.ranking.genrank import GenRankConfig
from genrec.data.feedback import N_ACTIONS
from genrec.models.ranking.base import RankBatch, register_ranker
from genrec.models.ranking.generative import GenerativeRanker, Tokens

MASK_ACTION = N_ACTIONS + 1


@register_ranker
class GenRank(GenerativeRanker):
    config_class = GenRankConfig

    def item_tokens(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return self.item_features(items) + self.user_features(users)[:, None, :]

    def prefix_tokens(self, batch: RankBatch) -> tuple[Tokens, torch.Tensor]:
        b, length = batch.hist_items.shape
        x = self.item_tokens(batch.hist_items, batch.users) + self.action_emb(batch.hist_actions)
        pos = torch.arange(length, device=x.device).expand(b, -1)
        return Tokens(x, pos, batch.hist_times, batch.hist_items > 0), pos

    def candidate_tokens(self, batch: RankBatch) -> torch.Tensor:
        mask = self.action_emb(torch.full_like(batch.items, MASK_ACTION))
        return self.item_tokens(batch.items, batch.users) + mask
