"""The base classes of every typed config: frozen pydantic models that reject unknown keys.

`ModelConfig` is the config side of a model (transformers' configuration / modeling split): its architecture
keys, the task it trains for by default and its default objective. It lives under `genrec.config.models`, apart
from the model's code, so that reading a config never imports torch.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(StrictModel):
    """Base of every model's config; subclasses add their hyper-parameters and fix `name` (the registered name).

    `task`: the task a run of the model is by default (`retrieval` ranks the catalogue, `ranking` scores
    impressions); other tasks say which models they take (`genrec.config.tasks`).
    """

    name: str
    task: ClassVar[str] = "retrieval"
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
