"""HSTU generative ranker (Zhai et al. 2024): interleaved item and action tokens, target-aware.

A history of events (i_1, a_1), ..., (i_L, a_L) becomes the sequence i_1 a_1 i_2 a_2 ... i_L a_L: an item token
(item features + user demographics) followed by its action token (the rating's embedding plus, with
`action_item`, the features of the item it rates). With `compress_history` the older events of a history (all but
the newest `compress_keep`) are instead fused into one token per event, item + action as in GenRank, and mean-pooled
in groups of `compress_group`: at 100 events, 50 raw pairs and 10 pooled tokens make 110 tokens instead of 200.
Causal HSTU blocks read it; the output at item token i_t
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

import numpy as np
import torch

from genrec.config.models.ranking.hstu_ranker import HSTURankerConfig
from genrec.data.feedback import FeedbackData
from genrec.models.ranking.base import RankBatch, mlp, register_ranker
from genrec.models.ranking.generative import GenerativeRanker, Tokens, prefix_mask


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

    def kept_raw(self, length: int) -> int:
        """How many of a history's newest `length` events stay raw item/action pairs."""
        if not self.cfg.compress_history:
            return length
        keep = self.cfg.compress_keep or self.cfg.stride or max(1, self.cfg.max_len // 2)
        return min(keep, length)

    def prefix_tokens(self, batch: RankBatch) -> tuple[Tokens, torch.Tensor]:
        keep = self.kept_raw(batch.hist_items.shape[1])
        if keep == batch.hist_items.shape[1]:
            return self.interleaved(batch.hist_items, batch.hist_actions, batch.hist_times, batch.users)
        old = batch.hist_items.shape[1] - keep
        pooled = self.pooled(
            batch.hist_items[:, :old], batch.hist_actions[:, :old], batch.hist_times[:, :old], batch.users
        )
        raw, event_pos = self.interleaved(
            batch.hist_items[:, old:], batch.hist_actions[:, old:], batch.hist_times[:, old:], batch.users
        )
        n = pooled.x.shape[1]
        tok = Tokens(
            torch.cat([pooled.x, raw.x], 1),
            torch.cat([pooled.pos, raw.pos + n], 1),
            torch.cat([pooled.times, raw.times], 1),
            torch.cat([pooled.valid, raw.valid], 1),
        )
        # Pooled events have no token of their own: position -1 marks them (no logit in training).
        return tok, torch.cat([torch.full_like(batch.hist_items[:, :old], -1), event_pos + n], 1)

    def pooled(self, items, actions, times, users) -> Tokens:
        """GenRank-style fused tokens (item + user + action) of older events, averaged over groups of
        `compress_group` consecutive events (groups aligned at the newest end); a group's time is its newest."""
        b, length = items.shape
        g = self.cfg.compress_group
        pad = (-length) % g
        fused = self.item_tokens(items, users) + self.action_emb(actions)
        real = (items > 0).to(fused.dtype)
        fused = fused * real[..., None]
        if pad:
            fused = torch.nn.functional.pad(fused, (0, 0, pad, 0))
            real = torch.nn.functional.pad(real, (pad, 0))
            times = torch.nn.functional.pad(times, (pad, 0))
        n = (length + pad) // g
        count = real.view(b, n, g).sum(-1)
        x = fused.view(b, n, g, -1).sum(2) / count.clamp(min=1)[..., None]
        pos = torch.arange(n, device=x.device).expand(b, -1)
        return Tokens(x, pos, times.view(b, n, g).amax(-1), count > 0)

    def interleaved(self, hist_items, hist_actions, hist_times, users) -> tuple[Tokens, torch.Tensor]:
        batch = RankBatch(users, hist_items, hist_actions, hist_times, *[None] * 5, causal=False)
        b, length = batch.hist_items.shape
        items = self.item_tokens(batch.hist_items, batch.users)
        actions = self.action_emb(batch.hist_actions)
        if self.cfg.action_item:
            actions = actions + self.item_features(batch.hist_items)
        x = torch.stack([items, actions], 2).reshape(b, 2 * length, -1)
        valid = (batch.hist_items > 0).repeat_interleave(2, dim=1)
        times = batch.hist_times.repeat_interleave(2, dim=1)
        pos = torch.arange(2 * length, device=x.device).expand(b, -1)
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
        prefix, event_pos = self.prefix_tokens(batch)
        h = self.run_blocks(prefix, prefix_mask(prefix))
        n = prefix.x.shape[1] - 2 * self.kept_raw(batch.hist_items.shape[1])  # pooled tokens first
        logits = self.score(h[:, n::2], prefix.x[:, n::2])
        if n:  # events inside pooled groups get no logit (zero, without gradient); only the first window of a
            # user labels them, the others label the newest `stride` events only
            logits = torch.cat(
                [logits.new_zeros(event_pos.shape[0], event_pos.shape[1] - logits.shape[1]), logits], 1
            )
        return logits
