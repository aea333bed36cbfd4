"""Objective configs: what `train.objective` holds, one class per objective (`{name: ..., <its keys>}`, or just
the name for its defaults). The objectives themselves (torch) are in `genrec.objectives`; `genrec.registry`
names both classes, and `objective_config` turns a section into the right class.

A model's config names its default objective (`default_objective`); a task may name another (preference
alignment: DPO). `needs_reference`: the objective compares the model with a frozen copy of the weights training
starts from (`init_from`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, SerializeAsAny, field_validator

from genrec import registry
from genrec.config.base import StrictModel
from genrec.errors import ConfigError


class ObjectiveConfig(StrictModel):
    """Base of every objective's config; subclasses fix `name` (the registered name) and add their keys."""

    name: str
    needs_reference: ClassVar[bool] = False

    def inner(self) -> ObjectiveConfig:
        """The objective a wrapper (contrastive) adds its term to; the objective itself otherwise."""
        return self


def objective_config(value: Any, **keys) -> ObjectiveConfig:
    """An objective section as its registered config class: a config, a name or a {name: ..., keys} mapping;
    `keys` override the section's. Raises ConfigError naming the known objectives."""
    if isinstance(value, ObjectiveConfig) and not keys:
        return value
    if isinstance(value, ObjectiveConfig):
        value = value.model_dump()
    raw = {"name": value} if isinstance(value, str) else dict(value)
    raw.update(keys)
    if not isinstance(raw.get("name"), str):
        raise ConfigError(f"an objective needs a name, one of {', '.join(registry.OBJECTIVES.names())}")
    return registry.OBJECTIVES.config(raw["name"]).model_validate(raw)


class FullSoftmaxConfig(ObjectiveConfig):
    name: Literal["full_softmax"] = "full_softmax"
    chunk: int = Field(256, ge=16, description="positions per chunk of the full softmax")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="matmul precision of the full softmax; auto = bfloat16 where the CPU has AMX/AVX512-BF16",
    )


class SampledSoftmaxConfig(ObjectiveConfig):
    name: Literal["sampled_softmax"] = "sampled_softmax"
    negatives: int = Field(
        256, ge=1, description="uniform negatives per batch, beside the batch's other targets"
    )


class BCEConfig(ObjectiveConfig):
    """SASRec's original loss: one positive and one uniform negative per position."""

    name: Literal["bce"] = "bce"


class ContrastiveConfig(ObjectiveConfig):
    name: Literal["contrastive"] = "contrastive"
    base: SerializeAsAny[ObjectiveConfig] = Field(
        default_factory=FullSoftmaxConfig,
        description="the next-item objective the contrastive term is added to",
    )
    weight: float = Field(
        0.1,
        gt=0,
        description="weight of a contrastive term between two dropout passes over the same sequences (DuoRec / "
        "CL4SRec's model-level augmentation): each sequence's newest state must pick its twin out of the batch's "
        "other sequences",
    )
    temperature: float = Field(0.1, gt=0, description="of the contrastive term's cosine logits")

    @field_validator("base", mode="before")
    @classmethod
    def _base(cls, value: Any) -> ObjectiveConfig:
        try:
            return objective_config(value)
        except ConfigError as e:
            raise ValueError(str(e)) from None

    def inner(self) -> ObjectiveConfig:
        return self.base.inner()


class BPRConfig(ObjectiveConfig):
    name: Literal["bpr"] = "bpr"


class RankerBCEConfig(ObjectiveConfig):
    """The rankers' binary cross-entropy of like-logits over labelled impressions."""

    name: Literal["bce_logits"] = "bce_logits"


class CodeCrossEntropyConfig(ObjectiveConfig):
    name: Literal["code_cross_entropy"] = "code_cross_entropy"


class TokenCrossEntropyConfig(ObjectiveConfig):
    name: Literal["token_cross_entropy"] = "token_cross_entropy"


class DPOConfig(ObjectiveConfig):
    name: Literal["dpo"] = "dpo"
    needs_reference: ClassVar[bool] = True
    beta: float = Field(
        0.1, gt=0, description="DPO temperature: how far the model may move from the reference"
    )
    sft_weight: float = Field(
        0.0, ge=0, description="weight of the chosen item's NLL added to the loss (0 = off)"
    )


class SDPOConfig(DPOConfig):
    """Softmax-DPO: one softmax over all rejected items of a pair."""

    name: Literal["sdpo"] = "sdpo"
