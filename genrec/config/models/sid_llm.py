"""The semantic-ID LLM recommender's config (`genrec.models.sid_llm`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from genrec.config.base import ModelConfig
from genrec.config.items import TokenizerConfig


class SidLlmConfig(ModelConfig):
    default_objective: ClassVar[str | None] = "token_cross_entropy"
    name: Literal["sid_llm"] = "sid_llm"
    lm: str = Field(
        "smollm2",
        description="causal LM: a Hugging Face model directory, a .gguf file, or smollm2 (the packaged "
        "SmolLM2-135M-Instruct GGUF)",
    )
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    max_separation: int = Field(64, ge=1, description="values of the collision-separating code (new tokens)")
    max_len: int = Field(20, ge=1, description="most recent history items in the prompt")
    history_titles: bool = Field(False, description="write each history item's title after its codes")
    max_title_tokens: int = Field(24, ge=1, description="title tokens kept per item (prompts and alignment)")
    title_to_codes_weight: float = Field(
        0.0, ge=0, description="LC-Rec alignment: title -> codes examples per recommendation example"
    )
    codes_to_title_weight: float = Field(
        0.0, ge=0, description="LC-Rec alignment: codes -> title examples per recommendation example"
    )
    examples_per_epoch: int = Field(
        0,
        ge=0,
        description="recommendation examples drawn (without replacement) per epoch from all (history -> next "
        "item) pairs of the training sequences; 0 = all of them",
    )
    finetune: Literal["full", "lora"] = "lora"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="module names that get LoRA adapters",
    )
    token_init: Literal["titles", "random"] = Field(
        "titles", description="new code tokens start from their items' title embeddings, or at random"
    )
    beam: int = Field(20, ge=1, description="beam width (at least the K asked for)")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="autocast matmuls; auto = bfloat16 where the CPU has AMX/AVX512-BF16"
    )
