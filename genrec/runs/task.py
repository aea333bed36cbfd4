"""The `Task` interface: what one kind of run reads, trains on, validates, evaluates and adds to the protocol.

The pipeline (`genrec.runs.pipeline`) is the same for every task; it asks the task object, in this order:
`load_data` (all input errors surface here, before anything is written), `tables` (the run directory's items,
users and meta), `build_model`, `resources` and `prepare` (the model's data-dependent part), `train_items`,
`batches` and `validate` (through the Trainer), `evaluate`, and the task's parts of the protocol (`data_protocol`,
`eval_protocol`, `own_protocol`, `checkpoint_selection`). A loaded run (`Run`) asks it `load_model`, `can` and
`rank`. Built-in tasks: retrieval, ranking (`genrec.runs.retrieval`, `genrec.runs.ranking`) and preference
alignment (`genrec.runs.preference`); another one is one file with a `Task` subclass, its spec
(`genrec.config.tasks.TaskSpec`) and `genrec.register_task`, plus a recipe (docs/extending.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import polars as pl

from genrec import registry
from genrec.config import RunConfig
from genrec.config.tasks import TaskSpec
from genrec.data.schema import Dataset
from genrec.models.base import Resources
from genrec.runs.store import model_files

if TYPE_CHECKING:
    from genrec.runs.run import Run
    from genrec.training.trainer import FitContext


@dataclass
class Tables:
    """What a run directory stores about its data: items.parquet, users.parquet and meta.json's content."""

    items: pl.DataFrame
    users: pl.DataFrame
    meta: dict


class Task:
    """One kind of run for one resolved config (`cfg`). `actions`: what a loaded run of it answers
    (`recommend`: top-K from the catalogue; `rank`: scores of given candidates)."""

    spec: ClassVar[type[TaskSpec]]
    actions: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.dataset: Dataset | None = (
            None  # the interactions `load_data` read (statistics, notes, item text)
        )

    @property
    def name(self) -> str:
        return self.spec.name

    def can(self, action: str) -> bool:
        return action in self.actions

    # ---- training: the pipeline calls these in order ---------------------------------------------------------

    def load_data(self, like: Run | None = None) -> Any:
        """What the run trains and is evaluated on, from the data section; encoded in the item and user index of
        `like` (a loaded run: the run being evaluated, or the one training starts from) when given. Raises
        ConfigError / DataError before anything is written."""
        raise NotImplementedError

    def tables(self, data) -> Tables:
        raise NotImplementedError

    def build_model(self, data):
        """The untrained model of the model section for `data`."""
        raise NotImplementedError

    def resources(self, data, tables: Tables) -> Resources:
        """What `prepare` offers the model beside the data (`Recommender.prepare`'s `resources`)."""
        return Resources()

    def prepare(self, model, data, ctx: FitContext, init: Run | None = None) -> dict:
        """Fit the model's data-dependent part (`model.prepare(data, ctx.resources)` where the model has one) before
        any training; a summary for the run's metrics (`report`: logged; `files`: written into the run). A model
        that starts from `init`'s weights has that part already, and keeps the files `init`'s model wrote."""
        if init is not None:
            return {"files": model_files(init.dir)}
        prepare = getattr(model, "prepare", None)
        return dict(prepare(data, ctx.resources)) if prepare is not None else {}

    def train_items(self, data) -> np.ndarray | None:
        """The flat training item ids, for objectives that correct for popularity (sampled softmax's logQ)."""
        return None

    def batches(self, model):
        """`batches(data, rng, batch_size)`: one epoch's training batches (the model's, by default)."""
        return model.training_batches

    def validate(self, model, data, progress) -> float | dict[str, float]:
        """The checkpoint-selection score (`eval.select_metric`), or a dict of validation metrics holding it."""
        raise NotImplementedError

    def evaluate(self, model, data, progress: bool = True, reward=None) -> dict:
        """metrics.json's metrics of the selected weights: `valid`, `test` and whatever else the task reports."""
        raise NotImplementedError

    # ---- the task's parts of the protocol (`genrec.runs.protocol`) -------------------------------------------

    def data_protocol(self, data) -> dict:
        """The data's part: dataset, statistics, preprocessing notes and split."""
        raise NotImplementedError

    def eval_protocol(self, data, model) -> dict:
        """The evaluator's part: candidates, metrics and conventions."""
        raise NotImplementedError

    def own_protocol(self, data, model) -> dict:
        """Entries only this task has."""
        return {}

    def checkpoint_selection(self, model) -> str:
        return f"epoch with the best validation {self.cfg.eval.select_metric}, evaluated once on test"

    # ---- a loaded run ------------------------------------------------------------------------------------------

    def load_model(self, run: Run):
        """The untrained model of a loaded run (its weights are loaded next)."""
        raise NotImplementedError

    def rank(
        self,
        run: Run,
        candidates: np.ndarray,
        user: int | None,
        history: np.ndarray,
        times,
        live: np.ndarray | None = None,
    ) -> np.ndarray:
        """Scores [C] of internal candidate ids after a history of internal ids (a known user's index or None).
        `live`: [len(history)] bool, the events that arrived live (served) among a known user's stored ones."""
        raise NotImplementedError


def make_task(cfg: RunConfig) -> Task:
    """The task object of a resolved config (its `task`, from `genrec.registry.TASKS`)."""
    return registry.TASKS.get(cfg.task)(cfg)


def item_table(item_ids: np.ndarray, ds: Dataset) -> pl.DataFrame:
    """items.parquet: the internal order of `item_ids` (row i = internal id i + 1) with title and categories."""
    return pl.DataFrame({"item_id": item_ids}).join(
        ds.items.select(["item_id", "title", "categories"]), on="item_id", how="left", maintain_order="left"
    )
