"""Matrix factorisation's config (`genrec.models.mf`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from genrec.config.base import ModelConfig


class MFConfig(ModelConfig):
    default_objective: ClassVar[str | None] = "bpr"
    name: Literal["mf"] = "mf"
    dim: int = Field(64, ge=1)
    l2: float = Field(1e-5, ge=0, description="L2 penalty on the factors of each batch")
    max_len: int = Field(200, ge=1, description="history items used to fold in an unknown user")
