"""Task specs: what the config layer knows of a task, without torch: its name, the classes of its data and eval
sections, the models it trains, its default objective and the rules that span a run config's sections.

The task itself (its data, batches, validation, evaluation and part of the protocol: `genrec.runs.task.Task`)
names its spec (`Task.spec`); `genrec.registry.TASKS` names both, as it does a model's config and code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from genrec.config.base import ModelConfig, StrictModel
from genrec.config.run import (
    DataConfig,
    EvalConfig,
    PreferenceDataConfig,
    RankDataConfig,
    RankEvalConfig,
)

if TYPE_CHECKING:
    from genrec.config.run import RunConfig


class TaskSpec:
    """`name`: the registered name (`task:` in a config); `data` / `eval`: its sections' classes; `models`: the
    `task` of the model configs it trains (`retrieval` or `ranking`)."""

    name: ClassVar[str]
    data: ClassVar[type[StrictModel]]
    eval: ClassVar[type[StrictModel]]
    models: ClassVar[str]

    @classmethod
    def default_objective(cls, model: type[ModelConfig]) -> str | None:
        """The objective a run trains with when `train.objective` is unset: the model's."""
        return model.default_objective

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        """Rules that span the sections of a resolved config. Raises ValueError."""


class RetrievalSpec(TaskSpec):
    """Rank the whole catalogue for each held-out next item (leave-one-out or temporal split)."""

    name = "retrieval"
    data = DataConfig
    eval = EvalConfig
    models = "retrieval"

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        sessions_need_time(cfg)
        objective = cfg.train.objective
        if objective is not None and objective.needs_reference:
            raise ValueError(f"objective {objective.name} trains on preference pairs: use task: preference")


class RankingSpec(TaskSpec):
    """Score labelled impressions of explicit feedback (like = rating >= like_threshold), split by time."""

    name = "ranking"
    data = RankDataConfig
    eval = RankEvalConfig
    models = "ranking"


class PreferenceSpec(RetrievalSpec):
    """Align a trained retrieval run (`init_from`) on preference pairs built from its training events, against a
    frozen copy of it (DPO, S-DPO); evaluated as a retrieval run."""

    name = "preference"
    data = PreferenceDataConfig

    @classmethod
    def default_objective(cls, model: type[ModelConfig]) -> str | None:
        return "dpo"

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        sessions_need_time(cfg)
        if not cfg.init_from:
            raise ValueError(
                "task preference aligns a trained run: set init_from=RUN_DIR (genrec align RUN_DIR)"
            )
        objective = cfg.train.objective
        if objective is None or not objective.needs_reference:
            name = "none" if objective is None else objective.name
            raise ValueError(f"task preference trains with a preference objective (dpo, sdpo), not {name}")


def sessions_need_time(cfg: RunConfig) -> None:
    # Checked before training: only a temporal split says which events follow each user's cut-off.
    if cfg.eval.session_len and cfg.data.split != "temporal":
        raise ValueError("eval.session_len needs data.split=temporal (the events after each user's cut-off)")
