"""TextRec's config (`genrec.models.textrec`): SASRec's tower over frozen text embeddings of the items."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genrec.config.items import PROFILES_HELP
from genrec.config.models.sasrec import SASRecConfig


class TextRecConfig(SASRecConfig):
    name: Literal["textrec"] = "textrec"
    encoder: str | None = Field(
        None, description="text encoder directory (default: bundled all-MiniLM-L6-v2)"
    )
    text_dim: int = Field(384, ge=1, description="size of the text embeddings (384 for MiniLM-L6)")
    profiles: str | None = Field(None, description=PROFILES_HELP)
    use_id: bool = Field(False, description="add a learned ID embedding (zero-initialised) to the text tower")
    retrieval: Literal["exact", "faiss"] = "exact"
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_search: int = Field(128, ge=1)
