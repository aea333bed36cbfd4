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
    impressions). `default_objective`: the objective (`genrec.config.objectives`) it trains with unless
    `train.objective` names another; None for models fitted in closed form, which take no objective.
    """

    name: str
    task: ClassVar[str] = "retrieval"
    default_objective: ClassVar[str | None] = None
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    def check_objective(self, objective) -> None:
        """Rules that tie the model's keys to the chosen objective config (None: no objective). Raises
        ValueError."""
