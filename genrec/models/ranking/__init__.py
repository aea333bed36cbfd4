"""Rankers: one file per model; importing this package registers them in `RANKERS`."""

from genrec.models.ranking import din, genrank, hstu_ranker, mtgr  # noqa: F401  (registration side effect)
from genrec.models.ranking.base import RANKERS, RankBatch, Ranker, RankerConfig

__all__ = ["RANKERS", "RankBatch", "Ranker", "RankerConfig"]
