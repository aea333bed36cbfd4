"""Train / validation / test splits over encoded sequences.

Every evaluation example is (user, history, target): the model sees the history and must rank the target.
- leave-one-out: per user, the last item is the test target (history = all before it), the second-to-last the
  validation target (history = all before it); training sees everything before the validation target.
- temporal: two global time cut-offs (quantiles of all timestamps). Training sees interactions before the first;
  a user's validation target is their first interaction in [cut1, cut2) with history before cut1; the test target
  is their first interaction at or after cut2 with history before cut2. Users with no earlier history are cold
  users and are not evaluated (the count is recorded).

Both record how many validation / test targets never occur in training and warn (log `genrec.data`, and the
details' `warnings`) when users' test target repeats their validation target, which exact duplicate rows cause.
`heldout_events` marks, before any index exists, the events a split will hold out: what fits statistics on the
data (cleaning) must leave them alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from genrec.data.schema import OfSequences, Sequences
from genrec.errors import DataError

log = logging.getLogger("genrec.data")


@dataclass
class Csr:
    offsets: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class EvalSet:
    users: np.ndarray  # internal user index of each example
    history: Csr  # one history row per example
    targets: np.ndarray  # internal item index

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class Split(OfSequences):
    kind: str
    sequences: Sequences
    train: Csr  # one row per user (internal user index), possibly empty
    valid: EvalSet
    test: EvalSet
    details: dict


def _take_prefix(seq: Sequences, keep: np.ndarray) -> Csr:
    """Per user, the first keep[u] interactions."""
    lengths = seq.lengths()
    keep = np.clip(keep, 0, lengths)
    pos = np.arange(len(seq.items)) - np.repeat(seq.offsets[:-1], lengths)
    mask = pos < np.repeat(keep, lengths)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(keep, out=offsets[1:])
    ts = None if seq.timestamps is None else seq.timestamps[mask]
    return Csr(offsets, seq.items[mask], ts)


def _eval_set(seq: Sequences, users: np.ndarray, history_len: np.ndarray) -> EvalSet:
    """Examples whose history is each user's first `history_len` items and target the next one."""
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(history_len, out=offsets[1:])
    # Flat positions of every history item: user start + position within the history.
    gather = np.repeat(seq.offsets[users] - offsets[:-1], history_len) + np.arange(offsets[-1])
    ts = None if seq.timestamps is None else seq.timestamps[gather]
    targets = seq.items[seq.offsets[users] + history_len]
    return EvalSet(users.astype(np.int64), Csr(offsets, seq.items[gather], ts), targets)


def time_cutoffs(timestamps: np.ndarray, valid_quantile: float, test_quantile: float) -> tuple[int, int]:
    """The temporal split's (validation, test) cut-offs: those quantiles of all timestamps, in whole seconds."""
    if not 0 < valid_quantile < test_quantile < 1:
        raise DataError("temporal split needs 0 < valid_quantile < test_quantile < 1")
    cut_valid, cut_test = np.quantile(timestamps, [valid_quantile, test_quantile]).astype(np.int64)
    return int(cut_valid), int(cut_test)


def heldout_events(
    user: np.ndarray,
    timestamps: np.ndarray | None,
    kind: str,
    valid_quantile: float = 0.8,
    test_quantile: float = 0.9,
) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(bool [E] mask of the events the split `kind` holds out for evaluation, the temporal cut-offs or None), for
    events sorted by (user, time, position) with `user` their user codes: leave-one-out, each user's last two
    events when the user has at least three (`leave_one_out` evaluates only those); temporal, every event at or
    after the validation cut-off (targets and the test period's histories). Raises DataError for a temporal
    split without a time on every event."""
    n = len(user)
    if kind == "temporal":
        if timestamps is None or (timestamps < 0).any():
            raise DataError("a temporal split needs a timestamp on every interaction")
        cuts = time_cutoffs(timestamps, valid_quantile, test_quantile)
        return timestamps >= cuts[0], cuts
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if n else np.zeros(0, dtype=np.int64)
    lengths = np.diff(np.r_[starts, n])
    from_end = np.repeat(starts + lengths, lengths) - np.arange(n)  # 1 for a user's last event
    return (from_end <= 2) & (np.repeat(lengths, lengths) >= 3), None


def _target_details(train: Csr, valid: EvalSet, test: EvalSet, n_items: int) -> dict:
    """Counts a reader of the results needs: targets that never occur in training, and users whose test target
    repeats their validation target (a warning: usually duplicate rows, an easy hit for models that repeat)."""
    seen = np.zeros(n_items + 1, dtype=bool)
    seen[train.items] = True
    both, in_valid, in_test = np.intersect1d(valid.users, test.users, return_indices=True)
    repeats = int((valid.targets[in_valid] == test.targets[in_test]).sum())
    out = {
        "valid_targets_not_in_training": int((~seen[valid.targets]).sum()),
        "test_targets_not_in_training": int((~seen[test.targets]).sum()),
        "test_target_repeats_valid_target": repeats,
    }
    if repeats:
        warning = (
            f"{repeats} of {len(both)} users' test target is the same item as their validation target "
            "(duplicate rows?); data.dedup=first removes repeated (user, item) pairs"
        )
        log.warning("warning: %s", warning)
        out["warnings"] = [warning]
    return out


def leave_one_out(seq: Sequences) -> Split:
    lengths = seq.lengths()
    eligible = np.flatnonzero(lengths >= 3)
    train_len = np.where(lengths >= 3, lengths - 2, lengths)
    train = _take_prefix(seq, train_len)
    valid = _eval_set(seq, eligible, lengths[eligible] - 2)
    test = _eval_set(seq, eligible, lengths[eligible] - 1)
    details = {
        "split": "leave-one-out",
        "rule": "per user: last item = test target, second-to-last = validation target, "
        "training on the items before",
        "evaluated_users": int(len(eligible)),
        "train_only_users": int(seq.n_users - len(eligible)),
        **_target_details(train, valid, test, seq.n_items),
    }
    return Split("leave_one_out", seq, train, valid, test, details)


def temporal(
    seq: Sequences,
    valid_quantile: float = 0.8,
    test_quantile: float = 0.9,
    cutoffs: tuple[int, int] | None = None,
) -> Split:
    """The temporal split (module docstring) at the quantiles' cut-offs, or at `cutoffs` when given (fixed
    before cleaning, which must not move them)."""
    if seq.timestamps is None or (seq.timestamps < 0).any():
        raise DataError("a temporal split needs a timestamp on every interaction")
    if cutoffs is None:
        cutoffs = time_cutoffs(seq.timestamps, valid_quantile, test_quantile)
    cut_valid, cut_test = cutoffs
    lengths = seq.lengths()
    user_of = np.repeat(np.arange(seq.n_users), lengths)
    # Sequences are sorted by time within a user, so "count before cut" is a prefix length.
    before_valid = np.bincount(user_of, weights=seq.timestamps < cut_valid, minlength=seq.n_users).astype(
        np.int64
    )
    before_test = np.bincount(user_of, weights=seq.timestamps < cut_test, minlength=seq.n_users).astype(
        np.int64
    )
    train = _take_prefix(seq, before_valid)
    # Validation targets must also fall before the test cut, so the two never overlap.
    v_users = np.flatnonzero((before_valid > 0) & (before_test > before_valid))
    t_users = np.flatnonzero((before_test > 0) & (lengths > before_test))
    valid = _eval_set(seq, v_users, before_valid[v_users])
    test = _eval_set(seq, t_users, before_test[t_users])
    cold_valid = int(((before_valid == 0) & (before_test > 0)).sum())
    cold_test = int(((before_test == 0) & (lengths > 0)).sum())
    details = {
        "split": "temporal",
        "rule": "global time cut-offs at the given quantiles of all timestamps; target = a user's first "
        "interaction after the cut-off, history = everything before it",
        "valid_cutoff": int(cut_valid),
        "test_cutoff": int(cut_test),
        "valid_quantile": valid_quantile,
        "test_quantile": test_quantile,
        "valid_users": int(len(v_users)),
        "test_users": int(len(t_users)),
        "cold_users_not_evaluated": {"valid": cold_valid, "test": cold_test},
        **_target_details(train, valid, test, seq.n_items),
    }
    return Split("temporal", seq, train, valid, test, details)
