"""HLLM's config (`genrec.models.hllm`): TextRec with item vectors from a causal LLM."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genrec.config.models.textrec import TextRecConfig


class HLLMConfig(TextRecConfig):
    name: Literal["hllm"] = "hllm"
    item_lm: str = Field(
        "smollm2",
        description="item LLM: a causal LM directory, a .gguf file, or smollm2 (packaged SmolLM2-135M-Instruct)",
    )
    pooling: Literal["last", "mean"] = Field(
        "last", description="item vector: last token's state, or the mean"
    )
    text_dim: int = Field(
        0, ge=0, description="size of the item LLM's hidden states; 0 = read it from the LM"
    )
    encode_batch: int = Field(32, ge=1, description="item texts per LLM forward pass (encoding only)")
