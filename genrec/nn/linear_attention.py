"""Causal linear attention in chunked form: O(L d^2) work and memory instead of softmax attention's O(L^2).

Kernelised attention (Katharopoulos et al. 2020, https://arxiv.org/abs/2006.16236) replaces exp(q . k) by
phi(q) . phi(k) with a positive feature map phi, so that the causal sum over keys factors into a running state:

    out_i = phi(q_i)^T S_i / (phi(q_i)^T z_i),    S_i = sum_{j <= i} phi(k_j) v_j^T,    z_i = sum_{j <= i} phi(k_j)

LinRec (Liu et al. 2023, https://arxiv.org/abs/2411.01537) brings linear attention to sequential recommenders
(L2-normalised queries and keys); FuXi-Linear (2025) does it for HSTU-style blocks. Here phi is ELU + 1 applied
to L2-normalised queries and keys (LinRec L2-normalises them too, queries by row and keys by column; ELU + 1 keeps
the weights positive so that the denominator is safe).
`normalize=False` drops the denominator and divides by a constant instead, the way HSTU divides its pointwise
SiLU attention by the sequence length (no per-row normalisation).

The sequence is cut into chunks of C positions: inside a chunk a C x C masked product, across chunks the
[d_k, d_v] state carried by an exclusive cumulative sum over chunks. Memory is O(B H (L C + L/C d_k d_v)).
Relative-position / time biases cannot be factored this way, so a linear block has none (order enters through
causality and, where the model has them, absolute positions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = ELU(x / |x|) + 1: positive, bounded in (0, 2]."""
    return F.elu(F.normalize(x, dim=-1)) + 1


def causal_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    real: torch.Tensor | None = None,
    normalize: bool = True,
    scale: float = 1.0,
    chunk: int = 64,
) -> torch.Tensor:
    """q, k [B, H, L, d_k], v [B, H, L, d_v] -> [B, H, L, d_v]; position i reads keys j <= i.

    `real` [B, L] (bool) masks padding keys out. With `normalize`, each row is divided by the sum of its weights
    (softmax-like); without, the sum is multiplied by `scale` (HSTU: 1 / max_len). q and k are passed through
    `feature_map` here. Raises ValueError for a non-positive chunk.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    b, h, length, dk = q.shape
    dv = v.shape[-1]
    fq, fk = feature_map(q), feature_map(k)
    if real is not None:
        fk = fk * real[:, None, :, None].to(fk.dtype)
    pad = (-length) % chunk
    if pad:  # right-pad to whole chunks; the padded keys are zero and come after every real query
        fq, fk, v = (F.pad(t, (0, 0, 0, pad)) for t in (fq, fk, v))
    n = (length + pad) // chunk
    fq = fq.view(b, h, n, chunk, dk)
    fk = fk.view(b, h, n, chunk, dk)
    vc = v.reshape(b, h, n, chunk, dv)
    # State before each chunk: exclusive cumulative sum of the chunks' phi(k)^T v (and phi(k) for the normaliser).
    kv = fk.transpose(-1, -2) @ vc  # [B, H, n, d_k, d_v]
    state = kv.cumsum(2) - kv
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    weights = (fq @ fk.transpose(-1, -2)).masked_fill(~causal, 0.0)  # [B, H, n, C, C]
    out = fq @ state + weights @ vc
    if normalize:
        ksum = fk.sum(3)  # [B, H, n, d_k]
        zstate = ksum.cumsum(2) - ksum
        denom = (fq * zstate[:, :, :, None, :]).sum(-1) + weights.sum(-1)
        out = out / (denom[..., None] + EPS)
    else:
        out = out * scale
    return out.reshape(b, h, n * chunk, dv)[:, :, :length]


class LinearCausalAttention(nn.Module):
    """Drop-in for `CausalSelfAttention` whose `mask` is the [B, L] real-item mask (True = item, False =
    padding) instead of a [B, 1, L, L] matrix: linear attention never builds the L x L mask."""

    def __init__(self, dim: int, heads: int, dropout: float, chunk: int = 64) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.chunk = chunk
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = causal_linear_attention(q, k, v, real, normalize=True, chunk=self.chunk)
        return self.out(self.dropout(y.transpose(1, 2).reshape(b, n, d)))
