"""MTGR-style generative ranker (Meituan 2025): user-profile tokens, the history, and candidates that keep
their cross features.

Where a pure sequence model drops the hand-made user x item cross features of a classic ranker, MTGR keeps them
on the candidate tokens. Here the tokens are: one per user-profile field (gender, age, occupation), one per
history event (item features + action), and one per candidate (item features concatenated with the
history-derived cross features, projected). A learned token-type embedding tells the three kinds apart (MTGR
uses a layer norm per token group). Candidates see the profile, the history and themselves (MTGR's dynamic
mask; the same one M-FALCON uses).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from genrec.config.models.ranking.mtgr import MTGRConfig
from genrec.data.feedback import FeedbackData
from genrec.models.ranking.base import RankBatch, register_ranker
from genrec.models.ranking.generative import GenerativeRanker, Tokens, right_align

PROFILE_FIELDS = 3


@register_ranker
class MTGR(GenerativeRanker):
    config_class = MTGRConfig

    def __init__(self, cfg: MTGRConfig, data: FeedbackData, text: np.ndarray | None = None) -> None:
        super().__init__(cfg, data, text)
        self.type_emb = nn.Embedding(3, cfg.dim)  # profile, history, candidate
        self.cand_proj = nn.Linear(cfg.dim + self.n_cross, cfg.dim)

    def max_tokens(self, max_len: int) -> int:
        return max_len + PROFILE_FIELDS

    def prefix_tokens(self, batch: RankBatch) -> tuple[Tokens, torch.Tensor]:
        valid_ev = batch.hist_items > 0
        profile = self.user_features.fields(batch.users) + self.type_emb.weight[0]
        events = (
            self.item_features(batch.hist_items)
            + self.action_emb(batch.hist_actions)
            + self.type_emb.weight[1]
        )
        first = (
            torch.where(valid_ev, batch.hist_times, batch.hist_times.max() + 1).min(1, keepdim=True).values
        )
        x = torch.cat([profile, events], 1)
        times = torch.cat([first.expand(-1, PROFILE_FIELDS), batch.hist_times], 1)
        valid = torch.cat([valid_ev.new_ones(valid_ev.shape[0], PROFILE_FIELDS), valid_ev], 1)
        # Profile tokens go right before the first event, the padding to the far left.
        tok, where = right_align(x, times, valid)
        return tok, where[:, PROFILE_FIELDS:]

    def candidate_tokens(self, batch: RankBatch) -> torch.Tensor:
        parts = [self.item_features(batch.items)]
        if self.n_cross:
            parts.append(batch.cross)
        return self.cand_proj(torch.cat(parts, -1)) + self.type_emb.weight[2]
