"""The unified search-and-recommendation model's config (`genrec.models.unified`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genrec.config.models.sasrec import SASRecConfig


class UnifiedConfig(SASRecConfig):
    name: Literal["unified"] = "unified"
    encoder: str | None = Field(
        None, description="text encoder of queries and item text (default: bundled all-MiniLM-L6-v2)"
    )
    text_dim: int = Field(384, ge=1, description="size of the text embeddings (384 for MiniLM-L6)")
    search_weight: float = Field(
        1.0, gt=0, le=1, description="share of training positions also used as search examples"
    )
    query_match: bool = Field(
        True, description="add a learned-scale cosine between query and item text to search scores"
    )
    match_dim: int = Field(
        64,
        ge=0,
        description="the query-text match is computed on the top match_dim singular directions of the item "
        "text vectors (dot products kept as well as any rank allows), so that the search half of training costs "
        "little more than the recommendation half; 0 = the full text vectors",
    )
