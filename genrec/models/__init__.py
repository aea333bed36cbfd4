"""One file per model; importing this package registers them all."""

from genrec.models import hstu, itemknn, mf, popularity, sasrec, textrec, tiger  # noqa: F401  (registration side effect)
from genrec.models.base import MODELS, FitContext, Recommender, build_model, register

__all__ = ["MODELS", "FitContext", "Recommender", "build_model", "register"]
