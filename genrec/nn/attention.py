"""Softmax attention, computed by PyTorch's `scaled_dot_product_attention` or written out, chosen per device.

`attend(q, k, v, mask)` is softmax(q k^T / sqrt(d_head) + mask) v either way (Vaswani et al. 2017): the same
arithmetic, to float rounding. On a GPU the fused kernels of `scaled_dot_product_attention` (flash or
memory-efficient attention) read q, k, v once and never hold the L x L weights. On this project's CPU the
written-out form (two matmuls and a softmax) is faster for the short sequences of the sequence models: PyTorch's
CPU flash kernel costs more than it saves, most of all in the backward pass (`python -m benchmarks attention`
measures both on a SASRec and a TIGER training step). `fused_attention(device)` is the one place that choice is made.

HSTU's pointwise attention (SiLU, no softmax; `genrec.nn.hstu`) has no fused PyTorch kernel and stays written out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Device types whose attention runs through `scaled_dot_product_attention`; the others write it out. The CPU's
# entry is what `python -m benchmarks attention` measured faster there (docs/benchmarks.md).
FUSED = {"cuda": True, "mps": True, "cpu": False}


def fused_attention(device: torch.device | str) -> bool:
    """Whether attention on `device` runs through `scaled_dot_product_attention` (True) or written out."""
    return FUSED.get(torch.device(device).type, True)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    fused: bool | None = None,
) -> torch.Tensor:
    """[..., H, Q, d_head] queries over [..., H, K, d_head] keys and values -> [..., H, Q, d_head].

    `mask`: boolean, broadcast to [..., H, Q, K], True where a query may read a key (a query with no key gets
    NaN, as in PyTorch). `dropout`: probability of dropping an attention weight (training only: pass 0 in
    evaluation). `fused`: force one path (default: `fused_attention(q.device)`). The written-out softmax runs in
    float32 whatever the inputs' dtype."""
    if fused is None:
        fused = fused_attention(q.device)
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), -1).to(v.dtype)
    if dropout:
        weights = F.dropout(weights, dropout)
    return weights @ v
