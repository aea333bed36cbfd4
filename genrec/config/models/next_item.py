"""What every next-item sequence model's config shares (`genrec.models.next_item`): width, depth, window, dropout
and how items are scored."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from genrec.config.base import ModelConfig


class NextItemConfig(ModelConfig):
    default_objective: ClassVar[str | None] = "full_softmax"
    dim: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    max_len: int = Field(50, ge=2, description="most recent history items the model reads")
    dropout: float = Field(0.3, ge=0, lt=1)
    l2_normalize: bool = False
    tie_output: bool = Field(
        True, description="score items with the input embedding table (else a separate one)"
    )
    history_bias: bool = Field(
        False,
        description="learn one logit offset for items already in the user's history (repeat versus explore), "
        "fitted beside the model on the training data: where users never repeat an item it learns to rank what "
        "they have last; where they do, to boost it",
    )
    temperature: float = Field(1.0, gt=0, description="logits are divided by this (with l2_normalize)")

    def check_objective(self, objective) -> None:
        if self.history_bias and (objective is None or objective.inner().name != "full_softmax"):
            raise ValueError(
                "model.history_bias is fitted by the full softmax: set train.objective=full_softmax"
            )
