"""DIN's config (`genrec.models.ranking.din`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from genrec.config.models.ranking.base import RankerConfig


class DINConfig(RankerConfig):
    name: Literal["din"] = "din"
    reads_text_interest: ClassVar[bool] = True
    attention_hidden: int = Field(64, ge=4)
    hidden: list[int] = Field(default_factory=lambda: [128, 64])
