"""Rankers: one file per model, found by name through `genrec.registry` (their class says task = "ranking")."""

from genrec.models.ranking.base import RankBatch, Ranker, RankerConfig

__all__ = ["RankBatch", "Ranker", "RankerConfig"]
