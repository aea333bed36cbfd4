"""Causal self-attention block (SASRec / GPT style, pre-norm) on right-aligned, left-padded sequences."""

from __future__ import annotations

import torch
from torch import nn

from genrec.nn.attention import attend
from genrec.nn.linear_attention import LinearCausalAttention


def causal_padding_mask(items: torch.Tensor) -> torch.Tensor:
    """[B, 1, L, L] boolean mask: query i sees key j <= i when j is a real item.

    Every position also sees itself, so padding rows are never all-masked (their output is discarded anyway).
    """
    length = items.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
    real = (items > 0)[:, None, None, :]
    eye = torch.eye(length, dtype=torch.bool, device=items.device)
    return (causal & real) | eye


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float, activation: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = attend(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm: x + Attn(LN(x)), then x + FFN(LN(x)), dropout on both residual branches."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float,
        ffn_mult: int = 1,
        activation: str = "gelu",
        attention: str = "softmax",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        # linear: `forward`'s mask is the [B, L] real-item mask (see genrec.nn.linear_attention)
        self.attn = (
            LinearCausalAttention(dim, heads, dropout)
            if attention == "linear"
            else CausalSelfAttention(dim, heads, dropout)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, dim * ffn_mult, dropout, activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), mask))
        return x + self.dropout(self.ffn(self.norm2(x)))
