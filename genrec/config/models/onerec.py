"""OneRec's config (`genrec.models.onerec`): TIGER generating whole sessions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genrec.config.models.tiger import TigerConfig


class OneRecConfig(TigerConfig):
    name: Literal["onerec"] = "onerec"
    session_len: int = Field(
        5, ge=1, description="items per session (N): what training targets and generation hold"
    )
