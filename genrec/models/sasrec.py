"""SASRec (Kang & McAuley 2018): a causal transformer over the item sequence predicts the next item.

Item embeddings are shared between input and output (unless `tie_output: false`); learned absolute
positions count back from the newest item (`positions: none` drops them: a causal stack can infer order on its
own); pre-norm blocks (softmax attention, or causal linear attention with `attention: linear`); full-softmax
cross-entropy by default (the original BCE with one negative is `train.objective: bce`).
"""

from __future__ import annotations

import torch
from torch import nn

from genrec.config.models.sasrec import SASRecConfig
from genrec.models.base import register
from genrec.models.next_item import NextItemModel, make_item_tables
from genrec.nn.transformer import TransformerBlock, causal_padding_mask


@register
class SASRec(NextItemModel):
    config_class = SASRecConfig

    def __init__(self, cfg: SASRecConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        make_item_tables(self, n_items, cfg.dim)
        add_sasrec_tower(self, cfg)

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed_inputs(items)
        linear = getattr(self.cfg, "attention", "softmax") == "linear"
        mask = items > 0 if linear else causal_padding_mask(items)  # linear attention never builds L x L
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)


def add_sasrec_tower(model: NextItemModel, cfg: SASRecConfig) -> None:
    """The layers `SASRec.encode` runs, as attributes of `model` (any model with its own item inputs can reuse
    the tower: `encode = SASRec.encode`)."""
    model.pos_emb = nn.Embedding(cfg.max_len, cfg.dim) if cfg.positions == "learned" else None
    model.dropout = nn.Dropout(cfg.dropout)
    model.blocks = nn.ModuleList(
        TransformerBlock(cfg.dim, cfg.heads, cfg.dropout, cfg.ffn_mult, cfg.activation, cfg.attention)
        for _ in range(cfg.layers)
    )
    model.final_norm = nn.LayerNorm(cfg.dim)
