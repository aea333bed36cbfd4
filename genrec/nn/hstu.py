"""The HSTU block (Zhai et al. 2024, "Actions Speak Louder than Words").

One block: U, V, Q, K = split(SiLU(W1 LN(x)))
           A = SiLU(Q K^T / sqrt(d) + rab_pos + rab_time) / n      (pointwise, no softmax; causal)
           x = x + W2 Dropout(LN(A V) * U)
Pointwise aggregation keeps the strength of a user's engagement (softmax would normalise it away); the gate U
replaces the FFN. rab_pos is a learned bias per relative position, rab_time a learned bias per bucket of
log time gap, used only when timestamps exist.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genrec.nn.linear_attention import causal_linear_attention


class RelativeBias(nn.Module):
    """Learned attention bias from relative position (i - j) and, optionally, bucketed log time gap."""

    def __init__(self, max_len: int, heads: int, time_buckets: int = 0, positions: bool = True) -> None:
        super().__init__()
        self.max_len = max_len
        if positions:
            self.pos = nn.Parameter(torch.zeros(heads, 2 * max_len - 1))
        else:  # order only through the causal mask (and the time bias): a constant zero bias
            self.register_buffer("pos", torch.zeros(heads, 2 * max_len - 1))
        self.time = nn.Parameter(torch.zeros(heads, time_buckets + 1)) if time_buckets else None
        self.time_buckets = time_buckets

    def forward(self, length: int, timestamps: torch.Tensor | None) -> torch.Tensor:
        idx = torch.arange(length, device=self.pos.device)
        return self.pairwise(idx, idx, timestamps, timestamps)

    def pairwise(
        self,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
        q_time: torch.Tensor | None = None,
        k_time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Bias of queries at positions `q_pos` ([Q] or [B, Q]) on keys at `k_pos` ([K] or [B, K]), with
        optional [B, Q] / [B, K] timestamps: [1 or B, H, Q, K]. Rankers and M-FALCON place candidates at
        explicit positions, so queries and keys need not be the same tokens."""
        rel = (q_pos[..., :, None] - k_pos[..., None, :]).clamp(-(self.max_len - 1), self.max_len - 1)
        rel = rel + self.max_len - 1
        bias = self.pos[:, rel]  # [H, Q, K] or [H, B, Q, K]
        bias = bias[None] if rel.dim() == 2 else bias.transpose(0, 1)
        if self.time is not None and q_time is not None and k_time is not None:
            gap = (q_time[:, :, None] - k_time[:, None, :]).clamp(min=1).float()
            bucket = gap.log2().floor().clamp(0, self.time_buckets).long()  # bucket b: 2^b <= gap < 2^(b+1) s
            bias = bias + self.time[:, bucket].permute(1, 0, 2, 3)
        return bias


class HSTUBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float,
        max_len: int,
        attn_dim: int | None = None,
        attention: str = "softmax",
    ) -> None:
        super().__init__()
        # "softmax" names the quadratic pointwise-SiLU attention (HSTU's own); "linear" its O(L) kernelised form,
        # whose `mask` is the [B, L] real-item mask and which takes no bias (genrec.nn.linear_attention).
        self.linear = attention == "linear"
        self.heads = heads
        self.max_len = max_len
        self.attn_dim = attn_dim or dim
        self.norm_in = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, 2 * dim + 2 * self.attn_dim)  # U, V, Q, K
        self.norm_attn = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        bias: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_kv: bool = False,
    ):
        """x [B, N, d] -> [B, N, d]. `mask` / `bias` broadcast to [B, H, N, T + N]: the N new positions over
        the T cached keys then their own. `cache`: (keys, values) [B, H, T, d_head] of earlier positions that
        the new ones also attend to (a KV cache, M-FALCON's prefix). With `return_kv` the result is
        (output, (keys, values)) with the new positions' keys and values appended to the cache's."""
        u, q, k, v = self.project(x)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        out = self.finish(x, self.attend(q, k, v, mask, bias), u)
        return (out, (k, v)) if return_kv else out

    # The steps are separate so that callers can build their own queries (M-FALCON's candidates).
    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """u [B, N, d] and q, k, v as [B, H, N, d_head]."""
        b, n, d = x.shape
        h = self.heads
        u, v, q, k = F.silu(self.proj_in(self.norm_in(x))).split([d, d, self.attn_dim, self.attn_dim], dim=-1)
        q = q.view(b, n, h, -1).transpose(1, 2)
        k = k.view(b, n, h, -1).transpose(1, 2)
        v = v.view(b, n, h, -1).transpose(1, 2)
        return u, q, k, v

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """[B, Q, d]: queries q aggregate values v of the keys k they may see."""
        b, _, n, _ = q.shape
        if self.linear:
            # The same unnormalised sum divided by max_len, with phi(q) . phi(k) in place of SiLU(q . k + bias).
            y = causal_linear_attention(q, k, v, mask, normalize=False, scale=1.0 / self.max_len)
            if self.training and self.attn_dropout:
                y = F.dropout(y, self.attn_dropout)
            return y.transpose(1, 2).reshape(b, n, -1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
        # Pointwise SiLU divided by the (maximum) sequence length, as in the paper: no softmax normalisation.
        attn = F.silu(scores) * mask / self.max_len
        if self.training and self.attn_dropout:
            attn = F.dropout(attn, self.attn_dropout)
        return (attn @ v).transpose(1, 2).reshape(b, n, -1)

    def finish(self, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return x + self.proj_out(self.dropout(self.norm_attn(y) * u))
