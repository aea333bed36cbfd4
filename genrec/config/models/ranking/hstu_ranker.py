"""The HSTU ranker's config (`genrec.models.ranking.hstu_ranker`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genrec.config.models.ranking.generative import GenerativeRankerConfig


class HSTURankerConfig(GenerativeRankerConfig):
    name: Literal["hstu_ranker"] = "hstu_ranker"
    action_item: bool = Field(True, description="action tokens add the features of the item they rate")
    head_features: bool = Field(True, description="the head reads the candidate's input token too")
    compress_history: bool = Field(
        False,
        description="fuse each older event's item and action into one token and mean-pool them in groups of "
        "compress_group; the newest compress_keep events stay interleaved (docs/long-sequences.md)",
    )
    compress_keep: int | None = Field(
        None, ge=1, description="events kept raw with compress_history (default: the window stride)"
    )
    compress_group: int = Field(5, ge=1, description="older events per pooled token with compress_history")
