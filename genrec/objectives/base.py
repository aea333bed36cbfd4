"""The objective interface and the supervised objectives: softmax family, BCE, BPR, contrastive, code CE.

An objective is one class with its typed config (`genrec.config.objectives`, torch-free) and one line in
`genrec.registry.OBJECTIVES` (or `genrec.register_objective` from outside the package). `build_objective(cfg,
model, train_items)` turns `train.objective` into the objective for a model; each class builds itself from its
config (`Objective.build`), and says which model output it reads (`reads`), so a model without it fails at once.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from genrec import registry
from genrec.config.objectives import (
    BCEConfig,
    BPRConfig,
    CodeCrossEntropyConfig,
    ContrastiveConfig,
    FullSoftmaxConfig,
    ObjectiveConfig,
    RankerBCEConfig,
    SampledSoftmaxConfig,
    TokenCrossEntropyConfig,
    objective_config,
)
from genrec.errors import ConfigError
from genrec.models.next_item import resolve_dtype
from genrec.objectives import losses


class Objective:
    """`objective(model, batch, reference=None) -> scalar loss`; `reference` is a frozen copy of the weights
    training started from, for objectives whose config sets `needs_reference` (never trained nor saved).

    `config_class`: its typed config, whose `name` default is the registered name. `reads`: the model method the
    loss calls (checked when the objective is built). `uses_dropout`: False keeps the model in eval mode while it
    trains (preference objectives, whose margins against the reference must start at exactly 0)."""

    name: ClassVar[str]
    config_class: ClassVar[type[ObjectiveConfig]]
    reads: ClassVar[str | None] = None
    uses_dropout: ClassVar[bool] = True

    @property
    def needs_reference(self) -> bool:
        return self.config_class.needs_reference

    @classmethod
    def build(cls, cfg: ObjectiveConfig, model, train_items: np.ndarray | None) -> Objective:
        """The objective of config `cfg` for `model`; `train_items`: the flat training item ids (logQ)."""
        return cls()

    def __call__(self, model, batch, reference=None) -> torch.Tensor:
        raise NotImplementedError

    def units(self, batch) -> float:
        """How many terms the loss averages over in `batch` (rows by default). Distributed training weights each
        process's loss by its share of the global batch's units, so that the sum equals one process's mean."""
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return float(len(first))


def next_item_units(batch) -> float:
    """Real input positions of a next-item batch ([B, L + 1] items, ...): the terms its losses average."""
    return float((batch[0][:, :-1] > 0).sum())


class FullSoftmax(Objective):
    """Cross-entropy over every item (chunked; see `losses.full_softmax`). Needs `next_item_outputs`."""

    name = "full_softmax"
    config_class = FullSoftmaxConfig
    reads = "next_item_outputs"
    units = staticmethod(next_item_units)

    def __init__(self, chunk: int = 256, dtype: torch.dtype = torch.float32) -> None:
        self.chunk, self.dtype = chunk, dtype

    @classmethod
    def build(cls, cfg: FullSoftmaxConfig, model, train_items) -> FullSoftmax:
        return cls(cfg.chunk, resolve_dtype(cfg.dtype))

    def __call__(self, model, batch, reference=None, outputs=None) -> torch.Tensor:
        o = outputs if outputs is not None else model.next_item_outputs(batch)
        if o.seen is not None:
            return losses.full_softmax(
                o.query, o.weight, o.targets, self.chunk, self.dtype, o.seen, o.seen_offset
            )
        return losses.full_softmax(o.query, o.weight, o.targets, self.chunk, self.dtype)


class SampledSoftmax(Objective):
    """Softmax over in-batch targets and uniform negatives with logQ correction (`losses.sampled_softmax`).
    `item_log_prob` [n_items + 1]: log of each item's share of training interactions (add-one smoothed)."""

    name = "sampled_softmax"
    config_class = SampledSoftmaxConfig
    reads = "next_item_outputs"
    units = staticmethod(next_item_units)

    def __init__(self, negatives: int, item_log_prob: torch.Tensor) -> None:
        self.negatives, self.item_log_prob = negatives, item_log_prob

    @classmethod
    def build(cls, cfg: SampledSoftmaxConfig, model, train_items) -> SampledSoftmax:
        if train_items is None:
            raise ConfigError("sampled_softmax needs the training items (for its logQ correction)")
        return cls(cfg.negatives, item_log_prob(train_items, model.n_items))

    def __call__(self, model, batch, reference=None, outputs=None) -> torch.Tensor:
        o = outputs if outputs is not None else model.next_item_outputs(batch)
        if self.item_log_prob.device != o.query.device:  # built on the host from the data; moved once
            self.item_log_prob = self.item_log_prob.to(o.query.device)
        return losses.sampled_softmax(o.query, o.weight, o.targets, self.negatives, self.item_log_prob)


class BCEOneNegative(Objective):
    """SASRec's original loss: one positive and one uniform negative per position, binary cross-entropy."""

    name = "bce"
    config_class = BCEConfig
    reads = "next_item_outputs"
    units = staticmethod(next_item_units)

    def __call__(self, model, batch, reference=None, outputs=None) -> torch.Tensor:
        o = outputs if outputs is not None else model.next_item_outputs(batch)
        return losses.bce_one_negative(o.query, o.weight, o.targets)


class WithContrastive(Objective):
    """A next-item objective plus `weight` x symmetric InfoNCE between two dropout passes' newest states
    (DuoRec / CL4SRec's model-level augmentation; the batch's other sequences are the negatives)."""

    config_class = ContrastiveConfig
    reads = "next_item_outputs"

    def __init__(self, base: Objective, weight: float, temperature: float) -> None:
        self.base, self.weight, self.temperature = base, weight, temperature
        self.name = f"{base.name}+contrastive"
        self.units = base.units  # of the next-item term; the contrastive term's negatives are per process

    @classmethod
    def build(cls, cfg: ContrastiveConfig, model, train_items) -> WithContrastive:
        return cls(build_objective(cfg.base, model, train_items), cfg.weight, cfg.temperature)

    def __call__(self, model, batch, reference=None) -> torch.Tensor:
        outputs = model.next_item_outputs(batch)
        loss = self.base(model, batch, outputs=outputs)
        if not model.training:
            return loss
        twin = model.next_item_outputs(batch).newest  # new dropout masks
        return loss + self.weight * losses.twin_info_nce(outputs.newest, twin, self.temperature)


class BPR(Objective):
    """Bayesian personalised ranking: -log sigmoid(s(u, pos) - s(u, neg)) plus the model's L2 penalty.
    Needs `pair_scores(batch) -> (differences [B], penalty)`."""

    name = "bpr"
    config_class = BPRConfig
    reads = "pair_scores"

    def __call__(self, model, batch, reference=None) -> torch.Tensor:
        diff, penalty = model.pair_scores(batch)
        return -F.logsigmoid(diff).mean() + penalty


class WeightedBCE(Objective):
    """Binary cross-entropy of like-logits (`model.logits(batch)` [B, C]) against `batch.labels`, averaged
    over the cells where `batch.weights` is 1 (rankers)."""

    name = "bce_logits"
    config_class = RankerBCEConfig
    reads = "logits"

    def units(self, batch) -> float:
        return float(batch.weights.sum())

    def __call__(self, model, batch, reference=None) -> torch.Tensor:
        z = model.logits(batch)
        per = F.binary_cross_entropy_with_logits(z, batch.labels, reduction="none")
        return (per * batch.weights).sum() / batch.weights.sum().clamp(min=1)


class CodeCrossEntropy(Objective):
    """Mean over code levels of the cross-entropy of the target item's semantic-ID code (TIGER).
    Needs `code_logits(batch) -> (logits per level [B, V_level], target codes [B, levels])`."""

    name = "code_cross_entropy"
    config_class = CodeCrossEntropyConfig
    reads = "code_logits"

    def __call__(self, model, batch, reference=None) -> torch.Tensor:
        logits, codes = model.code_logits(batch)
        return sum(F.cross_entropy(lg, codes[:, lv]) for lv, lg in enumerate(logits)) / len(logits)


class TokenCrossEntropy(Objective):
    """Mean cross-entropy of a language model's target tokens (sid_llm: the next item's code tokens, and the
    alignment tasks' targets). Needs `token_loss(batch) -> scalar`."""

    name = "token_cross_entropy"
    config_class = TokenCrossEntropyConfig
    reads = "token_loss"

    def __call__(self, model, batch, reference=None) -> torch.Tensor:
        return model.token_loss(batch)


def item_log_prob(train_items: np.ndarray, n_items: int) -> torch.Tensor:
    """[n_items + 1] log of each item's add-one-smoothed share of the training interactions."""
    counts = np.bincount(train_items, minlength=n_items + 1).astype(np.float64) + 1.0
    return torch.from_numpy(np.log(counts / counts.sum())).float()


def build_objective(spec, model, train_items: np.ndarray | None = None, **keys) -> Objective:
    """The objective `spec` (an objective config, a name or a {name: ..., keys} mapping; `keys` override its
    keys) for `model`; `train_items`: the flat training item ids (for logQ). Raises ConfigError for an unknown
    objective, bad keys or a model without the output the objective reads."""
    cfg = objective_config(spec, **keys)
    cls = registry.OBJECTIVES.get(cfg.name)
    if cls.reads is not None and not hasattr(model, cls.reads):
        raise ConfigError(
            f"objective {cfg.name} reads {cls.reads}, which model {model.cfg.name} does not have"
        )
    return cls.build(cfg, model, train_items)
