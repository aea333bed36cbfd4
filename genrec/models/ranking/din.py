"""DIN (Zhou et al. 2018, Deep Interest Network): the classic baseline of the ranking comparison.

Each history event is its item's features plus its rating; a small MLP over [e_h, e_c, e_h - e_c, e_h * e_c]
weighs every history event by its relevance to the candidate c (target attention, weights not normalised, as
in the paper); the weighted sum, the mean of the history, the candidate, the user's demographics and (when
switched on) cross features and text embeddings feed an MLP that outputs the like-logit. With
`text_features: true` this is the hybrid recipe: frozen language-model embeddings of each item's title and
genres join the item features (as LEARN / HLLM feed LLM item representations to a classic ranker).
"""

from __future__ import annotations

import numpy as np
import torch

from genrec.config.models.ranking.din import DINConfig
from genrec.data.feedback import FeedbackData
from genrec.models.ranking.base import RankBatch, Ranker, mlp, register_ranker


@register_ranker
class DIN(Ranker):
    config_class = DINConfig

    def __init__(self, cfg: DINConfig, data: FeedbackData, text: np.ndarray | None = None) -> None:
        super().__init__(cfg, data, text)
        d = cfg.dim
        self.attention = mlp([4 * d, cfg.attention_hidden, 1], 0.0)
        self.out = mlp([4 * d + self.n_cross, *cfg.hidden, 1], cfg.dropout)

    def logits(self, batch: RankBatch) -> torch.Tensor:
        hist = self.item_features(batch.hist_items) + self.action_emb(batch.hist_actions)  # [B, L, d]
        cand = self.item_features(batch.items)  # [B, C, d]
        c, length = cand.shape[1], hist.shape[1]
        mask = self.visible(batch)  # causal in training windows: candidate t uses only the events before t
        q = cand[:, :, None, :].expand(-1, -1, length, -1)
        k = hist[:, None, :, :].expand(-1, c, -1, -1)
        w = self.attention(torch.cat([q, k, q - k, q * k], -1)).squeeze(-1) * mask  # [B, C, L]
        pooled = torch.einsum("bcl,bld->bcd", w, hist)
        m = mask.float()
        mean = torch.einsum("bcl,bld->bcd", m, hist) / m.sum(-1, keepdim=True).clamp(min=1)
        user = self.user_features(batch.users)[:, None, :].expand(-1, c, -1)
        parts = [user, cand, pooled, mean]
        if self.n_cross:
            parts.append(batch.cross)
        return self.out(torch.cat(parts, -1)).squeeze(-1)
