"""The LLM tree-search recommender's config (`genrec.models.llm_tree`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genrec.config.base import ModelConfig
from genrec.llm.config import LLMConfig


class LLMTreeConfig(ModelConfig):
    name: Literal["llm_tree"] = "llm_tree"
    llm: LLMConfig = Field(default_factory=LLMConfig)
    tree: Literal["auto", "categories", "clusters"] = Field(
        "auto", description="auto: category paths where at least half the items have one, else text clusters"
    )
    branching: int = Field(8, ge=2, description="clusters: children per node")
    leaf_size: int = Field(50, ge=1, description="clusters: most items in a leaf")
    beam: int = Field(3, ge=1, description="tree paths kept at every level (= leaves chosen)")
    history_items: int = Field(5, ge=1, description="most recent history items read (titles in the prompt)")
    title_words: int = Field(12, ge=1, description="words of each title kept in the prompt")
    scoring: Literal["logprob", "pmi"] = Field(
        "pmi",
        description="child score: log p(label | prompt), or minus log p(label | prompt without history)",
    )
    within_leaf: Literal["similarity", "popularity"] = Field(
        "similarity", description="rule ordering the items of the chosen leaves"
    )
    encoder: str | None = Field(
        None, description="text encoder directory (default: bundled all-MiniLM-L6-v2)"
    )
