"""Cold-start protocol: hold out the newest items from training, report warm and cold metrics separately.

1. Cold items: about `share` of the catalogue, the items first seen last. With timestamps an item's first-seen
   time is its earliest interaction; without them (Amazon P5 sequences keep only each user's order) it is the
   earliest relative position at which any user has it, position / (sequence length - 1), so an item that only
   ever appears at the end of sequences counts as new. Ties are broken by fewer interactions, then item index.
2. The leave-one-out split is made as usual; then every interaction with a cold item is removed from the
   training sequences, and validation (checkpoint selection) keeps only examples whose target is warm.
3. Test examples are scored on the full catalogue (cold items included) and reported twice: `warm` (target seen
   in training) and `cold` (target is a held-out item). Histories are left as they are: a user may have
   interacted with a new item before, and models must cope with an item they never trained on there too.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from genrec.config import EvalConfig
from genrec.data.split import Csr, EvalSet, Split
from genrec.decoding.cold_places import cold_count, keep_cold_places
from genrec.eval.evaluator import evaluate
from genrec.models.base import Capable, candidate_scores


def _first_seen(split: Split) -> tuple[np.ndarray, str]:
    """Per interaction, the value whose minimum over an item's interactions is its first-seen time; the rule."""
    seq = split.sequences
    if seq.timestamps is not None and (seq.timestamps >= 0).all():
        return seq.timestamps.astype(np.float64), "earliest timestamp"
    lengths = seq.lengths()
    pos = np.arange(len(seq.items)) - np.repeat(seq.offsets[:-1], lengths)
    rule = "earliest relative position (position / (length - 1)) in any user's sequence; no timestamps"
    return pos / np.maximum(np.repeat(lengths, lengths) - 1, 1), rule


def cold_items(split: Split, share: float = 0.05) -> np.ndarray:
    """Internal ids of the items first seen last (about `share` of the catalogue)."""
    seq = split.sequences
    n = seq.n_items
    when, _ = _first_seen(split)
    first_seen = np.full(n + 1, np.inf)
    np.minimum.at(first_seen, seq.items, when)
    counts = np.bincount(seq.items, minlength=n + 1)
    ids = np.arange(1, n + 1)
    order = np.lexsort((ids, counts[1:], -first_seen[1:]))  # newest first, then rarest
    k = max(1, int(round(share * n)))
    return np.sort(ids[order[:k]])


def _drop_items(csr: Csr, drop: np.ndarray) -> Csr:
    keep = ~drop[csr.items]
    lengths = np.bincount(np.repeat(np.arange(len(csr)), csr.lengths())[keep], minlength=len(csr))
    offsets = np.zeros(len(csr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ts = None if csr.timestamps is None else csr.timestamps[keep]
    return Csr(offsets, csr.items[keep], ts)


def _subset(examples: EvalSet, rows: np.ndarray) -> EvalSet:
    hist = examples.history
    lengths = hist.lengths()[rows]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    gather = np.repeat(hist.offsets[rows] - offsets[:-1], lengths) + np.arange(offsets[-1])
    ts = None if hist.timestamps is None else hist.timestamps[gather]
    return EvalSet(examples.users[rows], Csr(offsets, hist.items[gather], ts), examples.targets[rows])


def cold_start_split(split: Split, share: float = 0.05) -> tuple[Split, np.ndarray, dict]:
    """(split with cold items removed from training and validation targets, boolean mask over item ids, details)."""
    cold = cold_items(split, share)
    is_cold = np.zeros(split.n_items + 1, dtype=bool)
    is_cold[cold] = True
    train = _drop_items(split.train, is_cold)
    valid = _subset(split.valid, np.flatnonzero(~is_cold[split.valid.targets]))
    test_cold = int(is_cold[split.test.targets].sum())
    details = {
        "protocol": "cold start: the items first seen last are held out of training; test metrics reported "
        "separately for warm targets (item in training) and cold targets (held-out item); full catalogue",
        "cold_items": int(len(cold)),
        "cold_share": round(len(cold) / split.n_items, 4),
        "first_seen_rule": _first_seen(split)[1],
        "train_interactions_removed": int(len(split.train.items) - len(train.items)),
        "valid_examples_kept_warm": int(len(valid)),
        "test_examples_warm": int(len(split.test) - test_cold),
        "test_examples_cold": test_cold,
    }
    out = replace(split, train=train, valid=valid, details={**split.details, "cold_start": details})
    return out, is_cold, details


class ColdPlaces(Capable, torch.nn.Module):
    """Evaluation view of a full-catalogue model with places kept for cold items (`decoding/cold_places.py`): the
    same policy TIGER's `cold_share` applies, so that models are compared with the same number of cold places."""

    capabilities = frozenset({"generate"})

    def __init__(self, model, is_cold: np.ndarray, share: float) -> None:
        super().__init__()
        self.model, self.share = model, share
        self.register_buffer("is_cold", torch.from_numpy(is_cold))
        self.max_history = model.max_history
        self.n_items = model.n_items

    @torch.no_grad()
    def recommend(self, batch, k: int, exclude: torch.Tensor | None = None):
        scores = candidate_scores(self.model, batch, exclude)
        k = min(k, self.n_items)
        n_cold = min(cold_count(self.share, k), int(self.is_cold.sum()))
        warm_scores = scores.masked_fill(self.is_cold, float("-inf"))
        cold_scores = scores.masked_fill(~self.is_cold, float("-inf"))
        warm = torch.topk(warm_scores, k - n_cold, dim=1)
        cold = torch.topk(cold_scores, n_cold, dim=1)
        # A group short of its places (its items excluded) gives them to the other, which then needs more.
        if (cold.values == float("-inf")).any():
            warm = torch.topk(warm_scores, k, dim=1)
        if (warm.values == float("-inf")).any():
            cold = torch.topk(cold_scores, min(k, int(self.is_cold.sum())), dim=1)
        return keep_cold_places(warm.indices, warm.values, cold.indices, cold.values, self.share, k)


def evaluate_warm_cold(model, split: Split, is_cold: np.ndarray, cfg: EvalConfig) -> dict:
    """Test metrics of both conventions for warm-target and cold-target examples, and for the cold targets split
    by whether the history already holds another cold item (`cold_after_cold`) or not (`cold_first`): a model
    that only learned "untrained items go together" scores on the first group alone."""
    test = split.test
    hist = test.history
    cum = np.concatenate([[0], np.cumsum(is_cold[hist.items])])
    after_cold = cum[hist.offsets[1:]] > cum[hist.offsets[:-1]]
    cold_target = is_cold[test.targets]
    out = {}
    for name, rows in (
        ("warm", np.flatnonzero(~cold_target)),
        ("cold", np.flatnonzero(cold_target)),
        ("cold_after_cold", np.flatnonzero(cold_target & after_cold)),
        ("cold_first", np.flatnonzero(cold_target & ~after_cold)),
    ):
        res = evaluate(model, _subset(test, rows), split.n_items, cfg)
        out[name], out[f"{name}_unfiltered"] = res["filtered"], res["unfiltered"]
    return out
