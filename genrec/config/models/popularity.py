"""The popularity baseline's config (`genrec.models.popularity`)."""

from __future__ import annotations

from typing import Literal

from genrec.config.base import ModelConfig


class PopularityConfig(ModelConfig):
    name: Literal["popularity"] = "popularity"
