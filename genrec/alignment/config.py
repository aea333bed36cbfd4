"""The typed, frozen `align` section: how a trained run is aligned (alignment recipes hold it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from genrec.config import RECIPES_DIR, StrictModel, deep_merge, describe, validation_message
from genrec.errors import ConfigError

ALIGN_RECIPES = RECIPES_DIR / "align"


class AlignConfig(StrictModel):
    pairs: Literal["ratings", "self-play", "reward-beams"] = Field(
        "ratings",
        description="pair source: ratings (chosen = a next item rated >= like, rejected = items rated <= "
        "dislike later, else sampled unseen items); self-play (rejected = the model's own top predictions the "
        "user did not like, SPRec); reward-beams (best vs worst of the model's own candidates by the reward "
        "model, OneRec's iterative alignment)",
    )
    objective: Literal["dpo", "sdpo"] = "dpo"
    beta: float = Field(
        0.1, gt=0, description="DPO temperature: how far the model may move from the reference"
    )
    negatives: int = Field(
        1, ge=1, description="rejected items (or sessions) per pair; S-DPO's softmax is over them"
    )
    sft_weight: float = Field(
        0.0, ge=0, description="weight of the chosen item's NLL added to the loss (0 = off)"
    )
    rounds: int = Field(
        1, ge=1, description="pair generation rounds (self-play / reward-beams regenerate pairs)"
    )
    epochs: int = Field(1, ge=1, description="passes over each round's pairs")
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(128, ge=1)
    grad_clip: float | None = 1.0
    anchors_per_user: int = Field(
        4, ge=1, description="ratings / self-play: pairs per training user, at their latest liked events"
    )
    like: float = Field(4.0, description="a rating at or above it is a like")
    dislike: float = Field(2.0, description="a rating at or below it is a dislike")
    self_play_top: int = Field(20, ge=1, description="self-play: the model's top list the rejected come from")
    reward_run: str | None = Field(None, description="ranking run directory of the reward model")
    reward_diversity: float = Field(
        0.0, ge=0, description="reward: weight of the list's genre diversity (intra-list Jaccard distance)"
    )
    beams: int = Field(10, ge=2, description="reward-beams: candidates per user (sessions or top items)")
    session_len: int = Field(5, ge=1, description="reward-beams: items per generated session (N)")
    users_per_round: int = Field(1000, ge=1, description="reward-beams: users sampled per round")
    seed: int = 0
    threads: int | None = Field(2, ge=1)


def align_recipe(recipe: str | None, overrides: dict) -> AlignConfig:
    """An alignment recipe (name under genrec/recipes/align/ or a YAML path with an `align:` section) with
    `overrides` (None values ignored) on top. Raises ConfigError."""
    raw: dict = {}
    if recipe:
        path = Path(recipe) if recipe.endswith((".yaml", ".yml")) else ALIGN_RECIPES / f"{recipe}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in ALIGN_RECIPES.glob("*.yaml")))
            raise ConfigError(f"unknown alignment recipe {recipe!r}; built-in: {known}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict) or not isinstance(loaded.get("align"), dict):
            raise ConfigError(f"{path}: an alignment recipe needs an `align:` section")
        raw = loaded["align"]
    raw = deep_merge(raw, {k: v for k, v in overrides.items() if v is not None})
    try:
        return AlignConfig.model_validate(raw)
    except ValidationError as e:
        keys = [row[0] for row in describe(AlignConfig, "align")]
        raise ConfigError(validation_message(e, keys).replace("config ", "config align.", 1)) from None
