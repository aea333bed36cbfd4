"""Preference objectives over (chosen, rejected) items: DPO and softmax-DPO (S-DPO).

Both compare the trained model's log-likelihood ratio to a frozen reference model's (usually the supervised
model the alignment starts from), so the model moves towards the chosen item and away from the rejected ones
without drifting far from the reference:
- DPO (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290): -log sigmoid(beta * (m_chosen - m_rejected)),
  m = log p_model - log p_reference, averaged over the rejected items of a row;
- S-DPO (Chen et al. 2024, https://arxiv.org/abs/2406.09215): one softmax over all rejected items,
  -log sigmoid(-log sum_j exp(beta * (m_rejected_j - m_chosen))).
The model needs the `log_likelihood(history_batch, items [B, n]) -> [B, n]` capability.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genrec.data.batching import HistoryBatch
from genrec.errors import ConfigError
from genrec.objectives.base import Objective


@dataclass
class PreferenceBatch:
    history: HistoryBatch  # B histories
    chosen: torch.Tensor  # [B] internal item ids the user preferred
    rejected: torch.Tensor  # [B, R] internal item ids ranked below the chosen one (R >= 1)

    def __len__(self) -> int:
        return len(self.chosen)

    def item_ids(self) -> torch.Tensor:
        """[B, 1 + R]: the chosen item, then the rejected ones."""
        return torch.cat([self.chosen[:, None], self.rejected], 1)


class _Preference(Objective):
    needs_reference = True

    def __init__(self, beta: float = 0.1) -> None:
        if beta <= 0:
            raise ConfigError(f"beta must be positive, got {beta}")
        self.beta = beta

    def margins(self, model, batch: PreferenceBatch, reference) -> tuple[torch.Tensor, torch.Tensor]:
        """(m_chosen [B], m_rejected [B, R]) with m = log p_model - log p_reference."""
        if reference is None:
            raise ConfigError(f"{self.name} needs a frozen reference model")
        if not model.can("log_likelihood"):
            raise ConfigError(f"{model.cfg.name} does not expose log_likelihood, which {self.name} needs")
        items = batch.item_ids()
        log_p = model.log_likelihood(batch.history, items)
        with torch.no_grad():
            log_ref = reference.log_likelihood(batch.history, items)
        m = log_p - log_ref
        return m[:, 0], m[:, 1:]


class DPO(_Preference):
    name = "dpo"

    def __call__(self, model, batch: PreferenceBatch, reference=None) -> torch.Tensor:
        chosen, rejected = self.margins(model, batch, reference)
        return -F.logsigmoid(self.beta * (chosen[:, None] - rejected)).mean()


class SDPO(_Preference):
    name = "sdpo"

    def __call__(self, model, batch: PreferenceBatch, reference=None) -> torch.Tensor:
        chosen, rejected = self.margins(model, batch, reference)
        return -F.logsigmoid(-torch.logsumexp(self.beta * (rejected - chosen[:, None]), dim=1)).mean()
