"""HSTU (Zhai et al. 2024) for next-item retrieval: a stack of HSTU blocks over the item sequence.

Inputs are the item embeddings scaled by sqrt(d). Order enters through the learned relative position bias (and
the relative time bias when the data has timestamps); `abs_positions: true` also adds learned absolute positions,
as the reference implementation's input preprocessor does (on Beauty validation that learned more slowly).
Output and item embeddings are L2-normalised and logits divided by a temperature, as in the reference
implementation; the loss is the full softmax unless configured otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from genrec.config.models.hstu import HSTUConfig
from genrec.models.base import register
from genrec.models.next_item import NextItemModel, make_item_tables
from genrec.nn.hstu import HSTUBlock, RelativeBias
from genrec.nn.transformer import causal_padding_mask


@register
class HSTU(NextItemModel):
    config_class = HSTUConfig
    uses_timestamps = True

    def __init__(self, cfg: HSTUConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        linear = cfg.attention == "linear"
        if not cfg.abs_positions and not linear:
            self.capabilities = type(self).capabilities | {"incremental_state"}
        make_item_tables(self, n_items, cfg.dim)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim) if cfg.abs_positions else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.bias = (
            None if linear else RelativeBias(cfg.max_len, cfg.heads, cfg.time_buckets, cfg.position_bias)
        )
        self.blocks = nn.ModuleList(
            HSTUBlock(cfg.dim, cfg.heads, cfg.dropout, cfg.max_len, cfg.attn_dim, cfg.attention)
            for _ in range(cfg.layers)
        )
        self.final_norm = nn.LayerNorm(cfg.dim)

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed_inputs(items)
        if self.bias is None:  # linear attention: the [B, L] real-item mask, no L x L bias
            mask, bias = items > 0, None
        else:
            mask, bias = causal_padding_mask(items), self.bias(items.shape[1], timestamps)
        for block in self.blocks:
            x = block(x, mask, bias)
        return self.final_norm(x)

    # --- incremental state (KV cache) -----------------------------------------------------------------------
    # Exact for HSTU: attention is causal, its bias depends only on relative position and time gaps, and the
    # pointwise SiLU is divided by the constant max_len rather than a softmax over the row, so earlier
    # positions' keys and values do not change when an item is appended, as long as the history fits in the
    # window. Learned absolute positions (`abs_positions`) shift on every append: no cache then.

    @torch.no_grad()
    def init_state(self, items: torch.Tensor, timestamps: torch.Tensor | None) -> HSTUState:
        """Prefill from one history [n] (oldest first); only the newest `max_len` items are read."""
        n = self.cfg.max_len
        return self._extend(None, items[-n:], None if timestamps is None else timestamps[-n:])

    @torch.no_grad()
    def extend_state(
        self,
        state: HSTUState,
        items: torch.Tensor,
        timestamps: torch.Tensor | None,
        history: torch.Tensor,
        history_timestamps: torch.Tensor | None,
    ) -> tuple[HSTUState, bool]:
        """Append `items` [m] to the state; `history` is the whole history including them, re-encoded when the
        window overflows. Returns (state, True when the update was incremental)."""
        if state.length + len(items) > self.cfg.max_len:
            return self.init_state(history, history_timestamps), False
        all_ts = (
            None
            if timestamps is None or state.timestamps is None
            else torch.cat([state.timestamps, timestamps])
        )
        return self._extend(state, items, all_ts), True

    def state_query(self, state: HSTUState) -> torch.Tensor:
        """[d] the retrieval query of the state's history (equals `query_vectors` of that history)."""
        return self._project(state.hidden)

    def _extend(self, state: HSTUState | None, items: torch.Tensor, ts: torch.Tensor | None) -> HSTUState:
        past = 0 if state is None else state.length
        end = past + len(items)
        x = (self.item_emb(items) * math.sqrt(self.cfg.dim))[None]  # eval mode: no dropout
        q_ts, k_ts = (None, None) if ts is None else (ts[None, past:end], ts[None])
        where = torch.arange(end, device=items.device)
        bias = self.bias.pairwise(where[past:], where, q_ts, k_ts)  # [1, H, m, end]
        mask = torch.ones(len(items), end, dtype=torch.bool, device=items.device).tril(diagonal=past)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            cache = None if state is None else (state.keys[i], state.values[i])
            x, (k, v) = block(x, mask, bias, cache=cache, return_kv=True)
            keys.append(k)
            values.append(v)
        return HSTUState(keys, values, ts, self.final_norm(x[0, -1]))


@dataclass
class HSTUState:
    """A user's incremental HSTU state: per-layer keys/values [1, H, n, d_head] of the history's n positions."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    timestamps: torch.Tensor | None  # [n], None when the time bias is off
    hidden: torch.Tensor  # [d] final-normalised output at the newest position

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]
