"""What every ranker shares: feature embeddings, batches, training windows, prediction.

A ranker maps a `RankBatch` (per row: a user's history of (item, action) events and candidates) to one
like-logit per candidate. Two kinds of batch exist:
- training (`causal=True`): a window of a user's consecutive training events; the candidates are the window's
  own events and candidate t may only use the events before t (plus everything of the user before the window
  through the cross features). Windows overlap by `max_len - stride` events and only the last `stride`
  events of a window carry a label, so every label sees at least max_len - stride earlier events (all of them
  near the user's start);
- evaluation (`causal=False`): a history (the last `max_len` events before the cut-off) and candidates that
  all see the whole history and never each other.
Every model gets the same features: item id, genres, year bucket (and the frozen text embedding when
`text_features` is on), the rating of each history event, user demographics, and the history-derived cross
features when `cross_features` is on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from genrec.config.models.ranking.base import RankerConfig
from genrec.data.feedback import CROSS_FEATURES, N_ACTIONS, FeedbackData, Impressions, SideFeatures
from genrec.models.base import Capable
from genrec.registry import register
from genrec.runtime import module_device, to_device


@dataclass
class RankBatch:
    users: torch.Tensor  # [B] internal user index (-1 = unknown)
    hist_items: torch.Tensor  # [B, L] left-padded, 0 = padding
    hist_actions: torch.Tensor  # [B, L]
    hist_times: torch.Tensor  # [B, L]
    items: torch.Tensor  # [B, C] candidates, 0 = padding
    times: torch.Tensor  # [B, C]
    labels: torch.Tensor  # [B, C] float
    weights: torch.Tensor  # [B, C] 1 where the label counts
    cross: torch.Tensor | None  # [B, C, F]
    causal: bool


class ItemFeatures(nn.Module):
    """One vector per item: id + mean of genre embeddings + year bucket (+ projected frozen text embedding)."""

    def __init__(self, n_items: int, f: SideFeatures, dim: int, text: np.ndarray | None) -> None:
        super().__init__()
        self.id_emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.genre_emb = nn.Embedding(f.n_genres + 1, dim, padding_idx=0)
        self.year_emb = nn.Embedding(f.n_years + 1, dim, padding_idx=0)
        for emb in (self.id_emb, self.genre_emb, self.year_emb):
            nn.init.normal_(emb.weight, std=dim**-0.5)
            with torch.no_grad():
                emb.weight[0].zero_()
        # Feature tables come from the data, not from training: rebuilt on load, not stored with the weights.
        self.register_buffer("genres", torch.from_numpy(f.item_genres), persistent=False)
        self.register_buffer("years", torch.from_numpy(f.item_year), persistent=False)
        self.text_proj = None
        if text is not None:
            table = np.concatenate([np.zeros((1, text.shape[1]), dtype=np.float32), text.astype(np.float32)])
            self.register_buffer("text", torch.from_numpy(table), persistent=False)
            self.text_proj = nn.Linear(text.shape[1], dim)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        g = self.genres[items]
        genre = self.genre_emb(g).sum(-2) / (g > 0).sum(-1, keepdim=True).clamp(min=1)
        x = self.id_emb(items) + genre + self.year_emb(self.years[items])
        if self.text_proj is not None:
            x = x + self.text_proj(self.text[items])
        return x


class UserFeatures(nn.Module):
    """Demographics (gender, age bucket, occupation) as embeddings; an unknown user (-1) gets zeros."""

    def __init__(self, f: SideFeatures, dim: int) -> None:
        super().__init__()
        self.register_buffer("cats", torch.from_numpy(f.user_cats), persistent=False)
        self.tables = nn.ModuleList(nn.Embedding(v, dim, padding_idx=0) for v in f.user_vocab)
        for emb in self.tables:
            nn.init.normal_(emb.weight, std=dim**-0.5)
            with torch.no_grad():
                emb.weight[0].zero_()

    def fields(self, users: torch.Tensor) -> torch.Tensor:
        """[B, 3, d]: one vector per demographic field."""
        cats = self.cats[users.clamp(min=0)] * (users >= 0)[:, None]
        return torch.stack([t(cats[:, j]) for j, t in enumerate(self.tables)], dim=1)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.fields(users).sum(1)


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers += [nn.SiLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


register_ranker = register  # rankers join the one registry (their config says task = "ranking")


class Ranker(Capable, nn.Module):
    """Base of rankers: `logits(batch) -> [B, C]` like-logits of each row's candidates. Capabilities as in
    `genrec.models.base`; every ranker can `score_candidates`."""

    config_class: ClassVar[type[RankerConfig]]
    capabilities: ClassVar[frozenset[str]] = frozenset({"score_candidates"})
    trainable: ClassVar[bool] = True
    action_vocab: ClassVar[int] = N_ACTIONS + 1

    def __init__(self, cfg: RankerConfig, data: FeedbackData, text: np.ndarray | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = data.n_items
        self.n_cross = len(CROSS_FEATURES) if cfg.cross_features else 0
        if cfg.text_features and text is None:
            raise ValueError("text_features needs the item text embeddings")
        self.item_features = ItemFeatures(
            data.n_items, data.features, cfg.dim, text if cfg.text_features else None
        )
        self.user_features = UserFeatures(data.features, cfg.dim)
        self.action_emb = nn.Embedding(self.action_vocab + 1, cfg.dim, padding_idx=0)
        nn.init.normal_(self.action_emb.weight, std=cfg.dim**-0.5)
        self.eval_batch_size = 64
        self._event_cross: np.ndarray | None = None

    @property
    def max_history(self) -> int:
        return self.cfg.max_len

    @torch.no_grad()
    def score_candidates(self, batch: RankBatch) -> torch.Tensor:
        """[B, C] like-logits of `batch.items` (evaluation batch: every candidate sees the whole history)."""
        return self.logits(batch)

    # --- the model ---------------------------------------------------------------------------------------
    def logits(self, batch: RankBatch) -> torch.Tensor:
        """[B, C] like-logits."""
        raise NotImplementedError

    @staticmethod
    def visible(batch: RankBatch) -> torch.Tensor:
        """[B, C, L] bool: the history events each candidate may use (in a training window, candidate t is
        history event t and sees only the events before it)."""
        c, length = batch.items.shape[1], batch.hist_items.shape[1]
        mask = (batch.hist_items > 0)[:, None, :].expand(-1, c, -1)
        if batch.causal:
            mask = mask & torch.ones(c, length, dtype=torch.bool, device=mask.device).tril(-1)
        return mask

    # --- training --------------------------------------------------------------------------------------
    def _windows(self, data: FeedbackData) -> np.ndarray:
        """[n, 4] (user, lo, hi, label_from) flat event indices of every training window (deterministic)."""
        if getattr(self, "_window_cache", None) is not None:
            return self._window_cache
        w = self.cfg.max_len
        stride = min(self.cfg.stride or max(1, w // 2), w)
        rows = []
        starts = data.sequences.offsets[:-1]
        for u in range(data.n_users):
            s, e = int(starts[u]), int(data.train_end[u])
            hi = e
            while hi - s >= 2:
                lo = max(s, hi - w)
                rows.append((u, lo, hi, s + 1 if lo == s else hi - stride))
                if lo == s:
                    break
                hi -= stride
        self._window_cache = np.array(rows, dtype=np.int64).reshape(-1, 4)
        return self._window_cache

    def event_cross(self, data: FeedbackData) -> np.ndarray:
        """Cross features of every event as a training impression (history = all its earlier events)."""
        if self._event_cross is None:
            ev = np.arange(len(data.sequences.items))
            users = np.repeat(np.arange(data.n_users), data.sequences.lengths())
            self._event_cross = data.cross_features(users, data.sequences.items, ev)
        return self._event_cross

    def training_batches(self, data: FeedbackData, rng: np.random.Generator, batch_size: int) -> Iterator:
        windows = self._windows(data)
        order = rng.permutation(len(windows))
        w = self.cfg.max_len
        for i in range(0, len(order), batch_size):
            user, lo, hi, label_from = windows[order[i : i + batch_size]].T
            idx = hi[:, None] - w + np.arange(w)[None, :]
            valid = idx >= lo[:, None]
            idx = np.where(valid, idx, 0)
            items = np.where(valid, data.sequences.items[idx], 0)
            actions = np.where(valid, data.actions[idx], 0)
            times = np.where(valid, data.sequences.timestamps[idx], 0)
            weights = (valid & (idx >= label_from[:, None])).astype(np.float32)
            cross = None
            if self.n_cross:
                cross = torch.from_numpy(self.event_cross(data)[idx] * valid[..., None])
            t_items, t_times = torch.from_numpy(items), torch.from_numpy(times)
            yield RankBatch(
                users=torch.from_numpy(user),
                hist_items=t_items,
                hist_actions=torch.from_numpy(actions),
                hist_times=t_times,
                items=t_items,
                times=t_times,
                labels=torch.from_numpy(np.where(valid, data.labels[idx], 0.0).astype(np.float32)),
                weights=torch.from_numpy(weights),
                cross=cross,
                causal=True,
            )

    # --- evaluation ------------------------------------------------------------------------------------
    def eval_batches(self, data: FeedbackData, imps: Impressions, batch_size: int) -> Iterator:
        """(impression indices [B, C] with -1 padding, RankBatch): each row is one user's history and up to
        `candidates_per_row` of their impressions (a user with more gets several rows with the same history)."""
        order = np.lexsort((np.arange(len(imps)), imps.users))
        cuts = np.flatnonzero(np.diff(imps.users[order])) + 1
        chunk = self.cfg.candidates_per_row
        rows = [g[i : i + chunk] for g in np.split(order, cuts) for i in range(0, len(g), chunk)]
        w = self.cfg.max_len
        for i in range(0, len(rows), batch_size):
            part = rows[i : i + batch_size]
            c = max(len(r) for r in part)
            index = np.full((len(part), c), -1, dtype=np.int64)
            for j, r in enumerate(part):
                index[j, : len(r)] = r
            first = index[:, 0]
            user = imps.users[first]
            start, end = data.sequences.offsets[user], imps.hist_end[first]
            idx = end[:, None] - w + np.arange(w)[None, :]
            valid = idx >= start[:, None]
            idx = np.where(valid, idx, 0)
            have = index >= 0
            safe = np.where(have, index, 0)
            cross = None
            if self.n_cross:
                cross = data.cross_features(
                    imps.users[safe].ravel(), imps.items[safe].ravel(), imps.hist_end[safe].ravel()
                )
                cross = torch.from_numpy(cross.reshape(len(part), c, -1) * have[..., None])
            yield (
                index,
                RankBatch(
                    users=torch.from_numpy(user),
                    hist_items=torch.from_numpy(np.where(valid, data.sequences.items[idx], 0)),
                    hist_actions=torch.from_numpy(np.where(valid, data.actions[idx], 0)),
                    hist_times=torch.from_numpy(np.where(valid, data.sequences.timestamps[idx], 0)),
                    items=torch.from_numpy(np.where(have, imps.items[safe], 0)),
                    times=torch.from_numpy(np.where(have, imps.cand_times[safe], 0)),
                    labels=torch.from_numpy(np.where(have, imps.labels[safe], 0.0).astype(np.float32)),
                    weights=torch.from_numpy(have.astype(np.float32)),
                    cross=cross,
                    causal=False,
                ),
            )

    @torch.no_grad()
    def predict(self, data: FeedbackData, imps: Impressions, batch_size: int | None = None) -> np.ndarray:
        """Like-logit of every impression."""
        was_training = self.training
        self.eval()
        out = np.zeros(len(imps), dtype=np.float32)
        device = module_device(self)
        for index, batch in self.eval_batches(data, imps, batch_size or self.eval_batch_size):
            z = self.logits(to_device(batch, device)).float().cpu().numpy()
            have = index >= 0
            out[index[have]] = z[have]
        self.train(was_training)
        return out
