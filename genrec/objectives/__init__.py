"""Objectives: what a training step minimises, as parts chosen by config (`train.objective`) rather than
branches inside models.

An objective is called as `objective(model, batch, reference=None) -> scalar loss`. It reads what the model
exposes (`next_item_outputs`, `pair_scores`, `logits`, `code_logits`, `log_likelihood`), so any model with
those outputs can train with it. Preference objectives (DPO, S-DPO) compare the model with a frozen reference
(the weights training started from); their batches carry (chosen, rejected) pairs (`PreferenceBatch`). Each
objective has a typed config (`genrec.config.objectives`) and is found by name in `genrec.registry.OBJECTIVES`.
"""

from genrec.objectives.base import Objective, build_objective
from genrec.objectives.preference import DPO, SDPO, PreferenceBatch

__all__ = ["DPO", "SDPO", "Objective", "PreferenceBatch", "build_objective"]
