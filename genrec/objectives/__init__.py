"""Objectives: what a training step minimises, as parts chosen by config rather than branches inside models.

An objective is called as `objective(model, batch, reference=None) -> scalar loss`. It reads what the model
exposes (`next_item_outputs`, `pair_scores`, `logits`, `code_logits`, `log_likelihood`), so any model with
those outputs can train with it. Preference objectives (DPO, S-DPO) set `needs_reference` and get a frozen
reference model from the trainer; their batches carry (chosen, rejected) pairs (`PreferenceBatch`).
"""

from genrec.objectives.base import OBJECTIVES, Objective, build_objective, objective_names
from genrec.objectives.preference import DPO, SDPO, PreferenceBatch

__all__ = ["DPO", "OBJECTIVES", "SDPO", "Objective", "PreferenceBatch", "build_objective", "objective_names"]
