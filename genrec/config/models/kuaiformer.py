"""KuaiFormer's config (`genrec.models.kuaiformer`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from genrec.config.models.next_item import NextItemConfig


class KuaiFormerConfig(NextItemConfig):
    name: Literal["kuaiformer"] = "kuaiformer"
    interests: int = Field(
        4, ge=1, description="interest query tokens; an item scores its best interest's logit"
    )
    compress: bool = Field(True, description="pool old events into groups (false: every event is a token)")
    recent: int = Field(32, ge=1, description="newest events kept as one token each")
    tier_groups: int = Field(16, ge=1, description="groups per age tier; group size doubles per tier from 2")
    cuts_per_user: int = Field(
        8, ge=1, description="training targets drawn per user and epoch (newest included)"
    )
    ffn_mult: int = 1

    @model_validator(mode="after")
    def _one_query(self):
        if self.history_bias:
            raise ValueError("kuaiformer has no history_bias (its score is a max over interests)")
        return self
