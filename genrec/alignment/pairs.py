"""Pair sources: preference batches (chosen vs rejected items or sessions) built from a retrieval split.

Every pair hangs on an anchor: a training user, a history (the user's first `hist_len` training events) and,
for the rating-based sources, the chosen item (the event that follows, which the user rated >= `like`).
Only the training part of each user's sequence is read (events before the validation cut-off).
- `ratings`: rejected = items the user rated <= `dislike` later in training (never the chosen one, never a
  history item); missing ones are filled with items drawn uniformly from those the user never interacted with
  in training ("not chosen"). Asking for more than one (`negatives` K) is the negative-sample augmentation
  S-DPO trains with (Chen et al. 2024, https://arxiv.org/abs/2406.09215);
- `self-play`: rejected = the model's own top predictions (`self_play_top`) for the history that the user did
  not like in training and that are not the chosen item (SPRec, Gao et al. 2024,
  https://arxiv.org/abs/2412.09243: the model's own outputs as negatives, regenerated each round);
- `reward-beams`: for `users_per_round` sampled users at their latest training event, the model proposes
  `beams` candidates, sessions of `session_len` items through `generate_sessions` when the model declares it,
  else the items of its top list; the reward model scores them and the best is chosen, the `negatives` worst
  rejected (OneRec's iterative preference alignment, Deng et al. 2025, https://arxiv.org/abs/2502.18965).
  Users whose candidates all score the same give no pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from genrec.config import PreferenceDataConfig
from genrec.data.batching import HistoryBatch
from genrec.data.split import Split
from genrec.errors import ConfigError
from genrec.objectives.preference import PreferenceBatch
from genrec.runtime import module_device, to_device


@dataclass
class Pairs:
    """P preference pairs: anchors (users, history lengths) with chosen [P] / rejected [P, R] items, or
    chosen [P, N] / rejected [P, R, N] sessions."""

    users: np.ndarray
    hist_len: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


def histories(split: Split, users: np.ndarray, hist_len: np.ndarray, max_len: int | None) -> HistoryBatch:
    """The right-aligned history batch of anchors: each user's first hist_len events (the newest max_len)."""
    seq = split.sequences
    start = seq.offsets[users]
    end = start + hist_len
    width = max(1, int(hist_len.max()) if max_len is None else min(max_len, int(hist_len.max())))
    idx = end[:, None] - width + np.arange(width)[None, :]
    valid = idx >= start[:, None]
    idx = np.where(valid, idx, 0)
    items = torch.from_numpy(np.where(valid, seq.items[idx], 0)).long()
    times = None
    if seq.timestamps is not None:
        times = torch.from_numpy(np.where(valid, seq.timestamps[idx], 0))
    return HistoryBatch(items, torch.from_numpy(np.asarray(users)).long(), times)


def train_lengths(split: Split) -> np.ndarray:
    return split.train.lengths()


def _ratings(split: Split) -> np.ndarray:
    if split.sequences.ratings is None:
        raise ConfigError("rating pairs need explicit ratings in the data (ML-100K, ML-1M)")
    return split.sequences.ratings


def rating_anchors(split: Split, cfg: PreferenceDataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, hist_len, chosen): per training user, the latest `anchors_per_user` training events rated >= like
    that have at least one event before them."""
    seq, ratings = split.sequences, _ratings(split)
    lengths = train_lengths(split)
    users, hist, chosen = [], [], []
    for u in np.flatnonzero(lengths >= 2):
        start = seq.offsets[u]
        pos = np.flatnonzero(ratings[start + 1 : start + lengths[u]] >= cfg.like) + 1
        pos = pos[-cfg.anchors_per_user :]
        users.append(np.full(len(pos), u))
        hist.append(pos)
        chosen.append(seq.items[start + pos])
    if not users or not sum(len(x) for x in users):
        raise ConfigError("no training event is rated >= like after another event: no preference pair")
    return np.concatenate(users), np.concatenate(hist).astype(np.int64), np.concatenate(chosen)


class UserSets:
    """Per-user training item sets (all, liked), built once."""

    def __init__(self, split: Split, cfg: PreferenceDataConfig) -> None:
        seq, lengths = split.sequences, train_lengths(split)
        ratings = seq.ratings
        self.all, self.liked = {}, {}
        for u in np.flatnonzero(lengths):
            sl = slice(seq.offsets[u], seq.offsets[u] + lengths[u])
            self.all[u] = set(seq.items[sl].tolist())
            liked = seq.items[sl] if ratings is None else seq.items[sl][ratings[sl] >= cfg.like]
            self.liked[u] = set(liked.tolist())


def _fill_unseen(row: list, k: int, seen: set, n_items: int, rng: np.random.Generator) -> list:
    """`row` topped up to k items drawn uniformly from items outside `seen` and `row`."""
    row = list(row)
    taken = set(row)
    for _ in range(100 * k):
        if len(row) >= k:
            break
        i = int(rng.integers(1, n_items + 1))
        if i not in seen and i not in taken:
            row.append(i)
            taken.add(i)
    if len(row) < k:
        raise ConfigError("too few items outside the user's history to sample rejected items from")
    return row


def rating_pairs(
    split: Split, cfg: PreferenceDataConfig, rng: np.random.Generator, sets: UserSets | None = None
) -> Pairs:
    """`ratings` pairs (see the module docstring): K = cfg.negatives rejected per chosen item."""
    seq, ratings = split.sequences, _ratings(split)
    sets = sets or UserSets(split, cfg)
    users, hist, chosen = rating_anchors(split, cfg)
    lengths = train_lengths(split)
    rejected = np.zeros((len(users), cfg.negatives), dtype=np.int64)
    for p, (u, t, c) in enumerate(zip(users, hist, chosen)):
        start = seq.offsets[u]
        later = slice(start + t + 1, start + lengths[u])
        history = set(seq.items[start : start + t].tolist())
        low = seq.items[later][ratings[later] <= cfg.dislike]
        low = [
            i for i in dict.fromkeys(low.tolist()) if i != c and i not in history and i not in sets.liked[u]
        ]
        if len(low) > cfg.negatives:
            low = rng.choice(low, cfg.negatives, replace=False).tolist()
        rejected[p] = _fill_unseen(low, cfg.negatives, sets.all[u] | {int(c)}, split.n_items, rng)
    return Pairs(users, hist, chosen, rejected)


@torch.no_grad()
def self_play_pairs(
    split: Split, cfg: PreferenceDataConfig, model, rng: np.random.Generator, sets: UserSets | None = None
) -> Pairs:
    """`self-play` pairs: rejected = the model's top predictions the user did not like (nor chose)."""
    sets = sets or UserSets(split, cfg)
    users, hist, chosen = rating_anchors(split, cfg)
    rejected = np.zeros((len(users), cfg.negatives), dtype=np.int64)
    was_training = model.training
    model.eval()
    top = max(cfg.self_play_top, cfg.negatives)
    for lo in range(0, len(users), 256):
        sl = slice(lo, lo + 256)
        batch = histories(split, users[sl], hist[sl], model.max_history)
        on_device = to_device(batch, module_device(model))
        ids, scores = model.recommend(on_device, top, exclude=on_device.items)
        ids = torch.where(scores > float("-inf"), ids, 0).cpu().numpy()
        for j, p in enumerate(range(lo, min(lo + 256, len(users)))):
            u, c = users[p], int(chosen[p])
            picked = [i for i in ids[j].tolist() if i > 0 and i != c and i not in sets.liked[u]][
                : cfg.negatives
            ]
            seen = sets.all[u] | {c} | set(batch.items[j].tolist())
            rejected[p] = _fill_unseen(picked, cfg.negatives, seen, split.n_items, rng)
    model.train(was_training)
    return Pairs(users, hist, chosen, rejected)


@torch.no_grad()
def reward_beam_pairs(
    split: Split, cfg: PreferenceDataConfig, model, reward, rng: np.random.Generator
) -> Pairs:
    """`reward-beams` pairs: best vs the `negatives` worst of the model's own candidates by `reward` (a
    `BoundReward`): sessions [P, N] / [P, R, N] when the model declares `generate_sessions`, else items."""
    if cfg.negatives >= cfg.beams:
        raise ConfigError(f"reward-beams needs negatives ({cfg.negatives}) < beams ({cfg.beams})")
    lengths = train_lengths(split)
    pool = np.flatnonzero(lengths >= 1)
    users = np.sort(rng.choice(pool, min(cfg.users_per_round, len(pool)), replace=False))
    hist = lengths[users].astype(np.int64)
    was_training = model.training
    model.eval()
    sessions = model.can("generate_sessions")
    keep_u, keep_h, chosen, rejected = [], [], [], []
    for lo in range(0, len(users), 256):
        u, h = users[lo : lo + 256], hist[lo : lo + 256]
        batch = to_device(histories(split, u, h, model.max_history), module_device(model))
        if sessions:
            cand, _ = model.generate_sessions(batch, cfg.beams, cfg.session_len)  # [B, n, N]
        else:
            ids, scores = model.recommend(batch, cfg.beams, exclude=batch.items)
            cand = torch.where(scores > float("-inf"), ids, 0)[:, :, None]  # [B, n, 1]
        cand = cand.cpu()  # the reward model scores on the host
        r = reward(u, h, cand)  # [B, n]
        r = torch.where(
            (cand > 0).any(-1), r, float("nan")
        )  # an empty candidate is never chosen nor rejected
        order = torch.argsort(torch.nan_to_num(r, nan=float("-inf")), dim=1, descending=True)
        n_real = (~r.isnan()).sum(1)
        for j in range(len(u)):
            m = int(n_real[j])
            if m < 1 + cfg.negatives:
                continue
            best, worst = order[j, 0], order[j, m - cfg.negatives : m]
            if r[j, best] <= r[j, worst].max():
                continue
            keep_u.append(u[j])
            keep_h.append(h[j])
            chosen.append(cand[j, best].numpy())
            rejected.append(cand[j, worst].numpy())
    model.train(was_training)
    if not keep_u:
        raise ConfigError("reward-beams: no user's candidates differ in reward; no preference pair")
    chosen_arr, rejected_arr = np.stack(chosen), np.stack(rejected)
    if not sessions:
        chosen_arr, rejected_arr = chosen_arr[:, 0], rejected_arr[:, :, 0]
    return Pairs(np.array(keep_u), np.array(keep_h), chosen_arr, rejected_arr)


def preference_batches(
    split: Split, pairs: Pairs, batch_size: int, max_len: int | None, rng: np.random.Generator
) -> Iterator[PreferenceBatch]:
    """The pairs in shuffled batches of `batch_size`, histories truncated to the model's `max_len`."""
    order = rng.permutation(len(pairs))
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        yield PreferenceBatch(
            histories(split, pairs.users[idx], pairs.hist_len[idx], max_len),
            torch.from_numpy(pairs.chosen[idx]).long(),
            torch.from_numpy(pairs.rejected[idx]).long(),
        )
