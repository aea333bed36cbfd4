"""HSTU's config (`genrec.models.hstu`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genrec.config.models.next_item import NextItemConfig


class HSTUConfig(NextItemConfig):
    name: Literal["hstu"] = "hstu"
    l2_normalize: bool = True
    temperature: float = Field(0.05, gt=0)
    attn_dim: int | None = Field(None, description="query/key width (default: dim)")
    time_buckets: int = Field(32, ge=0, description="log2 buckets of time gaps; 0 disables the time bias")
    abs_positions: bool = False
    position_bias: bool = Field(
        True, description="learned relative position bias; false = order only through the causal mask"
    )
    attention: Literal["softmax", "linear"] = Field(
        "softmax",
        description="HSTU's pointwise attention (O(L^2)) or its causal linear form (O(L d^2), no relative "
        "position/time bias, no KV-cache state; docs/long-sequences.md)",
    )
