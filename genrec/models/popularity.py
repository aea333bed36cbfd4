"""Most-popular baseline: every user gets the items most interacted with in training."""

from __future__ import annotations

import numpy as np
import torch

from genrec.config.models.popularity import PopularityConfig
from genrec.data.split import Split
from genrec.models.base import Recommender, Resources, register


@register
class Popularity(Recommender):
    config_class = PopularityConfig

    def __init__(self, cfg: PopularityConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        self.register_buffer("counts", torch.zeros(n_items + 1))

    @property
    def max_history(self) -> int | None:
        return 1  # the history is not read; only exclusion uses it

    def prepare(self, split: Split, resources: Resources) -> dict:
        counts = np.bincount(split.train.items, minlength=self.n_items + 1).astype(np.float32)
        self.counts.copy_(torch.from_numpy(counts))
        return {"fitted_on_interactions": int(len(split.train.items))}

    def score(self, batch) -> torch.Tensor:
        return self.counts.expand(batch.items.shape[0], -1)
