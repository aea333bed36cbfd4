"""SASRec's config (`genrec.models.sasrec`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genrec.config.models.next_item import NextItemConfig


class SASRecConfig(NextItemConfig):
    name: Literal["sasrec"] = "sasrec"
    ffn_mult: int = 1
    activation: Literal["gelu", "relu"] = "gelu"
    positions: Literal["learned", "none"] = Field(
        "learned",
        description="learned absolute positions (SASRec's) or none: causal attention still sees the order",
    )
    attention: Literal["softmax", "linear"] = Field(
        "softmax",
        description="softmax (O(L^2)) or causal linear attention (O(L d^2), LinRec-style; docs/long-sequences.md)",
    )
