"""The objective interface and the supervised objectives: softmax family, BCE, BPR, contrastive, code CE.

`build_objective(name, model, train_items)` turns a name (a model's `objective_name()`, e.g. SASRec's
`model.loss`) into an objective; hyper-parameters come from the model's config section, where recipes keep
them (`loss_chunk`, `softmax_dtype`, `negatives`, `contrastive_weight`, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from genrec.errors import ConfigError
from genrec.models.next_item import resolve_dtype
from genrec.objectives import losses


class Objective:
    """`objective(model, batch, reference=None) -> scalar loss`; `reference` is a frozen copy of the model
    for objectives that set `needs_reference` (it is never trained nor saved with the run's weights)."""

    name: ClassVar[str]
    needs_reference: ClassVar[bool] = False

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
    units = staticmethod(next_item_units)

    def __init__(self, chunk: int = 256, dtype: torch.dtype = torch.float32) -> None:
        self.chunk, self.dtype = chunk, dtype

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
    units = staticmethod(next_item_units)

    def __init__(self, negatives: int, item_log_prob: torch.Tensor) -> None:
        self.negatives, self.item_log_prob = negatives, item_log_prob

    def __call__(self, model, batch, reference=None, outputs=None) -> torch.Tensor:
        o = outputs if outputs is not None else model.next_item_outputs(batch)
        if self.item_log_prob.device != o.query.device:  # built on the host from the data; moved once
            self.item_log_prob = self.item_log_prob.to(o.query.device)
        return losses.sampled_softmax(o.query, o.weight, o.targets, self.negatives, self.item_log_prob)


class BCEOneNegative(Objective):
    """SASRec's original loss: one positive and one uniform negative per position, binary cross-entropy."""

    name = "bce"
    units = staticmethod(next_item_units)

    def __call__(self, model, batch, reference=None, outputs=None) -> torch.Tensor:
        o = outputs if outputs is not None else model.next_item_outputs(batch)
        return losses.bce_one_negative(o.query, o.weight, o.targets)


class WithContrastive(Objective):
    """A next-item objective plus `weight` x symmetric InfoNCE between two dropout passes' newest states
    (DuoRec / CL4SRec's model-level augmentation; the batch's other sequences are the negatives)."""

    def __init__(self, base: Objective, weight: float, temperature: float) -> None:
        self.base, self.weight, self.temperature = base, weight, temperature
        self.name = f"{base.name}+contrastive"
        self.units = base.units  # of the next-item term; the contrastive term's negatives are per process

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

    def __call__(self, model, batch, reference=None) -> torch.Tensor:
        diff, penalty = model.pair_scores(batch)
        return -F.logsigmoid(diff).mean() + penalty


class WeightedBCE(Objective):
    """Binary cross-entropy of like-logits (`model.logits(batch)` [B, C]) against `batch.labels`, averaged
    over the cells where `batch.weights` is 1 (rankers)."""

    name = "bce_logits"

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

    def __call__(self, model, batch, reference=None) -> torch.Tensor:
        logits, codes = model.code_logits(batch)
        return sum(F.cross_entropy(lg, codes[:, lv]) for lv, lg in enumerate(logits)) / len(logits)


class TokenCrossEntropy(Objective):
    """Mean cross-entropy of a language model's target tokens (sid_llm: the next item's code tokens, and the
    alignment tasks' targets). Needs `token_loss(batch) -> scalar`."""

    name = "token_cross_entropy"

    def __call__(self, model, batch, reference=None) -> torch.Tensor:
        return model.token_loss(batch)


def item_log_prob(train_items: np.ndarray, n_items: int) -> torch.Tensor:
    """[n_items + 1] log of each item's add-one-smoothed share of the training interactions."""
    counts = np.bincount(train_items, minlength=n_items + 1).astype(np.float64) + 1.0
    return torch.from_numpy(np.log(counts / counts.sum())).float()


def _next_item(make: Callable[[object, np.ndarray | None], Objective]):
    def build(model, train_items):
        base = make(model, train_items)
        weight = getattr(model.cfg, "contrastive_weight", 0.0)
        return WithContrastive(base, weight, model.cfg.contrastive_temperature) if weight else base

    return build


def _sampled(model, train_items):
    if train_items is None:
        raise ConfigError("sampled_softmax needs the training items (for its logQ correction)")
    return SampledSoftmax(model.cfg.negatives, item_log_prob(train_items, model.n_items))


OBJECTIVES: dict[str, Callable] = {
    "full_softmax": _next_item(
        lambda m, _: FullSoftmax(m.cfg.loss_chunk, resolve_dtype(m.cfg.softmax_dtype))
    ),
    "sampled_softmax": _next_item(_sampled),
    "bce": _next_item(lambda m, _: BCEOneNegative()),
    "bpr": lambda m, _: BPR(),
    "bce_logits": lambda m, _: WeightedBCE(),
    "code_cross_entropy": lambda m, _: CodeCrossEntropy(),
    "token_cross_entropy": lambda m, _: TokenCrossEntropy(),
}


def objective_names() -> list[str]:
    return sorted(OBJECTIVES) + ["dpo", "sdpo"]


def build_objective(name: str, model, train_items: np.ndarray | None = None, **options) -> Objective:
    """The objective called `name` for `model`. `train_items`: the flat training item ids (for logQ).
    `options` configure preference objectives (`beta`). Raises ConfigError for an unknown name."""
    if name in ("dpo", "sdpo"):
        from genrec.objectives.preference import DPO, SDPO

        return (DPO if name == "dpo" else SDPO)(**options)
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; known: {', '.join(objective_names())}")
    return OBJECTIVES[name](model, train_items)
