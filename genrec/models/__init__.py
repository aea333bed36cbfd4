"""One file per model. Models are found by name through `genrec.registry` (imported on first use)."""

from genrec.models.base import Recommender, build_model, candidate_scores, register

__all__ = ["Recommender", "build_model", "candidate_scores", "register"]
