"""How likely a trained model finds events: validation loss for scaling laws, implausible events for data cleaning.

Both read `log_likelihood(batch, items) -> [B, n]` (log p(item | history) under the model's full softmax over the
catalogue), which models declare with the `log_likelihood` capability.
"""

from __future__ import annotations

import numpy as np
import torch

from genrec.data.batching import HistoryBatch
from genrec.data.split import EvalSet
from genrec.errors import ConfigError
from genrec.runtime import module_device, to_device


def _check(model) -> None:
    if not model.can("log_likelihood"):
        raise ConfigError(f"{model.cfg.name} has no log_likelihood: it cannot score how likely an event is")


def _padded(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> torch.Tensor:
    """items[starts[i]:ends[i]] right-aligned in a [n, width] tensor (the newest `width` of each), 0 = padding."""
    idx = ends[:, None] - width + np.arange(width)[None, :]
    return torch.from_numpy(np.where(idx >= starts[:, None], items[np.clip(idx, 0, None)], 0)).long()


@torch.no_grad()
def prefix_log_likelihood(
    model,
    offsets: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """log p(item_t | items before t) of every event of CSR sequences (`offsets` [U + 1], `items` [E] internal
    ids), one float per event [E]; a user's first event has no history and gets NaN. Each event is scored from the
    `model.max_history` events before it. Raises ConfigError when the model has no `log_likelihood`."""
    _check(model)
    model.eval()
    user = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    starts = offsets[user]
    ends = np.arange(len(items))  # history of event e: items[start:e]
    out = np.full(len(items), np.nan, dtype=np.float64)
    scored = np.flatnonzero(ends > starts)
    width = model.max_history or int((ends - starts).max())
    use_ts = timestamps is not None and getattr(model, "uses_timestamps", False)
    for i in range(0, len(scored), batch_size):
        rows = scored[i : i + batch_size]
        w = min(width, int((ends[rows] - starts[rows]).max()))
        batch = HistoryBatch(
            _padded(items, starts[rows], ends[rows], w),
            timestamps=_padded(timestamps, starts[rows], ends[rows], w) if use_ts else None,
        )
        target = torch.from_numpy(items[rows]).long()[:, None]
        batch, target = to_device((batch, target), module_device(model))
        out[rows] = model.log_likelihood(batch, target)[:, 0].double().cpu().numpy()
    return out


@torch.no_grad()
def mean_negative_log_likelihood(model, examples: EvalSet, batch_size: int = 512) -> float:
    """Mean -log p(target | history) over evaluation examples (nats): the validation loss of a next-item model
    under its full softmax. Raises ConfigError when the model has no `log_likelihood`."""
    _check(model)
    model.eval()
    h = examples.history
    total = 0.0
    width = model.max_history or int(h.lengths().max())
    for i in range(0, len(examples), batch_size):
        rows = np.arange(i, min(i + batch_size, len(examples)))
        starts, ends = h.offsets[rows], h.offsets[rows + 1]
        w = max(1, min(width, int((ends - starts).max())))
        use_ts = h.timestamps is not None and getattr(model, "uses_timestamps", False)
        batch = HistoryBatch(
            _padded(h.items, starts, ends, w),
            users=torch.from_numpy(examples.users[rows]).long(),
            timestamps=_padded(h.timestamps, starts, ends, w) if use_ts else None,
        )
        target = torch.from_numpy(examples.targets[rows]).long()[:, None]
        batch, target = to_device((batch, target), module_device(model))
        total += -model.log_likelihood(batch, target)[:, 0].double().sum().item()
    return total / max(len(examples), 1)
