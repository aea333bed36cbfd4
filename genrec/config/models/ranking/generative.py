"""What the generative rankers' configs share (`genrec.models.ranking.generative`)."""

from __future__ import annotations

from pydantic import Field

from genrec.config.models.ranking.base import RankerConfig


class GenerativeRankerConfig(RankerConfig):
    dim: int = Field(64, ge=4)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    time_buckets: int = Field(32, ge=0, description="log2 buckets of time gaps; 0 disables the time bias")
    micro_batch: int = Field(128, ge=1, description="M-FALCON: candidates per pass over the cached history")
