"""What every ranker's config shares (`genrec.models.ranking.base`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from genrec.config.base import ModelConfig


class RankerConfig(ModelConfig):
    default_objective: ClassVar[str | None] = "bce_logits"
    task: ClassVar[str] = "ranking"
    dim: int = Field(32, ge=4)
    max_len: int = Field(50, ge=2, description="history events the model reads")
    stride: int | None = Field(None, ge=1, description="training-window stride (default max_len // 2)")
    dropout: float = Field(0.1, ge=0, lt=1)
    text_features: bool = Field(False, description="add frozen text embeddings of item title + genres")
    text_encoder: str | None = Field(
        None,
        description="encoder of the item text: None = all-MiniLM-L6-v2; 'smollm2', a .gguf file or a model "
        "directory (a generative LLM's pooled hidden states; see genrec.items.text)",
    )
    text_pooling: Literal["mean", "last"] = Field(
        "mean", description="pooling of a generative LLM encoder's hidden states over the text's tokens"
    )
    cross_features: bool = Field(False, description="add history-derived user x item statistics")
    candidates_per_row: int = Field(128, ge=1, description="evaluation: candidates scored per history row")
