"""HSTU (Zhai et al. 2024) for next-item retrieval: a stack of HSTU blocks over the item sequence.

Inputs are the item embeddings scaled by sqrt(d). Order enters through the learned relative position bias (and
the relative time bias when the data has timestamps); `abs_positions: true` also adds learned absolute positions,
as the reference implementation's input preprocessor does (on Beauty validation that learned more slowly).
Output and item embeddings are L2-normalised and logits divided by a temperature, as in the reference
implementation; the loss is the full softmax unless configured otherwise.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from genrec.models.base import register
from genrec.models.next_item import NextItemConfig, NextItemModel, make_item_tables
from genrec.nn.hstu import HSTUBlock, RelativeBias
from genrec.nn.transformer import causal_padding_mask


class HSTUConfig(NextItemConfig):
    name: Literal["hstu"] = "hstu"
    l2_normalize: bool = True
    temperature: float = Field(0.05, gt=0)
    attn_dim: int | None = Field(None, description="query/key width (default: dim)")
    time_buckets: int = Field(32, ge=0, description="log2 buckets of time gaps; 0 disables the time bias")
    abs_positions: bool = False
    position_bias: bool = Field(
        True, description="learned relative position bias; false = order only through the causal mask"
    )


@register
class HSTU(NextItemModel):
    config_class = HSTUConfig
    uses_timestamps = True

    def __init__(self, cfg: HSTUConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        make_item_tables(self, n_items, cfg.dim)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim) if cfg.abs_positions else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.bias = RelativeBias(cfg.max_len, cfg.heads, cfg.time_buckets, cfg.position_bias)
        self.blocks = nn.ModuleList(
            HSTUBlock(cfg.dim, cfg.heads, cfg.dropout, cfg.max_len, cfg.attn_dim) for _ in range(cfg.layers)
        )
        self.final_norm = nn.LayerNorm(cfg.dim)

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed_inputs(items)
        mask = causal_padding_mask(items)
        bias = self.bias(items.shape[1], timestamps)
        for block in self.blocks:
            x = block(x, mask, bias)
        return self.final_norm(x)
