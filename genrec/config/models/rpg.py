"""RPG's config (`genrec.models.rpg`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from genrec.config.base import ModelConfig
from genrec.config.items import TokenizerConfig


def _opq_codes() -> TokenizerConfig:
    return TokenizerConfig(kind="opq", levels=32, codebook_size=256, collisions="reassign")


class RPGConfig(ModelConfig):
    default_objective: ClassVar[str | None] = "code_cross_entropy"
    name: Literal["rpg"] = "rpg"
    tokenizer: TokenizerConfig = Field(default_factory=_opq_codes)
    dim: int = Field(256, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    ffn_mult: int = Field(2, ge=1)
    max_len: int = Field(50, ge=2, description="most recent history items the model reads")
    # No dropout by default: each item is known only through 32 codes it shares with ~50 other items each, and
    # the paper's 0.5 on the inputs slowed learning that identity far more than it regularised (docs/log.md).
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the input item embeddings")
    block_dropout: float = Field(0.0, ge=0, lt=1, description="dropout inside the transformer blocks")
    temperature: float = Field(0.03, gt=0, description="code logits are cosine similarities over this")
    decoding: Literal["exact", "graph"] = Field(
        "exact",
        description="top-K by scoring every item from its codes (exact) or by the paper's walk over an item "
        "graph (graph: graph_beams, graph_edges, graph_steps)",
    )
    graph_beams: int = Field(
        50, ge=1, description="items kept after each step of graph decoding (at least K)"
    )
    graph_edges: int = Field(50, ge=1, description="neighbours of each item in the decoding graph")
    graph_steps: int = Field(3, ge=1, description="propagation steps of graph decoding")
