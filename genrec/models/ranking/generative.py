"""What the generative rankers (HSTU ranker, GenRank, MTGR) share: HSTU blocks over a token sequence.

A subclass says how a history becomes prefix tokens and how a candidate becomes a token. The history prefix is
causal; a candidate sees the prefix tokens of the events before it and itself, never another candidate. In
training the candidates are a window's own events (candidate t sits at the position of event t's token and sees
the prefix before it), so one pass gives a label per event; in evaluation all candidates sit just after the
history and are scored with M-FALCON (`mfalcon.py` beside this file), reusing the history's keys and values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from genrec.config.models.ranking.generative import GenerativeRankerConfig
from genrec.data.feedback import FeedbackData
from genrec.models.ranking.base import RankBatch, Ranker, mlp
from genrec.nn.hstu import HSTUBlock, RelativeBias


@dataclass
class Tokens:
    x: torch.Tensor  # [B, T, d]
    pos: torch.Tensor  # [B, T] position used by the relative bias
    times: torch.Tensor  # [B, T]
    valid: torch.Tensor  # [B, T] bool


def right_align(x: torch.Tensor, times: torch.Tensor, valid: torch.Tensor) -> tuple[Tokens, torch.Tensor]:
    """Move padding to the left keeping the order of real tokens; returns the tokens (positions 0..T-1) and
    where each input token went ([B, T])."""
    order = torch.argsort(valid.int(), dim=1, stable=True)  # padding (0) first
    where = torch.argsort(order, dim=1)
    gather = order[..., None].expand(-1, -1, x.shape[-1])
    pos = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
    tok = Tokens(x.gather(1, gather), pos, times.gather(1, order), valid.gather(1, order))
    return tok, where


def prefix_mask(tok: Tokens) -> torch.Tensor:
    """[B, T, T] causal mask over real tokens; every token sees itself so no row is empty."""
    causal = tok.pos[:, :, None] >= tok.pos[:, None, :]
    eye = torch.eye(tok.pos.shape[1], dtype=torch.bool, device=tok.pos.device)
    return (causal & tok.valid[:, None, :]) | eye


class GenerativeRanker(Ranker):
    def __init__(
        self, cfg: GenerativeRankerConfig, data: FeedbackData, text: np.ndarray | None = None
    ) -> None:
        super().__init__(cfg, data, text)
        span = self.max_tokens(cfg.max_len) + 1
        self.bias = RelativeBias(span, cfg.heads, cfg.time_buckets)
        self.blocks = nn.ModuleList(
            HSTUBlock(cfg.dim, cfg.heads, cfg.dropout, span) for _ in range(cfg.layers)
        )
        self.final_norm = nn.LayerNorm(cfg.dim)
        self.head = mlp([cfg.dim, cfg.dim, 1], cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def max_tokens(self, max_len: int) -> int:
        """Prefix length for a history of max_len events."""
        return max_len

    # --- what a subclass defines -----------------------------------------------------------------------
    def prefix_tokens(self, batch: RankBatch) -> tuple[Tokens, torch.Tensor]:
        """History tokens and the position of each history event's token ([B, L])."""
        raise NotImplementedError

    def candidate_tokens(self, batch: RankBatch) -> torch.Tensor:
        """[B, C, d] one token per candidate."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------------------
    def run_blocks(self, tok: Tokens, mask: torch.Tensor) -> torch.Tensor:
        bias = self.bias.pairwise(tok.pos, tok.pos, tok.times, tok.times if self.cfg.time_buckets else None)
        x = self.dropout(tok.x) * tok.valid[..., None]
        m = mask[:, None]
        for block in self.blocks:
            x = block(x, m, bias)
        return self.final_norm(x)

    def score(self, h: torch.Tensor, cand_x: torch.Tensor) -> torch.Tensor:
        """Like-logits from the candidates' final states `h` and their input tokens `cand_x` (a subclass may
        read the candidate's own features again in its head; the base head uses `h` only)."""
        return self.head(h).squeeze(-1)

    def training_logits(self, batch: RankBatch) -> torch.Tensor:
        """Prefix + one candidate per window event, at the event's position, seeing only earlier events."""
        prefix, event_pos = self.prefix_tokens(batch)
        cand = Tokens(self.candidate_tokens(batch), event_pos, batch.times, batch.items > 0)
        tp, c = prefix.pos.shape[1], cand.pos.shape[1]
        top = torch.cat([prefix_mask(prefix), prefix.valid.new_zeros(prefix.valid.shape[0], tp, c)], 2)
        sees = (cand.pos[:, :, None] > prefix.pos[:, None, :]) & prefix.valid[:, None, :]
        eye = torch.eye(c, dtype=torch.bool, device=sees.device).expand(sees.shape[0], -1, -1)
        mask = torch.cat([top, torch.cat([sees, eye], 2)], 1)
        tok = Tokens(
            *(torch.cat([getattr(prefix, f), getattr(cand, f)], 1) for f in ("x", "pos", "times", "valid"))
        )
        h = self.run_blocks(tok, mask)
        return self.score(h[:, tp:], cand.x)

    def logits(self, batch: RankBatch) -> torch.Tensor:
        if batch.causal:
            return self.training_logits(batch)
        from genrec.models.ranking.mfalcon import score_batch

        return score_batch(self, batch, self.cfg.micro_batch)
