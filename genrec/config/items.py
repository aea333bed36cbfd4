"""Configs of the item side: semantic-ID tokenizers (`genrec.items.semantic_ids`) and item text profiles."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from genrec.config.base import StrictModel

PROFILES_HELP = (
    "JSONL file of item profiles ({item_id, profile} per line, e.g. LLM-written by "
    "genrec.experiments.llm_items): appended to each item's text as 'profile: ...'; items without one keep "
    "their title and categories"
)


class TokenizerConfig(StrictModel):
    kind: Literal["rq_kmeans", "rq_vae", "pq", "opq"] = "rq_kmeans"
    levels: int = Field(3, ge=1, le=64, description="codes per item (pq / opq: sub-spaces)")
    codebook_size: int = Field(256, ge=2)
    collisions: Literal["separate", "reassign", "none"] = Field(
        "separate",
        description="items sharing a code: one extra code numbers them (separate), all but one move to the "
        "nearest free centroid (reassign: rq_kmeans, pq, opq), or they keep the same code (none)",
    )
    input: Literal["text", "collab", "both"] = "text"
    collab: Literal["run", "cooccurrence"] = Field(
        "run",
        description="collaborative vectors (input collab / both): a trained run's item table (collab_run) or a "
        "truncated SVD of the training split's item co-occurrences (no other run needed)",
    )
    cooccurrence_dim: int = Field(64, ge=2, description="dimensions of the co-occurrence vectors")
    cooccurrence_window: int = Field(3, ge=1, description="neighbours each side that count as co-occurring")
    encoder: str | None = Field(
        None, description="text encoder directory (default: bundled all-MiniLM-L6-v2)"
    )
    profiles: str | None = Field(None, description="input text/both: " + PROFILES_HELP)
    collab_run: str | None = Field(
        None, description="run directory of a trained sasrec/hstu (input: collab/both)"
    )
    kmeans_iters: int = Field(25, ge=1)
    vae_latent: int = Field(32, ge=2)
    vae_hidden: list[int] = Field(default_factory=lambda: [512, 256, 128])
    vae_epochs: int = Field(300, ge=1)
    vae_lr: float = Field(1e-3, gt=0)
    vae_batch: int = Field(1024, ge=8)
    vae_beta: float = Field(0.25, ge=0, description="commitment weight")
    seed: int = 0
    codes: str | None = Field(
        None, description="folder holding semantic_ids.safetensors from an earlier run: reuse, do not build"
    )

    @model_validator(mode="after")
    def _reassign_needs_centroids(self):
        if self.collisions == "reassign" and self.kind == "rq_vae":
            raise ValueError("collisions: reassign works with rq_kmeans, pq and opq (rq_vae: use separate)")
        return self
