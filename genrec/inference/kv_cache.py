"""Incremental HSTU state: per-layer keys and values of a user's history, extended one event at a time.

Why this is exact for HSTU: attention is causal, its bias depends only on relative position (i - j) and on time
gaps, and the pointwise SiLU is divided by the constant `max_len` rather than by a softmax over the row. The keys
and values of earlier positions therefore do not change when an item is appended, so encoding only the new
position against the cached keys/values gives the same output as re-encoding the whole history, as long as the
history fits in the model's window (`max_len`). Once it would not, the oldest item drops out of the window and
every position's context changes: `extend` then rebuilds the cache from the newest `max_len` items (an exact
recompute, reported as such).

SASRec has learned absolute positions counted back from the newest item, so appending an item shifts every
position: its cache cannot be reused and the engine recomputes it (see `engine.py`). HSTU with
`abs_positions: true` is recomputed for the same reason.

The block arithmetic mirrors `genrec.nn.hstu.HSTUBlock.forward`; a test checks both give the same output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genrec.models.hstu import HSTU


@dataclass
class HSTUCache:
    keys: list[torch.Tensor]  # per layer [H, n, dk]
    values: list[torch.Tensor]  # per layer [H, n, dv]
    timestamps: torch.Tensor | None  # [n] or None (time bias off)
    hidden: torch.Tensor  # [d] final-normalised output at the newest position

    @property
    def length(self) -> int:
        return self.keys[0].shape[1]


def supports_cache(model) -> bool:
    return isinstance(model, HSTU) and model.pos_emb is None


def _bias(model: HSTU, start: int, end: int, ts: torch.Tensor | None) -> torch.Tensor:
    """[H, end - start, end] attention bias of query positions start..end-1 over key positions 0..end-1."""
    rel_bias = model.bias
    n = rel_bias.max_len
    if end - start == 1:  # one new position (an event): distances end-1 .. 0, a slice of the table
        bias = rel_bias.pos[:, n - 1 : n - 1 + end].flip(-1)[:, None, :]
    else:
        rel = (torch.arange(start, end)[:, None] - torch.arange(end)[None, :]).clamp(-(n - 1), n - 1)
        bias = rel_bias.pos[:, rel + n - 1]
    if rel_bias.time is not None and ts is not None:
        gap = (ts[start:end, None] - ts[None, :end]).clamp(min=1).float()
        bucket = gap.log2().floor().clamp(0, rel_bias.time_buckets).long()
        bias = bias + rel_bias.time[:, bucket]
    return bias


def _run(model: HSTU, items: torch.Tensor, cache: HSTUCache | None, ts: torch.Tensor | None) -> HSTUCache:
    """Encode `items` (new positions) on top of `cache` (None = empty); return the extended cache."""
    past = 0 if cache is None else cache.length
    m = len(items)
    end = past + m
    x = model.item_emb(items) * math.sqrt(model.cfg.dim)  # [m, d]; eval mode, so no dropout
    bias = _bias(model, past, end, ts)  # [H, m, end]
    # A single new position sees every key; several new ones see only their past.
    causal = None if m == 1 else torch.ones(m, end, dtype=torch.bool).tril(diagonal=past)
    keys, values = [], []
    for i, block in enumerate(model.blocks):
        d, h = x.shape[-1], block.heads
        u, v, q, k = F.silu(block.proj_in(block.norm_in(x))).split(
            [d, d, block.attn_dim, block.attn_dim], dim=-1
        )
        q = q.view(m, h, -1).transpose(0, 1)
        k = k.view(m, h, -1).transpose(0, 1)
        v = v.view(m, h, -1).transpose(0, 1)
        if cache is not None:
            k = torch.cat([cache.keys[i], k], dim=1)
            v = torch.cat([cache.values[i], v], dim=1)
        keys.append(k)
        values.append(v)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
        attn = F.silu(scores) / block.max_len
        if causal is not None:
            attn = attn * causal
        y = (attn @ v).transpose(0, 1).reshape(m, d)
        x = x + block.proj_out(block.norm_attn(y) * u)
    hidden = model.final_norm(x[-1])
    return HSTUCache(keys, values, ts, hidden)


@torch.no_grad()
def build_cache(model: HSTU, items: torch.Tensor, ts: torch.Tensor | None) -> HSTUCache:
    """Prefill from a history (oldest first); only the newest `max_len` items are read, as in `encode`."""
    n = model.cfg.max_len
    items, ts = items[-n:], None if ts is None else ts[-n:]
    return _run(model, items, None, ts)


@torch.no_grad()
def extend(
    model: HSTU,
    cache: HSTUCache,
    items: torch.Tensor,
    ts: torch.Tensor | None,
    history: torch.Tensor,
    history_ts: torch.Tensor | None,
) -> tuple[HSTUCache, bool]:
    """Append `items` (with timestamps `ts`) to the cache. `history` / `history_ts` are the full history including
    them, used when the window overflows. Returns (cache, True if the update was incremental)."""
    if cache.length + len(items) > model.cfg.max_len:
        return build_cache(model, history, history_ts), False
    all_ts = None if ts is None or cache.timestamps is None else torch.cat([cache.timestamps, ts])
    return _run(model, items, cache, all_ts), True


def query(model: HSTU, cache: HSTUCache) -> torch.Tensor:
    """The retrieval query (same as `model.user_embedding` of the cached history)."""
    return model._project(cache.hidden)
