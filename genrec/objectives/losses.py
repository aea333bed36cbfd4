"""Next-item losses over a catalogue of item embeddings, chosen by config.

- `full_softmax`: cross-entropy over every item, computed in chunks of positions inside a custom autograd
  function so the [positions x items] logit matrix is never held whole (forward keeps only log-sum-exp).
- `sampled_softmax`: softmax over the target, the other in-batch targets and uniform negatives, with logQ
  correction (subtract log of each candidate's sampling probability) so the estimate is not biased towards
  popular items. For catalogues too large for the full softmax.
- `bce`: the original SASRec loss: one positive and one uniform negative per position, binary cross-entropy.
- `twin_info_nce`: not a next-item loss but a regulariser (the `contrastive` objective): InfoNCE between two
  dropout views.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import torch
import torch.nn.functional as F

# (generator, offset, total): where a training step's random negatives come from (`negative_stream`).
_STREAM: contextvars.ContextVar = contextvars.ContextVar("negative_stream", default=None)


@contextlib.contextmanager
def negative_stream(generator: torch.Generator, offset: int, total: int):
    """Inside this block, per-position negatives are drawn for `total` positions from `generator` and the
    `offset`-th onwards are used, and shared negatives (one set per batch) come from the same generator: a
    process that holds rows of a larger batch draws exactly the negatives one process would give them
    (`genrec.training.distributed`). Outside it, the global torch generator is used."""
    token = _STREAM.set((generator, int(offset), int(total)))
    try:
        yield
    finally:
        _STREAM.reset(token)


def draw_items(n_items: int, n: int, shared: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """[n] uniform item ids in 1..n_items: per-position (`shared=False`: this process's slice of the step's
    draw) or one set for the whole batch (`shared=True`). An explicit `generator` wins over the stream."""
    stream = _STREAM.get()
    if generator is not None or stream is None:
        return torch.randint(1, n_items + 1, (n,), generator=generator)
    gen, offset, total = stream
    if shared:
        return torch.randint(1, n_items + 1, (n,), generator=gen)
    return torch.randint(1, n_items + 1, (max(total, offset + n),), generator=gen)[offset : offset + n]


class _ChunkedSoftmaxCE(torch.autograd.Function):
    """Cross-entropy over all items, chunk by chunk, with the gradient computed in the forward pass.

    The loss is a scalar at the end of the graph, so its gradient is known up to the incoming scale: each
    [chunk x items] block of logits is computed once, turned into softmax - onehot by one fused softmax kernel
    and multiplied into d_hidden and d_weight right away; backward only rescales them. That saves recomputing
    the logits (a quarter of the matmul work) and most passes over the block, and never holds the whole logit
    matrix. Matmuls may run in bfloat16 (fast on CPUs with AMX): the softmax then reads and writes bfloat16
    but reduces in float32, and d_weight accumulates in float32. The loss is -log p(target).

    With `seen` ([N, K] item ids the user already has, distinct within a row, 0 = none) a scalar logit offset
    for those items is fitted beside the model: its gradient is that of the cross-entropy with the offset added
    to the seen items' logits and the model's logits held fixed. The model itself trains exactly as without it
    (an offset inside the model's own loss lowered Beauty validation NDCG: the tied item table then no longer
    learns to point away from what was just read). With the seen items' probability P under the model, the
    offset b turns it into sigmoid(b + logit P), so a gather per chunk is all it costs.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, dtype, with_grad, seen=None, seen_offset=None):
        n = hidden.shape[0]
        h_c, w_c = hidden.to(dtype), weight.to(dtype)
        target_prob = torch.empty(n, dtype=torch.float32, device=hidden.device)
        d_hidden = torch.empty_like(hidden) if with_grad else None
        d_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if with_grad else None
        d_offset = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, n, chunk):
            h = h_c[s : s + chunk]
            rows = torch.arange(len(h), device=hidden.device)
            t = targets[s : s + chunk]
            logits = h @ w_c.t()
            logits[:, 0] = float("-inf")  # padding is never a target
            # The kernel accumulates in float32 and writes the matmul dtype: no extra conversion pass.
            probs = torch.softmax(logits, dim=1)
            target_prob[s : s + chunk] = probs[rows, t]
            if with_grad and seen is not None:
                cols = seen[s : s + chunk]
                p_seen = probs[rows[:, None].expand_as(cols), cols].float().sum(1).clamp(0, 1)
                p_seen_offset = torch.sigmoid(seen_offset.float() + torch.logit(p_seen))
                d_offset += (p_seen_offset - (cols == t[:, None]).any(1).float()).sum()
            if with_grad:
                probs[rows, t] -= 1.0
                d_hidden[s : s + chunk] = probs @ w_c
                d_weight += probs.t() @ h  # accumulates in float32
        if with_grad:
            ctx.save_for_backward(d_hidden / n, (d_weight / n).to(weight.dtype), d_offset / n)
        # Clamped so that an underflowing target probability reports a large finite loss; gradients are exact.
        return -target_prob.clamp_min(torch.finfo(torch.float32).tiny).log().mean()

    @staticmethod
    def backward(ctx, grad):
        d_hidden, d_weight, d_offset = ctx.saved_tensors
        d_seen_offset = d_offset * grad if ctx.needs_input_grad[7] else None
        return d_hidden * grad, d_weight * grad, None, None, None, None, None, d_seen_offset


def full_softmax(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk: int = 256,
    dtype: torch.dtype = torch.float32,
    seen: torch.Tensor | None = None,
    seen_offset: torch.Tensor | None = None,
):
    """Mean cross-entropy of `targets` (indices into weight's rows) given hidden states [N, d].

    `seen` / `seen_offset`: the items each position's user already has and the scalar logit offset for them,
    fitted beside the model (see `_ChunkedSoftmaxCE`); the returned loss is the model's own.
    """
    if (seen is None) != (seen_offset is None):
        raise ValueError("seen and seen_offset go together")
    needs = [hidden, weight] + ([] if seen_offset is None else [seen_offset])
    with_grad = torch.is_grad_enabled() and any(x.requires_grad for x in needs)
    return _ChunkedSoftmaxCE.apply(hidden, weight, targets, chunk, dtype, with_grad, seen, seen_offset)


def sampled_softmax(
    hidden,
    weight,
    targets,
    n_negatives: int,
    item_log_prob: torch.Tensor,
    generator: torch.Generator | None = None,
):
    """Softmax over in-batch targets + uniform negatives with logQ correction.

    In-batch candidates are drawn in proportion to popularity (log q = item_log_prob), uniform ones with
    probability 1/I. A candidate equal to a row's own target (other than in its own column) is masked.
    """
    n_items = weight.shape[0] - 1
    uniform = draw_items(n_items, n_negatives, True, generator).to(hidden.device)
    cands = torch.cat([targets, uniform])
    logits = hidden @ weight[cands].t()
    uniform_log_q = torch.full((n_negatives,), -math.log(n_items), device=hidden.device)
    log_q = torch.cat([item_log_prob[targets], uniform_log_q])
    logits = logits - log_q[None, :]
    collide = cands[None, :] == targets[:, None]
    own = torch.zeros_like(collide)
    own[:, : len(targets)] = torch.eye(len(targets), dtype=torch.bool, device=hidden.device)
    logits = logits.masked_fill(collide & ~own, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(targets), device=hidden.device))


def twin_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between two views [N, d] of the same N states: row i of `a` must pick row i of `b`
    among all of `b` (and vice versa), by cosine similarity over `temperature`."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / temperature
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def bce_one_negative(hidden, weight, targets, generator: torch.Generator | None = None):
    n_items = weight.shape[0] - 1
    negatives = draw_items(n_items, targets.numel(), False, generator).view(targets.shape).to(hidden.device)
    pos = (hidden * weight[targets]).sum(-1)
    neg = (hidden * weight[negatives]).sum(-1)
    return F.softplus(-pos).mean() + F.softplus(neg).mean()
