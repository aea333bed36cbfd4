"""What every next-item sequence model shares: training windows, the outputs objectives read, scoring.

A subclass only defines `encode(items, timestamps) -> [B, L, d]` (causal: position t sees items <= t) and
owns `item_emb`, the input embeddings, which are also the output weights unless `tie_output: false` gives
the output its own table. Training predicts, at every position of a user's training sequence, the item that
follows; the objective (`train.objective`: full or sampled softmax, BCE; see `genrec.objectives`) reads
`next_item_outputs`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genrec.data.batching import HistoryBatch, SequenceBatch, length_bucketed_batches, pad_left
from genrec.data.split import Split
from genrec.models.base import Recommender


@dataclass
class NextItemOutputs:
    """What next-item objectives read from one training batch of N real (non-padding) positions."""

    query: torch.Tensor  # [N, d] projected states, one per position
    targets: torch.Tensor  # [N] the next item of each position
    weight: torch.Tensor  # [n_items + 1, d] output item table (row 0 padding)
    newest: torch.Tensor  # [B, d] unprojected state at each sequence's newest position
    seen: torch.Tensor | None = None  # [N, K] distinct items already read at each position (history_bias)
    seen_offset: torch.Tensor | None = None  # scalar logit offset of those items (history_bias)


class NextItemModel(Recommender):
    trainable = True
    capabilities = frozenset({"score", "item_vectors", "log_likelihood"})
    uses_timestamps = False

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def output_weight(self) -> torch.Tensor:
        w = self.item_emb.weight if self.cfg.tie_output else self.out_emb.weight
        return F.normalize(w, dim=-1) if self.cfg.l2_normalize else w

    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.cfg.l2_normalize:
            hidden = F.normalize(hidden, dim=-1)
        return hidden / self.cfg.temperature

    def input_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """[B, L] item ids -> [B, L, d] input vectors; a model with another item tower overrides this."""
        return self.item_emb(items)

    def embed_inputs(self, items: torch.Tensor) -> torch.Tensor:
        """sqrt(d)-scaled item vectors, plus absolute positions when the model has `pos_emb`, with dropout;
        padding positions are zero."""
        x = self.input_vectors(items) * math.sqrt(self.cfg.dim)
        if getattr(self, "pos_emb", None) is not None:
            x = x + self.pos_emb(self.position_ids(items.shape[1], items.device))[None]
        return self.dropout(x * (items > 0)[..., None])

    def position_ids(self, length: int, device: torch.device | None = None) -> torch.Tensor:
        """Right-aligned positions: the newest item is always position max_len - 1, whatever the batch width."""
        return torch.arange(self.cfg.max_len - length, self.cfg.max_len, device=device)

    def training_batches(self, split: Split, rng: np.random.Generator, batch_size: int) -> Iterator:
        train = split.train
        window = np.minimum(train.lengths(), self.cfg.max_len + 1)
        rows = np.flatnonzero(window >= 2)  # a sequence needs one input and one target
        use_ts = self.uses_timestamps and train.timestamps is not None
        for part in length_bucketed_batches(window[rows], batch_size, rng):
            chosen = rows[part]
            items = torch.from_numpy(pad_left(train.offsets, train.items, chosen, self.cfg.max_len + 1))
            ts = None
            if use_ts:
                ts = torch.from_numpy(pad_left(train.offsets, train.timestamps, chosen, self.cfg.max_len + 1))
            yield SequenceBatch(items, ts)

    def next_item_outputs(self, batch) -> NextItemOutputs:
        """One encoder pass over a training `SequenceBatch`: every real input position's query and the item that
        follows it."""
        items, ts = batch
        inputs, targets = items[:, :-1], items[:, 1:]
        hidden = self.encode(inputs, None if ts is None else ts[:, :-1])
        mask = inputs > 0
        out = NextItemOutputs(self._project(hidden[mask]), targets[mask], self.output_weight(), hidden[:, -1])
        if self.cfg.history_bias:
            out.seen, out.seen_offset = distinct_prefix_items(inputs)[mask], self.seen_offset()
        return out

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """[n_items + 1, d] output item table: score(item) = query @ row."""
        return self.output_weight().detach().contiguous()

    def query_vectors(self, batch: HistoryBatch) -> torch.Tensor:
        """[B, d] queries matching `item_vectors`."""
        return self.user_embedding(batch)

    def history_offset(self) -> float | None:
        """The learned logit offset added to the items in the input window (`history_bias`), else None."""
        return self.seen_offset().item() if self.cfg.history_bias else None

    def log_likelihood(self, batch: HistoryBatch, items: torch.Tensor) -> torch.Tensor:
        """[B, n] log p(item | history) under the full softmax over the catalogue, for `items` [B, n]."""
        scores = self.score(batch).float()
        scores[:, 0] = float("-inf")
        return torch.log_softmax(scores, dim=1).gather(1, items)

    def user_embedding(self, batch: HistoryBatch) -> torch.Tensor:
        """The hidden state after the newest history item: the query for the whole catalogue."""
        hidden = self.encode(batch.items, batch.timestamps if self.uses_timestamps else None)
        return self._project(hidden[:, -1])

    def seen_offset(self) -> torch.Tensor:
        # Scaled so that Adam (steps of about lr) can move it by tens of logits within an epoch or two.
        return self.seen_logit * HISTORY_BIAS_SCALE

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        scores = self.user_embedding(batch) @ self.output_weight().t()
        if self.cfg.history_bias:
            rows = torch.arange(len(scores), device=scores.device)
            cells = (rows[:, None].expand_as(batch.items), batch.items)
            scores[cells] = scores[cells] + self.seen_offset()
        return scores


HISTORY_BIAS_SCALE = 10.0


def distinct_prefix_items(items: torch.Tensor) -> torch.Tensor:
    """[B, L] -> [B, L, L]: row t lists the distinct items at positions <= t (repeats and the future as 0)."""
    length = items.shape[1]
    earlier = torch.ones(length, length, dtype=torch.bool, device=items.device).tril(-1)
    repeat = ((items[:, :, None] == items[:, None, :]) & earlier).any(-1)
    distinct = items.masked_fill(repeat, 0)
    causal = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
    return distinct[:, None, :] * causal


@functools.cache
def cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return getattr(torch, name)


def make_item_tables(model: NextItemModel, n_items: int, dim: int) -> None:
    """The input item table and, when untied, a separate output table (both with row 0 = padding)."""
    model.item_emb = torch.nn.Embedding(n_items + 1, dim, padding_idx=0)
    init_embedding(model.item_emb, dim)
    if not model.cfg.tie_output:
        model.out_emb = torch.nn.Embedding(n_items + 1, dim, padding_idx=0)
        init_embedding(model.out_emb, dim)
    if model.cfg.history_bias:
        model.seen_logit = torch.nn.Parameter(torch.zeros(()))


def init_embedding(emb: torch.nn.Embedding, dim: int) -> None:
    torch.nn.init.normal_(emb.weight, std=1.0 / math.sqrt(dim))
    with torch.no_grad():
        emb.weight[0].zero_()
