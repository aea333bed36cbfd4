"""TIGER's config (`genrec.models.tiger`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from genrec.config.base import ModelConfig
from genrec.config.items import TokenizerConfig


class TigerConfig(ModelConfig):
    default_objective: ClassVar[str | None] = "code_cross_entropy"
    name: Literal["tiger"] = "tiger"
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    max_separation: int = Field(64, ge=1, description="values of the collision-separating code (vocabulary)")
    dim: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    head_dim: int | None = Field(
        None,
        ge=1,
        description="t5 backbone: width of each attention head (T5's d_kv); unset = dim / heads. The TIGER paper "
        "uses 6 heads of 64 with dim 128; the native backbone needs heads x head_dim = dim",
    )
    encoder_layers: int = Field(2, ge=1)
    decoder_layers: int = Field(2, ge=1)
    ffn_mult: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    backbone: Literal["native", "t5"] = Field(
        "native",
        description="encoder-decoder: genrec's own pre-norm blocks (native) or transformers' "
        "T5ForConditionalGeneration from a T5Config of these sizes (t5: relative positions, ReLU feed-forward)",
    )
    max_len: int = Field(20, ge=1, description="most recent history items the encoder reads")
    history_tokens: Literal["codes", "items"] = Field(
        "codes",
        description="encoder input: one token per code (TIGER) or one per item, the sum of its code embeddings",
    )
    cut_stride: int = Field(
        1, ge=1, description="train on every s-th cut point of each sequence (a random phase each epoch)"
    )
    beam: int = Field(20, ge=1, description="beam width (at least the K asked for)")
    cold_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="TIGER's cold-start share (epsilon): floor(cold_share * K) places of each top-K list go to "
        "items that never occurred in training (the j-th cold item at position ceil(j / cold_share)), found by a "
        "second constrained beam search over their codes only; inert when every item was trained on",
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="autocast matmuls; auto = bfloat16 where the CPU has AMX/AVX512-BF16"
    )

    @model_validator(mode="after")
    def _head_width(self) -> TigerConfig:
        if self.head_dim is not None and self.backbone == "native" and self.head_dim * self.heads != self.dim:
            raise ValueError(
                f"head_dim {self.head_dim} x heads {self.heads} != dim {self.dim}: the native backbone splits dim "
                "into its heads (backbone: t5 takes any head_dim)"
            )
        return self
