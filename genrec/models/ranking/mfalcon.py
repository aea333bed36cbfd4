"""M-FALCON (Zhai et al. 2024): score N candidates for a user at about the cost of one pass over the history.

The history (prefix) runs through the HSTU blocks once; each layer's keys and values are kept. Candidates
then go through the blocks in micro-batches of m: a candidate's query attends to the cached history keys and
to its own key, under a mask [m, T + m] that is the history's validity followed by an identity block, so no
candidate sees another. HSTU attention is pointwise (no softmax), so this equals scoring each candidate alone
after the history, up to float rounding; `score_one_at_a_time` is that reference.

Works for any `GenerativeRanker` (genrec/models/ranking/generative.py): it needs `prefix_tokens`,
`candidate_tokens`, `blocks`, `bias`, `final_norm` and `score(states, candidate input tokens)`.
`score_candidates` is the one-user entry point for serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genrec.models.ranking.base import RankBatch
from genrec.models.ranking.generative import GenerativeRanker, Tokens, prefix_mask


@dataclass
class PrefixCache:
    keys: list[torch.Tensor]  # per layer [B, H, T, d_head]
    values: list[torch.Tensor]
    tokens: Tokens  # positions, times and validity of the history tokens


def _time_or_none(model: GenerativeRanker, t: torch.Tensor) -> torch.Tensor | None:
    return t if model.cfg.time_buckets else None


def encode_prefix(model: GenerativeRanker, prefix: Tokens) -> PrefixCache:
    """Run the history once and keep every layer's keys and values."""
    mask = prefix_mask(prefix)[:, None]
    bias = model.bias.pairwise(prefix.pos, prefix.pos, prefix.times, _time_or_none(model, prefix.times))
    x = prefix.x * prefix.valid[..., None]
    keys, values = [], []
    for block in model.blocks:
        x, (k, v) = block(x, mask, bias, return_kv=True)
        keys.append(k)
        values.append(v)
    return PrefixCache(keys, values, prefix)


def score_cached(
    model: GenerativeRanker,
    cache: PrefixCache,
    cand_x: torch.Tensor,
    cand_times: torch.Tensor,
    micro_batch: int,
) -> torch.Tensor:
    """[B, C] logits of candidates placed right after the cached history."""
    pre = cache.tokens
    b, t = pre.valid.shape
    cand_pos_value = t  # the next position after the history, as in training
    out = []
    for s in range(0, cand_x.shape[1], micro_batch):
        x0 = x = cand_x[:, s : s + micro_batch]
        m = x.shape[1]
        ct = cand_times[:, s : s + micro_batch]
        cpos = torch.full((b, m), cand_pos_value, dtype=pre.pos.dtype, device=x.device)
        key_pos = torch.cat([pre.pos, cpos], 1)
        key_t = torch.cat([pre.times, ct], 1)
        eye = torch.eye(m, dtype=torch.bool, device=x.device).expand(b, -1, -1)
        mask = torch.cat([pre.valid[:, None, :].expand(-1, m, -1), eye], 2)[:, None]
        bias = model.bias.pairwise(cpos, key_pos, ct, _time_or_none(model, key_t))
        for layer, block in enumerate(model.blocks):
            x = block(x, mask, bias, cache=(cache.keys[layer], cache.values[layer]))
        out.append(model.score(model.final_norm(x), x0))
    return torch.cat(out, 1)


def score_batch(model: GenerativeRanker, batch: RankBatch, micro_batch: int = 128) -> torch.Tensor:
    """Evaluation path: every row's candidates against that row's history."""
    prefix, _ = model.prefix_tokens(batch)
    cache = encode_prefix(model, prefix)
    return score_cached(model, cache, model.candidate_tokens(batch), batch.times, micro_batch)


def score_one_at_a_time(model: GenerativeRanker, batch: RankBatch) -> torch.Tensor:
    """Reference: for each candidate, a full forward pass over history + that candidate, nothing cached."""
    prefix, _ = model.prefix_tokens(batch)
    cand_x = model.candidate_tokens(batch)
    b, t = prefix.valid.shape
    out = []
    for c in range(cand_x.shape[1]):
        tok = Tokens(
            torch.cat([prefix.x, cand_x[:, c : c + 1]], 1),
            torch.cat([prefix.pos, torch.full_like(prefix.pos[:, :1], t)], 1),
            torch.cat([prefix.times, batch.times[:, c : c + 1]], 1),
            torch.cat([prefix.valid, torch.ones_like(prefix.valid[:, :1])], 1),
        )
        h = model.run_blocks(tok, prefix_mask(tok))  # the candidate is last, so causal = sees the history
        out.append(model.score(h[:, -1:], cand_x[:, c : c + 1]))
    return torch.cat(out, 1)


def make_batch(
    history_items,
    history_actions,
    candidates,
    history_times=None,
    candidate_times=None,
    user: int = -1,
    cross=None,
) -> RankBatch:
    """One user's history (oldest first) and candidates as a RankBatch with a single row."""
    hi = torch.as_tensor(np.array(history_items, dtype=np.int64))[None]
    ha = torch.as_tensor(np.array(history_actions, dtype=np.int64))[None]
    c = torch.as_tensor(np.array(candidates, dtype=np.int64))[None]
    last = int(history_times[-1]) if history_times is not None and len(history_times) else 0
    ht = torch.zeros_like(hi) if history_times is None else torch.as_tensor(np.asarray(history_times))[None]
    ct = (
        torch.full_like(c, last)
        if candidate_times is None
        else torch.as_tensor(np.asarray(candidate_times))[None]
    )
    return RankBatch(
        users=torch.tensor([user]),
        hist_items=hi,
        hist_actions=ha,
        hist_times=ht.long(),
        items=c,
        times=ct.long(),
        labels=torch.zeros(c.shape, dtype=torch.float32),
        weights=torch.ones(c.shape, dtype=torch.float32),
        cross=None if cross is None else torch.as_tensor(np.asarray(cross, dtype=np.float32))[None],
        causal=False,
    )


@torch.no_grad()
def score_candidates(
    model: GenerativeRanker,
    history,
    candidates,
    *,
    actions=None,
    history_times=None,
    candidate_times=None,
    user: int = -1,
    cross=None,
    micro_batch: int | None = None,
) -> np.ndarray:
    """Like-logits of `candidates` (internal item ids) for one user.

    `history` is the user's internal item ids, oldest first (the model reads its last `max_len`), `actions`
    their action ids (ratings 1..5; default 5 = liked). Without times the time bias sees zero gaps.
    """
    model.eval()
    history = np.asarray(history, dtype=np.int64)[-model.cfg.max_len :]
    acts = np.full(len(history), 5) if actions is None else np.asarray(actions)[-model.cfg.max_len :]
    ht = None if history_times is None else np.asarray(history_times)[-model.cfg.max_len :]
    batch = make_batch(history, acts, candidates, ht, candidate_times, user, cross)
    return score_batch(model, batch, micro_batch or model.cfg.micro_batch)[0].numpy()
