"""DIN's config (`genrec.models.ranking.din`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genrec.config.models.ranking.base import RankerConfig


class DINConfig(RankerConfig):
    name: Literal["din"] = "din"
    attention_hidden: int = Field(64, ge=4)
    hidden: list[int] = Field(default_factory=lambda: [128, 64])
