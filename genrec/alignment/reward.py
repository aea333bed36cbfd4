"""A reward model on real feedback: a trained ranker (like = rating >= its threshold) scoring whole lists.

reward(user, history, list) = mean over the list's items of sigmoid(like-logit of the ranker), plus
`diversity` x the list's intra-list genre diversity (mean pairwise Jaccard distance of the items' genre
sets; 0 = off). This is the reward of OneRec's iterative preference alignment (Deng et al. 2025,
https://arxiv.org/abs/2502.18965), where a reward model trained on user feedback scores generated sessions;
ours is any ranker of the ranking stack, loaded from its run directory. The history the ranker reads is the
user's real events (items, ratings and times) before the example's cut-off, in the aligned run's data.

Deviation: rankers that read history-derived cross features (`cross_features: true`) are not supported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genrec.data.schema import Sequences
from genrec.errors import ConfigError
from genrec.models.ranking.base import RankBatch


class RewardModel:
    """A ranking run's ranker as a list reward; `bind(sequences)` ties it to a retrieval run's item and user
    index and histories (see `BoundReward`)."""

    def __init__(self, run, diversity: float = 0.0) -> None:
        if not run.model.can("score_candidates"):
            raise ConfigError(
                f"{run.dir} is a {run.task.name} run; a reward model is a ranking run (e.g. `genrec train "
                f"hstu_ranker-ml-1m`)"
            )
        if run.model.n_cross:
            raise ConfigError(f"{run.dir}: rankers with cross_features cannot serve as reward models")
        self.run, self.dir, self.diversity = run, Path(run.dir), diversity
        self.ranker = run.model.eval()
        self.genres = run.feedback.features.item_genres  # [n_items + 1, G] genre ids, 0 = none

    @property
    def dataset(self) -> str:
        return self.run.cfg.data.dataset

    def bind(self, sequences: Sequences, max_unknown_items: float = 0.0) -> BoundReward:
        """The reward over `sequences`' internal ids. Raises ConfigError when more than `max_unknown_items`
        (a share) of its catalogue is unknown to the ranker: the two runs' datasets do not match."""
        ranker_items = self.run.item_ids
        mapped = ranker_items.index(list(sequences.item_ids), missing=0) if len(sequences.item_ids) else []
        mapped = np.asarray(mapped, dtype=np.int64)
        unknown = int((mapped == 0).sum())
        if unknown > max_unknown_items * len(mapped):
            raise ConfigError(
                f"item ids do not match: {unknown} of the {len(mapped)} items of the aligned run are unknown to "
                f"the reward run {self.dir} (dataset {self.dataset}); train the reward model on the same dataset"
            )
        users = np.asarray(self.run.user_ids.index(list(sequences.user_ids), missing=-1), dtype=np.int64)
        return BoundReward(self, sequences, np.concatenate([[0], mapped]), users)


class BoundReward:
    """`reward(users [B], hist_len [B], lists [B, n, N]) -> [B, n]` float rewards of n lists of N internal
    item ids (0 = empty slot, ignored) per example; the history of example b is the first hist_len[b] events of
    user users[b] in the bound sequences. A list with no item scores 0."""

    def __init__(self, model: RewardModel, seq: Sequences, item_map: np.ndarray, user_map: np.ndarray):
        self.model, self.seq, self.item_map, self.user_map = model, seq, item_map, user_map
        scale = model.run.feedback.scale  # the ranker's own rating scale turns ratings into its actions
        if seq.ratings is None:
            self.actions = np.full(
                len(seq.items), 5, dtype=np.int64
            )  # no ratings: every event counts as liked
        else:
            self.actions = scale.actions(seq.ratings)
        self.micro_batch = 256

    @torch.no_grad()
    def __call__(self, users: np.ndarray, hist_len: np.ndarray, lists: torch.Tensor) -> torch.Tensor:
        out = [
            self._score(
                users[i : i + self.micro_batch],
                hist_len[i : i + self.micro_batch],
                lists[i : i + self.micro_batch],
            )
            for i in range(0, len(users), self.micro_batch)
        ]
        return torch.cat(out) if out else torch.zeros(0, lists.shape[1])

    def like_probability(self, users: np.ndarray, hist_len: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        """[B, C] sigmoid of the ranker's like-logit of each candidate (internal ids of the bound sequences)."""
        ranker, seq = self.model.ranker, self.seq
        width = ranker.cfg.max_len
        users = np.asarray(users, dtype=np.int64)
        start = seq.offsets[users]
        end = start + np.asarray(hist_len, dtype=np.int64)
        idx = end[:, None] - width + np.arange(width)[None, :]
        valid = idx >= start[:, None]
        idx = np.where(valid, idx, 0)
        times = seq.timestamps if seq.timestamps is not None else np.zeros(len(seq.items), dtype=np.int64)
        hist_times = np.where(valid, times[idx], 0)
        last = hist_times[:, -1]
        cand = torch.from_numpy(self.item_map[items.numpy()])
        batch = RankBatch(
            users=torch.from_numpy(self.user_map[users]),
            hist_items=torch.from_numpy(np.where(valid, self.item_map[seq.items[idx]], 0)),
            hist_actions=torch.from_numpy(np.where(valid, self.actions[idx], 0)),
            hist_times=torch.from_numpy(hist_times.astype(np.int64)),
            items=cand,
            times=torch.from_numpy(np.repeat(last[:, None], cand.shape[1], 1).astype(np.int64)),
            labels=torch.zeros(cand.shape),
            weights=torch.ones(cand.shape),
            cross=None,
            causal=False,
        )
        return torch.sigmoid(ranker.score_candidates(batch).float())

    def _score(self, users, hist_len, lists: torch.Tensor) -> torch.Tensor:
        b, n, length = lists.shape
        p = self.like_probability(users, hist_len, lists.reshape(b, n * length)).reshape(b, n, length)
        real = (lists > 0) & torch.from_numpy(self.item_map[lists.numpy()] > 0)
        count = real.sum(-1)
        reward = (p * real).sum(-1) / count.clamp(min=1)
        if self.model.diversity:
            reward = reward + self.model.diversity * self.diversity(lists, real)
        return torch.where(count > 0, reward, 0.0)

    def diversity(self, lists: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """[B, n] mean pairwise Jaccard distance of the genre sets of each list's items (0 below 2 items)."""
        genres = self.model.genres
        n_genres = int(genres.max()) + 1
        g = torch.from_numpy(genres[self.item_map[lists.numpy()]])  # [B, n, N, G]
        onehot = torch.zeros(*g.shape[:-1], n_genres).scatter_(-1, g, 1.0)
        onehot[..., 0] = 0
        onehot = onehot * real[..., None]
        inter = onehot @ onehot.transpose(-1, -2)
        size = onehot.sum(-1)
        union = size[..., :, None] + size[..., None, :] - inter
        dist = torch.where(union > 0, 1 - inter / union.clamp(min=1), 0.0)
        has = real & (size > 0)
        pair = has[..., :, None] & has[..., None, :] & ~torch.eye(lists.shape[-1], dtype=torch.bool)
        return (dist * pair).sum((-1, -2)) / pair.sum((-1, -2)).clamp(min=1)
