"""Item-KNN's config (`genrec.models.itemknn`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genrec.config.base import ModelConfig


class ItemKNNConfig(ModelConfig):
    name: Literal["itemknn"] = "itemknn"
    neighbours: int = Field(100, ge=1)
    shrink: float = Field(10.0, ge=0)
    max_len: int = Field(50, ge=1, description="most recent history items used to score")
    recency_decay: float = Field(1.0, gt=0, le=1)
