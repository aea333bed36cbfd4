"""Preference objectives over (chosen, rejected) items or sessions: DPO and softmax-DPO (S-DPO).

Both compare the trained model's log-likelihood ratio to a frozen reference model's (usually the supervised
model the alignment starts from), so the model moves towards the chosen item and away from the rejected ones
without drifting far from the reference:
- DPO (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290): -log sigmoid(beta * (m_chosen - m_rejected)),
  m = log p_model - log p_reference, averaged over the rejected items of a row;
- S-DPO (Chen et al. 2024, https://arxiv.org/abs/2406.09215): one softmax over all rejected items,
  -log sigmoid(-log sum_j exp(beta * (m_rejected_j - m_chosen))).
`sft_weight` > 0 adds that weight times the chosen item's negative log-likelihood under the model (the "DPO +
SFT" regulariser several recommendation papers use to keep the next-item accuracy; 0 = plain DPO / S-DPO).

Items need the model's `log_likelihood(history_batch, items [B, n]) -> [B, n]` capability; sessions (chosen
[B, N], rejected [B, R, N], a list of N items each, as OneRec generates them) need
`session_log_likelihood(history_batch, sessions [B, n, N]) -> [B, n]` (log p of the whole list).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genrec.config.objectives import DPOConfig, SDPOConfig
from genrec.data.batching import HistoryBatch
from genrec.errors import ConfigError
from genrec.objectives.base import Objective


@dataclass
class PreferenceBatch:
    """B preference pairs. Items: chosen [B], rejected [B, R] internal item ids. Sessions: chosen [B, N],
    rejected [B, R, N], each a list of N internal item ids. R >= 1 rejected per row."""

    history: HistoryBatch  # B histories
    chosen: torch.Tensor
    rejected: torch.Tensor

    def __post_init__(self) -> None:
        if self.rejected.ndim != self.chosen.ndim + 1 or self.chosen.ndim not in (1, 2):
            raise ValueError(
                f"chosen [B] with rejected [B, R] (items) or chosen [B, N] with rejected [B, R, N] (sessions), "
                f"got {tuple(self.chosen.shape)} and {tuple(self.rejected.shape)}"
            )

    def __len__(self) -> int:
        return len(self.chosen)

    @property
    def sessions(self) -> bool:
        """Whether chosen and rejected are lists of items (sessions) rather than single items."""
        return self.chosen.ndim == 2

    def item_ids(self) -> torch.Tensor:
        """[B, 1 + R] (items) or [B, 1 + R, N] (sessions): the chosen one, then the rejected ones."""
        return torch.cat([self.chosen[:, None], self.rejected], 1)


class _Preference(Objective):
    # Dropout stays off, as in TRL's DPOTrainer: the margins then start at exactly 0 against the reference.
    uses_dropout = False

    def __init__(self, beta: float = 0.1, sft_weight: float = 0.0) -> None:
        if beta <= 0:
            raise ConfigError(f"beta must be positive, got {beta}")
        if sft_weight < 0:
            raise ConfigError(f"sft_weight must be >= 0, got {sft_weight}")
        self.beta, self.sft_weight = beta, sft_weight

    @classmethod
    def build(cls, cfg: DPOConfig, model, train_items) -> _Preference:
        return cls(cfg.beta, cfg.sft_weight)

    def log_likelihoods(self, model, batch: PreferenceBatch) -> torch.Tensor:
        """[B, 1 + R] log p of the chosen then the rejected items (or sessions) under `model`."""
        need = "session_log_likelihood" if batch.sessions else "log_likelihood"
        if not model.can(need):
            raise ConfigError(f"{model.cfg.name} does not expose {need}, which {self.name} needs")
        method = model.session_log_likelihood if batch.sessions else model.log_likelihood
        return method(batch.history, batch.item_ids())

    def margins(self, model, batch: PreferenceBatch, reference) -> tuple[torch.Tensor, torch.Tensor]:
        """(m_chosen [B], m_rejected [B, R]) with m = log p_model - log p_reference."""
        if reference is None:
            raise ConfigError(f"{self.name} needs a frozen reference model")
        log_p = self.log_likelihoods(model, batch)
        with torch.no_grad():
            log_ref = self.log_likelihoods(reference, batch)
        self._chosen_log_p = log_p[:, 0]
        m = log_p - log_ref
        return m[:, 0], m[:, 1:]

    def _with_sft(self, loss: torch.Tensor) -> torch.Tensor:
        if not self.sft_weight:
            return loss
        return loss - self.sft_weight * self._chosen_log_p.mean()


class DPO(_Preference):
    name = "dpo"
    config_class = DPOConfig

    def __call__(self, model, batch: PreferenceBatch, reference=None) -> torch.Tensor:
        chosen, rejected = self.margins(model, batch, reference)
        return self._with_sft(-F.logsigmoid(self.beta * (chosen[:, None] - rejected)).mean())


class SDPO(_Preference):
    name = "sdpo"
    config_class = SDPOConfig

    def __call__(self, model, batch: PreferenceBatch, reference=None) -> torch.Tensor:
        chosen, rejected = self.margins(model, batch, reference)
        loss = -F.logsigmoid(-torch.logsumexp(self.beta * (rejected - chosen[:, None]), dim=1)).mean()
        return self._with_sft(loss)
