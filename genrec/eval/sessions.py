"""Session recall: how much of a user's true next session a model's N-item list holds.

For every evaluated user, history = everything before the cut-off and true session = the user's first N
interactions at or after it (fewer where the user has fewer). A model that generates sessions
(`generate_sessions`) contributes its best beam; any other model its top-N list (`recommend`, history
excluded), so session generators and next-item models are compared on the same users and the same N.

session recall@N = |generated ∩ true| / |true|, averaged over users; generated lists count only real, distinct
items outside the history (as in `evaluator.py`). The history is excluded from every list.

Only a temporal split defines "the next N events after the cut-off" for each user; under leave-one-out the later
events are the validation and test targets themselves, so no session is scored there.
"""

from __future__ import annotations

import numpy as np
import torch

from genrec.config import EvalConfig
from genrec.data.batching import history_batch, pad_left
from genrec.data.split import EvalSet, Split
from genrec.errors import ConfigError
from genrec.eval.metrics import compact_lists
from genrec.runtime import module_device, to_device


def true_sessions(split: Split, examples: EvalSet, length: int) -> np.ndarray:
    """[E, length] the items each example's user interacted with right after its history (0 = none left)."""
    seq = split.sequences
    start = seq.offsets[examples.users] + examples.history.lengths()
    end = seq.offsets[examples.users + 1]
    idx = start[:, None] + np.arange(length)[None]
    return np.where(idx < end[:, None], seq.items[np.clip(idx, 0, len(seq.items) - 1)], 0)


def session_users(examples: EvalSet, cfg: EvalConfig) -> np.ndarray:
    """Rows of `examples` scored: all, or a seeded sample of `cfg.session_users` of them."""
    rows = np.arange(len(examples))
    if cfg.session_users and cfg.session_users < len(rows):
        rows = np.sort(np.random.default_rng(cfg.seed).choice(rows, cfg.session_users, replace=False))
    return rows


@torch.no_grad()
def evaluate_sessions(model, split: Split, which: str, cfg: EvalConfig, reward=None) -> dict:
    """{session_recall@N, users, source} on the `which` ("valid" / "test") users of a temporal split, and
    session_reward@N, the mean reward of the evaluated lists, when `reward` (a bound reward model, the
    `ListContext.reward` callable) is given. Raises ConfigError on another split."""
    if split.kind != "temporal":
        raise ConfigError("session metrics need a temporal split (data.split=temporal)")
    length = cfg.session_len
    examples = getattr(split, which)
    rows = session_users(examples, cfg)
    truth = torch.from_numpy(true_sessions(split, examples, length)).long()
    hist = examples.history
    generates = model.can("generate_sessions")
    device = module_device(model)
    was_training = model.training
    model.eval()
    total, users, reward_sum = 0.0, 0, 0.0
    for start in range(0, len(rows), cfg.batch_size):
        part = rows[start : start + cfg.batch_size]
        batch = history_batch(
            hist.offsets, hist.items, part, model.max_history, examples.users[part], hist.timestamps
        )
        seen = torch.from_numpy(pad_left(hist.offsets, hist.items, part, None)).long()
        batch, seen = to_device((batch, seen), device)
        if generates:
            items, scores = model.generate_sessions(batch, cfg.session_beam, length, exclude=seen)
            ids, valid = items[:, 0], torch.isfinite(scores[:, :1]).expand(-1, length)
        else:
            ids, values = model.recommend(batch, length, exclude=seen)
            valid = values > float("-inf")
        in_history = (ids[:, :, None] == seen[:, None, :]).any(-1)
        listed = compact_lists(ids, valid & ~in_history).cpu()
        true = truth[part]
        hits = ((listed[:, :, None] == true[:, None, :]) & (listed[:, :, None] > 0)).any(1)  # [B, length]
        size = (true > 0).sum(1)
        keep = size > 0
        total += float((hits.sum(1)[keep] / size[keep]).sum())
        users += int(keep.sum())
        if reward is not None:
            hist_len = hist.offsets[part + 1] - hist.offsets[part]
            r = reward(examples.users[part], hist_len, listed[:, None, :])[:, 0]
            reward_sum += float(r[keep].sum())
    model.train(was_training)
    source = f"best of {cfg.session_beam} generated sessions" if generates else f"top-{length} list"
    out = {f"session_recall@{length}": round(total / max(users, 1), 6), "users": users, "source": source}
    if reward is not None:
        out[f"session_reward@{length}"] = round(reward_sum / max(users, 1), 6)
    return out


def session_protocol(cfg: EvalConfig) -> str:
    n = cfg.session_len
    sample = f"a seeded sample of {cfg.session_users} users" if cfg.session_users else "every evaluated user"
    return (
        f"*_sessions: session recall@{n} = |list ∩ true session| / |true session| averaged over {sample}; true "
        f"session = the user's first {n} interactions at or after the cut-off (history = all before it); list = "
        f"the best of {cfg.session_beam} generated sessions for models that generate sessions, else the top-{n} "
        f"list; history items excluded; session_reward@{n} (with a reward model) = the mean reward of that list "
        "over the same users (those with a true session)"
    )
