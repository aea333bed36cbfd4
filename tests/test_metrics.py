"""The evaluator against examples small enough to compute by hand."""

import math

import numpy as np
import pytest
import torch

from genrec.config import EvalConfig
from genrec.data.split import Csr, EvalSet
from genrec.eval.evaluator import evaluate, validation_score
from genrec.eval.metrics import MetricAccumulator, ranks_from_lists, target_ranks


class FixedScores(torch.nn.Module):
    """A 'model' whose score rows are given per example (examples are looked up by user id)."""

    capabilities = frozenset({"score"})
    max_history = None

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def score(self, batch):
        return self.table[batch.users]


def test_ranks_ties_count_against_target():
    scores = torch.tensor([[0.0, 3.0, 2.0, 2.0, 1.0]])
    assert target_ranks(scores, torch.tensor([2])).item() == 2  # item 3 ties with it: pessimistic
    assert target_ranks(scores, torch.tensor([1])).item() == 0
    assert ranks_from_lists(torch.tensor([[4, 2, 1]]), torch.tensor([1])).item() == 2
    assert ranks_from_lists(torch.tensor([[4, 2, 1]]), torch.tensor([3])).item() == float("inf")  # a miss


def test_hand_computed_example():
    # 5 items (ids 1..5). Three users; scores chosen so ranks are easy to follow.
    table = torch.tensor(
        [
            [0, 5.0, 4.0, 3.0, 2.0, 1.0],  # user 0: history [1], target 3
            [0, 1.0, 2.0, 3.0, 4.0, 5.0],  # user 1: history [5, 4], target 1
            [0, 9.0, 1.0, 1.0, 1.0, 1.0],  # user 2: history [2], target 1
        ]
    )
    history = Csr(np.array([0, 1, 3, 4]), np.array([1, 5, 4, 2]))
    examples = EvalSet(np.array([0, 1, 2]), history, np.array([3, 1, 1]))
    res = evaluate(FixedScores(table), examples, 5, EvalConfig(ks=[1, 2, 3], select_metric="mrr"))
    # Unfiltered ranks: user0 target 3 -> rank 2; user1 target 1 -> rank 4; user2 target 1 -> rank 0.
    u = res["unfiltered"]
    assert u["recall@1"] == pytest.approx(1 / 3)
    assert u["recall@3"] == pytest.approx(2 / 3)
    assert u["ndcg@3"] == pytest.approx((1 / math.log2(4) + 1) / 3, abs=1e-6)
    assert u["mrr"] == pytest.approx((1 / 3 + 1 / 5 + 1) / 3, abs=1e-6)
    # Filtered: user0 loses item 1 -> rank 1; user1 loses 5 and 4 -> rank 2; user2 unchanged rank 0.
    f = res["filtered"]
    assert f["recall@1"] == pytest.approx(1 / 3)
    assert f["recall@2"] == pytest.approx(2 / 3)
    assert f["recall@3"] == pytest.approx(1.0)
    assert f["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1) / 3, abs=1e-6)
    assert f["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3, abs=1e-6)
    # Coverage@1 filtered: top-1 lists are items 2, 3, 1 -> 3 of 5 items.
    assert f["coverage@1"] == pytest.approx(3 / 5)
    assert u["coverage@1"] == pytest.approx(2 / 5)  # items 1, 5
    assert f["examples"] == 3


def test_validation_pass_computes_only_the_convention_it_selects_on():
    torch.manual_seed(0)
    n_items, n_users = 40, 30
    table = torch.randn(n_users, n_items + 1)
    hist = Csr(
        np.arange(0, 2 * n_users + 1, 2), np.random.default_rng(0).integers(1, n_items + 1, 2 * n_users)
    )
    examples = EvalSet(np.arange(n_users), hist, np.random.default_rng(1).integers(1, n_items + 1, n_users))
    cfg = EvalConfig(ks=[5, 10])
    full = evaluate(FixedScores(table), examples, n_items, cfg)
    for convention in ("filtered", "unfiltered"):
        fast = evaluate(FixedScores(table), examples, n_items, cfg, conventions=(convention,), coverage=False)
        assert list(fast) == [convention]
        for key in ("recall@5", "ndcg@10", "mrr"):
            assert fast[convention][key] == full[convention][key]
        assert "coverage@10" not in fast[convention] and "coverage@10" in full[convention]
    assert full["filtered"]["ndcg@10"] != full["unfiltered"]["ndcg@10"]
    # What the trainer calls every epoch: the selected metric of the history-excluded convention by default.
    assert validation_score(FixedScores(table), examples, n_items, cfg) == full["filtered"][cfg.select_metric]
    with pytest.raises(ValueError, match="conventions"):
        evaluate(FixedScores(table), examples, n_items, cfg, conventions=("excluded",))


def test_target_in_history_is_a_miss_when_filtered():
    table = torch.tensor([[0, 1.0, 0.5, 0.1]])
    examples = EvalSet(np.array([0]), Csr(np.array([0, 1]), np.array([1])), np.array([1]))
    res = evaluate(FixedScores(table), examples, 3, EvalConfig(ks=[1, 3], select_metric="mrr"))
    assert res["unfiltered"]["recall@1"] == 1.0
    assert res["filtered"]["recall@3"] == 0.0


def test_sampled_candidates_are_labelled_and_easier():
    torch.manual_seed(0)
    n_items, n_users = 200, 50
    table = torch.randn(n_users, n_items + 1)
    targets = table[:, 1:].argsort(1, descending=True)[:, 30].numpy() + 1  # every target ranks 31st of 200
    hist = Csr(np.arange(n_users + 1), np.full(n_users, 1))
    res = evaluate(
        FixedScores(table),
        EvalSet(np.arange(n_users), hist, targets),
        n_items,
        EvalConfig(ks=[10], sampled_negatives=20),
    )
    assert res["unfiltered"]["recall@10"] == 0.0
    assert res["sampled"]["recall@10"] > 0.5  # 20 random negatives rarely beat a top-15% item


def test_accumulator_averages_over_batches():
    acc = MetricAccumulator([1], 4)
    acc.add(torch.tensor([0]))
    acc.add(torch.tensor([3, 3, 3]))
    assert acc.result()["recall@1"] == pytest.approx(0.25)
