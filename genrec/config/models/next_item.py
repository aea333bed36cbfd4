"""What every next-item sequence model's config shares (`genrec.models.next_item`): width, depth, window, dropout
and how items are scored."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from genrec.config.base import ModelConfig


class NextItemConfig(ModelConfig):
    dim: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    max_len: int = Field(50, ge=2, description="most recent history items the model reads")
    dropout: float = Field(0.3, ge=0, lt=1)
    loss: Literal["full_softmax", "sampled_softmax", "bce"] = "full_softmax"
    negatives: int = Field(256, ge=1, description="uniform negatives per batch (sampled_softmax)")
    l2_normalize: bool = False
    tie_output: bool = Field(
        True, description="score items with the input embedding table (else a separate one)"
    )
    output_proj: bool = Field(
        False,
        description="map the query through a learned d x d matrix before scoring against the item table: with "
        "tied tables it lets the model stop scoring the items it has just read highest",
    )
    history_bias: bool = Field(
        False,
        description="learn one logit offset for items already in the user's history (repeat versus explore), "
        "fitted beside the model on the training data: where users never repeat an item it learns to rank what "
        "they have last; where they do, to boost it",
    )
    temperature: float = Field(1.0, gt=0, description="logits are divided by this (with l2_normalize)")
    contrastive_weight: float = Field(
        0.0,
        ge=0,
        description="training: weight of a contrastive term between two dropout passes over the same "
        "sequences (DuoRec / CL4SRec's model-level augmentation): each sequence's newest state must pick its "
        "twin out of the batch's other sequences; 0 = off (one encoder pass per step)",
    )
    contrastive_temperature: float = Field(0.1, gt=0, description="of the contrastive term's cosine logits")
    loss_chunk: int = Field(256, ge=16, description="positions per chunk of the full softmax")
    softmax_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="matmul precision of the full softmax; auto = bfloat16 where the CPU has AMX/AVX512-BF16",
    )

    @model_validator(mode="after")
    def _history_bias_needs_full_softmax(self):
        if self.history_bias and self.loss != "full_softmax":
            raise ValueError("history_bias is fitted by the full softmax: set loss: full_softmax")
        return self
