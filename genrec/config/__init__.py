"""Typed, frozen configs, none of which imports torch: a run's config and its sections (`run`), the base classes
(`base`), and every model's config (`models`, one file per model), apart from the code they configure.

`load_config(recipe, overrides, dataset)` is the one way a recipe becomes a `RunConfig`.
"""

from genrec.config.base import ModelConfig, StrictModel
from genrec.config.objectives import ObjectiveConfig, objective_config
from genrec.config.run import (
    RECIPES_DIR,
    CleanConfig,
    DataConfig,
    EvalConfig,
    PreferenceDataConfig,
    RankDataConfig,
    RankEvalConfig,
    RunConfig,
    TrainConfig,
    build_config,
    config_keys,
    deep_merge,
    describe,
    dump_config,
    list_recipes,
    load_config,
    migrate,
    nearest_key,
    objective_reference,
    parse_overrides,
    recipe_dict,
    reference,
    selectable,
    task_reference,
    validation_message,
)

__all__ = [
    "RECIPES_DIR",
    "CleanConfig",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "PreferenceDataConfig",
    "RankDataConfig",
    "RankEvalConfig",
    "RunConfig",
    "StrictModel",
    "TrainConfig",
    "build_config",
    "config_keys",
    "deep_merge",
    "describe",
    "dump_config",
    "list_recipes",
    "load_config",
    "migrate",
    "nearest_key",
    "objective_config",
    "objective_reference",
    "parse_overrides",
    "recipe_dict",
    "reference",
    "selectable",
    "task_reference",
    "validation_message",
]
