"""MTGR's config (`genrec.models.ranking.mtgr`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genrec.config.models.ranking.generative import GenerativeRankerConfig


class MTGRConfig(GenerativeRankerConfig):
    name: Literal["mtgr"] = "mtgr"
    cross_features: bool = Field(True, description="history-derived user x item statistics on candidates")
