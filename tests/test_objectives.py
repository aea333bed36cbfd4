"""Objectives as parts: DPO and S-DPO by hand and through the Trainer with a frozen reference model."""

import copy
import math

import numpy as np
import pytest
import torch

from genrec.config import EvalConfig, TrainConfig, load_config
from genrec.data.batching import HistoryBatch
from genrec.errors import ConfigError
from genrec.models import build_model
from genrec.objectives import DPO, SDPO, PreferenceBatch, build_objective
from genrec.objectives.base import item_log_prob
from genrec.training.checkpoint import load_weights
from genrec.training.trainer import FitContext, Trainer


class FixedLikelihood(torch.nn.Module):
    """log p(item) read from a table, whatever the history: a model whose margins are known by hand."""

    capabilities = frozenset({"log_likelihood"})

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table))

    def can(self, capability):
        return capability in self.capabilities

    def log_likelihood(self, batch, items):
        return self.table[items]


def pair(chosen, rejected):
    return PreferenceBatch(
        HistoryBatch(torch.tensor([[1]])), torch.tensor([chosen]), torch.tensor([rejected])
    )


def test_dpo_and_sdpo_by_hand():
    model = FixedLikelihood([0.0, -1.0, -2.0, -3.0])  # log p of items 1, 2, 3
    reference = FixedLikelihood([0.0, -1.5, -1.5, -1.5])
    # margins m = log p - log p_ref: chosen (1) +0.5, rejected (2) -0.5, (3) -1.5
    dpo = DPO(beta=1.0)(model, pair(1, [2]), reference)
    assert dpo.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))
    two = DPO(beta=1.0)(model, pair(1, [2, 3]), reference)  # mean over the rejected items
    expected = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(-2.0)))) / 2
    assert two.item() == pytest.approx(expected)
    sdpo = SDPO(beta=1.0)(model, pair(1, [2, 3]), reference)
    inner = -math.log(math.exp(-0.5 - 0.5) + math.exp(-1.5 - 0.5))  # -log sum_j exp(m_j - m_chosen)
    assert sdpo.item() == pytest.approx(-math.log(1 / (1 + math.exp(-inner))))
    with pytest.raises(ConfigError, match="reference"):
        DPO()(model, pair(1, [2]), None)
    assert build_objective("sdpo", model, beta=0.5).beta == 0.5


def test_sampled_softmax_log_q_is_a_distribution_over_items():
    lq = item_log_prob(np.array([1, 1, 2, 3, 3, 3]), 4)
    assert lq.shape == (5,) and lq.exp().sum().item() == pytest.approx(1.0)
    assert lq[3] > lq[1] > lq[2] > lq[4]  # more interactions, higher sampling probability


@pytest.mark.parametrize("objective", [DPO(beta=0.5), SDPO(beta=0.5)])
def test_trainer_aligns_a_sequence_model_against_a_frozen_reference(objective, tmp_path):
    torch.manual_seed(0)
    cfg = load_config("sasrec", ["model.dim=16", "model.max_len=6", "model.dropout=0.0"]).model
    model = build_model(cfg, 20, 8)
    reference = copy.deepcopy(model)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    histories = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]])
    chosen, rejected = torch.tensor([4, 7, 10, 13]), torch.tensor([[15, 16], [17, 18], [19, 20], [15, 17]])

    def batches(_data, rng, _batch_size):
        yield PreferenceBatch(HistoryBatch(histories), chosen, rejected)

    def margin(m) -> float:
        with torch.no_grad():
            lp = m.log_likelihood(HistoryBatch(histories), torch.cat([chosen[:, None], rejected], 1))
        return float((lp[:, :1] - lp[:, 1:]).mean())

    ctx = FitContext(
        TrainConfig(epochs=15, lr=0.01, patience=20), EvalConfig(), run_dir=tmp_path, progress=False
    )
    start = margin(model)
    summary = Trainer(
        model, objective, None, lambda m, _p: margin(m), ctx, reference=reference, batches=batches
    ).fit()
    assert margin(model) > start + 1.0 and summary["objective"] == objective.name
    for key, value in reference.state_dict().items():  # the reference never trains
        assert torch.equal(value, before[key])
    saved = load_weights(tmp_path / "best.safetensors")
    assert set(saved) == set(model.state_dict())  # only the model's own weights are written
