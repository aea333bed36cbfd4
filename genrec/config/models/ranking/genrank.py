"""GenRank's config (`genrec.models.ranking.genrank`)."""

from __future__ import annotations

from typing import Literal

from genrec.config.models.ranking.generative import GenerativeRankerConfig


class GenRankConfig(GenerativeRankerConfig):
    name: Literal["genrank"] = "genrank"
