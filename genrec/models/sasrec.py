"""SASRec (Kang & McAuley 2018): a causal transformer over the item sequence predicts the next item.

Item embeddings are shared between input and output (unless `tie_output: false`); learned absolute
positions count back from the newest item (`positions: none` drops them: a causal stack can infer order on its
own); pre-norm blocks (softmax attention, or causal linear attention with `attention: linear`); full-softmax
cross-entropy by default (the original BCE with one negative is `train.objective: bce`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genrec.config.models.sasrec import SASRecConfig
from genrec.models.base import register
from genrec.models.next_item import NextItemModel, make_item_tables
from genrec.nn.transformer import TransformerBlock, causal_padding_mask


@register
class SASRec(NextItemModel):
    """`tower`: the user tower (default: a `SASRecTower` of `cfg`); another model with its own item inputs
    composes the same tower (`genrec.models.textrec`, `genrec.models.unified`)."""

    config_class = SASRecConfig

    def __init__(
        self, cfg: SASRecConfig, n_items: int, n_users: int, tower: SASRecTower | None = None
    ) -> None:
        super().__init__(cfg, n_items, n_users)
        make_item_tables(self, n_items, cfg.dim)
        self.tower = (tower if tower is not None else SASRecTower(cfg)).composed_into(self)

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        return self.tower(self.input_vectors(items), items)


class SASRecTower(nn.Module):
    """SASRec's user tower: item vectors [B, L, d] of the ids [B, L] (0 = padding, left-padded) -> causal states
    [B, L, d] (position t sees items <= t).

    Vectors are scaled by sqrt(d), learned absolute positions (`positions: learned`) count back from the newest
    item, padding positions are zeroed, dropout, `layers` pre-norm blocks (softmax attention, or causal linear
    attention with `attention: linear`), a final LayerNorm. Its weights are stored under its owner's names
    (`pos_emb`, `blocks`, `final_norm`, as SASRec runs have always stored them), so a model that composes it reads
    the run directories written before.
    """

    PARTS = ("pos_emb.", "blocks.", "final_norm.")

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.dim, self.max_len = cfg.dim, cfg.max_len
        self.linear = getattr(cfg, "attention", "softmax") == "linear"
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim) if cfg.positions == "learned" else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.heads, cfg.dropout, cfg.ffn_mult, cfg.activation, cfg.attention)
            for _ in range(cfg.layers)
        )
        self.final_norm = nn.LayerNorm(cfg.dim)
        self.register_state_dict_post_hook(_owner_names)

    def composed_into(self, owner: nn.Module) -> SASRecTower:
        """This tower, with `owner` (which holds it as `owner.tower`) reading the tower's weights from its own
        names (`pos_emb`, `blocks`, `final_norm`), as they are stored."""
        owner.register_load_state_dict_pre_hook(_tower_names)
        return self

    def forward(self, vectors: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        x = vectors * math.sqrt(self.dim)
        if self.pos_emb is not None:
            length = items.shape[1]  # right-aligned: the newest item is always position max_len - 1
            x = x + self.pos_emb(torch.arange(self.max_len - length, self.max_len, device=items.device))[None]
        x = self.dropout(x * (items > 0)[..., None])
        mask = items > 0 if self.linear else causal_padding_mask(items)  # linear attention never builds L x L
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)


def _owner(prefix: str) -> str:
    """The owner's prefix of a tower stored at `prefix` ("tower." -> "", "a.tower." -> "a.")."""
    parts = prefix.split(".")[:-2]
    return ".".join(parts) + "." if parts else ""


def _owner_names(tower, state_dict, prefix, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[_owner(prefix) + key[len(prefix) :]] = state_dict.pop(key)


def _tower_names(owner, state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(tuple(prefix + p for p in SASRecTower.PARTS))]:
        state_dict[prefix + "tower." + key[len(prefix) :]] = state_dict.pop(key)
