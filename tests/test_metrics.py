"""The evaluator against examples small enough to compute by hand."""

import math

import numpy as np
import pytest
import torch
from conftest import REPEATS_CSV

from genrec.config import EvalConfig, load_config
from genrec.data.split import Csr, EvalSet
from genrec.eval.evaluator import evaluate, validation_score
from genrec.eval.metrics import MISS, MetricAccumulator, compact_lists, ranks_from_lists, target_ranks
from genrec.runs import train_run

NEG = float("-inf")


class FixedScores(torch.nn.Module):
    """Score rows given per example (looked up by user id)."""

    capabilities = frozenset({"score"})
    max_history = None

    def __init__(self, table) -> None:
        super().__init__()
        self.table = torch.as_tensor(table, dtype=torch.float32)

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


# ---- the edges: removed, NaN and padding targets, K past the catalogue, generated lists, sampled candidates


class FixedLists(torch.nn.Module):
    """A list generator whose lists (and scores) are given per example, whatever it is asked to exclude."""

    capabilities = frozenset({"generate"})
    max_history = None

    def __init__(self, ids, scores) -> None:
        super().__init__()
        self.ids, self.scores = torch.as_tensor(ids), torch.as_tensor(scores, dtype=torch.float32)

    def recommend(self, batch, k, exclude=None):
        return self.ids[batch.users, :k], self.scores[batch.users, :k]


def examples(histories, targets):
    offsets = np.r_[0, np.cumsum([len(h) for h in histories])]
    items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
    return EvalSet(np.arange(len(targets)), Csr(offsets, items), np.asarray(targets))


def test_targets_the_protocol_removes_are_misses_at_every_k(tmp_path):
    """REPEATS_CSV: every test target repeats a history item. History excluded, all metrics are 0 at any K.
    Unfiltered (popularity from the training prefixes 1 2 | 2 3 | 3 4 | 4 5: item 1 -> 1, 2/3/4 -> 2, 5 -> 1,
    6 -> 0): user 1's target 1 ties with 5 below 2, 3, 4 -> pessimistic rank 4; the others rank 2."""
    data = tmp_path / "inter.csv"
    data.write_text(REPEATS_CSV)
    cfg = load_config("popularity", ["eval.ks=[1,5,10]"], dataset=str(data))
    metrics = train_run(cfg, tmp_path / "run", progress=False)
    test = metrics["test"]
    for key in ("recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr"):
        assert test[key] == 0.0, key
    u = metrics["test_unfiltered"]
    assert u["recall@1"] == 0.0 and u["recall@5"] == 1.0 and u["recall@10"] == 1.0
    assert u["mrr"] == pytest.approx((1 / 5 + 3 * (1 / 3)) / 4, abs=1e-6)
    assert u["ndcg@10"] == pytest.approx((1 / math.log2(6) + 3 / math.log2(4)) / 4, abs=1e-6)


def test_ranks_of_removed_nan_and_padding_targets():
    scores = torch.tensor([[NEG, 3.0, NEG, float("nan"), 1.0, 1.0]])
    # item 2 removed (-inf), item 3 NaN, item 0 is padding: all misses; item 4 ties with 5 -> rank 2 (3.0 and
    # the tie ahead, the NaN never ahead)
    ranks = target_ranks(scores.expand(4, -1), torch.tensor([2, 3, 0, 4]))
    assert ranks.tolist() == [MISS, MISS, MISS, 2.0]
    acc = MetricAccumulator([1, 6, 1000], 5)
    acc.add(ranks)
    res = acc.result()
    # one hit of four at rank 2: recall@6 = recall@1000 = 1/4, NDCG = 1/log2(4) / 4 = 0.125, MRR = 1/3 / 4
    assert res["recall@1"] == 0.0 and res["recall@6"] == 0.25 and res["recall@1000"] == 0.25
    assert res["ndcg@1000"] == pytest.approx(0.125) and res["mrr"] == pytest.approx(1 / 12, abs=1e-6)


def test_k_at_and_above_a_tiny_catalogue_history_excluded():
    """3 items. User 0: history [1, 2], target 3 -> the only item left, rank 0. User 1: history [3], target 3 ->
    a miss even at K = 3 = catalogue and K = 4 > catalogue (it used to get rank 3 = catalogue size, a hit at 4).
    Coverage counts only what a list held: user 0's top-3 is item 3 alone (1/3), not the excluded fillers."""
    table = [[0, 1.0, 2.0, 0.5], [0, 1.0, 2.0, 3.0]]
    cfg = EvalConfig(ks=[1, 3, 4], select_metric="mrr")
    res = evaluate(FixedScores(table), examples([[1, 2], [3]], [3, 3]), 3, cfg)
    f = res["filtered"]
    assert f["recall@1"] == 0.5 and f["recall@3"] == 0.5 and f["recall@4"] == 0.5 and f["mrr"] == 0.5
    assert f["coverage@1"] == pytest.approx(2 / 3)  # top-1: item 3 (user 0), item 2 (user 1)
    alone = evaluate(FixedScores(table[:1]), examples([[1, 2]], [3]), 3, cfg)["filtered"]
    assert alone["recall@1"] == 1.0 and alone["coverage@3"] == pytest.approx(1 / 3)
    u = res["unfiltered"]  # user 0: 3 ranks third (rank 2); user 1: 3 ranks first
    assert (
        u["recall@1"] == 0.5 and u["recall@3"] == 1.0 and u["mrr"] == pytest.approx((1 / 3 + 1) / 2, abs=1e-6)
    )

    one = evaluate(
        FixedScores([[0, 5.0]]), examples([[1]], [1]), 1, EvalConfig(ks=[1, 10], select_metric="mrr")
    )
    assert one["filtered"]["recall@10"] == 0.0 and one["unfiltered"]["recall@10"] == 1.0


def test_generated_lists_count_only_real_distinct_allowed_items():
    """User 0's list [5, 0, 5, 2, 4] (a dead slot and a repeat): its items are 5, 2, 4, so target 4 has rank 2.
    User 1's list [3, 1, 2] holds its history item 3 although asked to exclude it: history excluded, item 3
    takes no place, so target 2 has rank 1 (unfiltered: 2). User 2's target 4 repeats its history: a miss when
    history is excluded even though the list shows it; unfiltered rank 0. User 3's list has target 1 only at a
    -inf (dead) slot: a miss."""
    ids = [[5, 0, 5, 2, 4], [3, 1, 2, 0, 0], [4, 1, 0, 0, 0], [2, 1, 0, 0, 0]]
    scores = [
        [-1, NEG, -2, -3, -4],
        [-1, -2, -3, NEG, NEG],
        [-1, -2, NEG, NEG, NEG],
        [-1, NEG, NEG, NEG, NEG],
    ]
    ex = examples([[1], [3], [4], [3]], [4, 2, 4, 1])
    res = evaluate(FixedLists(ids, scores), ex, 5, EvalConfig(ks=[1, 2, 3, 50], select_metric="mrr"))
    f, u = res["filtered"], res["unfiltered"]
    assert f["recall@1"] == 0.0 and f["recall@2"] == 0.25 and f["recall@3"] == 0.5 and f["recall@50"] == 0.5
    assert f["mrr"] == pytest.approx((1 / 3 + 1 / 2) / 4, abs=1e-6)
    assert u["recall@1"] == 0.25 and u["recall@3"] == 0.75
    assert u["mrr"] == pytest.approx((1 / 3 + 1 / 3 + 1) / 4, abs=1e-6)
    assert compact_lists(torch.tensor([[5, 0, 5, 2]])).tolist() == [[5, 2, 0, 0]]
    assert ranks_from_lists(torch.tensor([[2, 0, 0]]), torch.tensor([0])).tolist() == [MISS]


def test_sampled_candidates_that_run_out():
    """5 items; scores rank item 5 > 4 > 3 > 2 > 1. User 0 has seen 2..5 (everything but its target 1): no
    negative is left, so the target stands alone (rank 0), as in the history-excluded full ranking; before,
    history items were drawn as negatives. User 1 has seen 3, 4, 5, target 2: every negative is item 1, below the
    target (rank 0). User 2's target 5 is in its history: a miss with history excluded."""
    table = torch.tensor([[0, 1.0, 2.0, 3.0, 4.0, 5.0]]).expand(3, -1)
    ex = examples([[2, 3, 4, 5], [3, 4, 5], [5]], [1, 2, 5])
    cfg = EvalConfig(ks=[1], sampled_negatives=4, select_metric="mrr")
    res = evaluate(FixedScores(table), ex, 5, cfg)
    assert res["sampled"]["recall@1"] == pytest.approx(2 / 3) and res["sampled"]["mrr"] == pytest.approx(
        2 / 3
    )
    unfiltered = EvalConfig(ks=[1], sampled_negatives=4, select_metric="mrr", exclude_history=False)
    assert evaluate(FixedScores(table), ex, 5, unfiltered)["sampled"]["recall@1"] == 1.0


def test_nan_scores_rank_as_misses_and_json_holds_null(tmp_path):
    """A diverged model scoring everything NaN: every metric is 0 (it used to be recall 1.0, NDCG and MRR inf),
    and metrics.json-style output is strict JSON with null where a value is undefined."""
    import json

    from genrec.io import write_json

    table = torch.full((2, 6), float("nan"))
    res = evaluate(
        FixedScores(table), examples([[1], [2]], [3, 4]), 5, EvalConfig(ks=[1, 10], select_metric="mrr")
    )
    for convention in ("filtered", "unfiltered"):
        m = res[convention]
        assert m["recall@10"] == 0.0 and m["ndcg@10"] == 0.0 and m["mrr"] == 0.0
        assert m["coverage@10"] == 0.0  # nothing was recommended
    write_json(tmp_path / "m.json", {"auc": float("nan"), "x": [float("inf"), 1.5], "n": np.float32(2.5)})
    text = (tmp_path / "m.json").read_text()

    def refuse(token):
        raise ValueError(token)

    assert json.loads(text, parse_constant=refuse) == {"auc": None, "x": [None, 1.5], "n": 2.5}


def test_ranking_metrics_of_single_class_users_and_nan_logits():
    """User 1 has likes only: no AUC of its own (GAUC over user 2 alone, 1.0); overall AUC: positives 0.9, 0.8,
    0.7 vs negatives 0.1, 0.0 -> 1.0. A NaN logit ranks below everything: AUC of [pos NaN, neg 0] is 0 (it was
    1.0, NaN sorting last as the highest) and LogLoss is undefined."""
    from genrec.eval.ranking import auc, ranking_metrics

    users = np.array([1, 1, 2, 2, 2])
    labels = np.array([1.0, 1.0, 1.0, 0.0, 0.0])
    m = ranking_metrics(users, labels, np.array([0.9, 0.8, 0.7, 0.1, 0.0]))
    assert m["auc"] == 1.0 and m["gauc"] == 1.0 and m["gauc_users"] == 1
    assert math.isnan(auc(np.array([1.0, 1.0]), np.array([0.3, 0.2])))
    assert auc(np.array([1.0, 0.0]), np.array([float("nan"), 0.0])) == 0.0
    assert auc(np.array([1.0, 0.0, 0.0]), np.array([NEG, NEG, NEG])) == 0.5  # one tie, not split by NaN diffs
    assert math.isnan(ranking_metrics(users[:2], labels[:2], np.array([float("nan"), 1.0]))["logloss"])


# ---- property: every retrieval metric against brute force on random tiny data


def brute_rank(target, history, scores=None, listed=None, exclude_history=True):
    """Rank of `target` by the protocol, in plain Python: None for a miss. `scores` (item -> score, NaN or -inf
    = not ranked) for a scoring model, `listed` ([(item, score)] as generated) for a list model."""
    if exclude_history and target in history:
        return None
    if scores is not None:
        t = scores[target]
        if not t > NEG:  # -inf or NaN
            return None
        allowed = [i for i in scores if i != target and not (exclude_history and i in history)]
        return sum(1 for i in allowed if scores[i] > NEG and scores[i] >= t)
    kept = brute_list(history, listed, exclude_history)
    return kept.index(target) if target in kept else None


def brute_list(history, listed, exclude_history):
    """The items a generated list recommends, in order: real ids with a score above -inf, each once, not
    excluded."""
    kept = []
    for item, score in listed:
        if item > 0 and score > NEG and item not in kept and not (exclude_history and item in history):
            kept.append(item)
    return kept


def brute_metrics(ranks, ks):
    out = {"mrr": sum(0.0 if r is None else 1 / (r + 1) for r in ranks) / len(ranks)}
    for k in ks:
        out[f"recall@{k}"] = sum(r is not None and r < k for r in ranks) / len(ranks)
        out[f"ndcg@{k}"] = sum(1 / math.log2(r + 2) for r in ranks if r is not None and r < k) / len(ranks)
    return out


def random_case(rng):
    n_items = int(rng.integers(1, 8))
    n_users = int(rng.integers(1, 7))
    histories = [rng.integers(1, n_items + 1, int(rng.integers(0, 6))).tolist() for _ in range(n_users)]
    targets = rng.integers(1, n_items + 1, n_users).tolist()  # may repeat a history item
    ks = sorted({int(k) for k in rng.integers(1, n_items + 4, int(rng.integers(1, 4)))})
    return n_items, histories, targets, ks


@pytest.mark.parametrize("seed", range(60))
def test_metrics_equal_brute_force_on_random_tiny_data(seed):
    rng = np.random.default_rng(seed)
    n_items, histories, targets, ks = random_case(rng)
    n = len(targets)
    ex = examples([h or [0] for h in histories], targets)  # an empty history is a row of padding
    # Scoring model: few distinct values (ties), some NaN and -inf.
    table = rng.integers(0, 3, (n, n_items + 1)).astype(np.float32)
    table[rng.random(table.shape) < 0.15] = np.nan
    table[rng.random(table.shape) < 0.1] = NEG
    # List model: ids with padding and repeats, some dead (-inf) slots, up to past the catalogue.
    width = n_items + 3
    ids = rng.integers(0, n_items + 1, (n, width))
    list_scores = -np.sort(rng.random((n, width)), 1)
    list_scores[rng.random((n, width)) < 0.15] = NEG
    n_neg = int(rng.integers(1, 5))
    max_k = min(max(ks), n_items)
    for exclude in (True, False):
        cfg = EvalConfig(
            ks=ks, select_metric="mrr", exclude_history=exclude, sampled_negatives=n_neg, seed=seed
        )
        got = evaluate(FixedScores(table), ex, n_items, cfg)
        for name, history_rule in (("filtered", True), ("unfiltered", False)):
            ranks = [
                brute_rank(
                    t,
                    set(h),
                    scores={i: float(table[u, i]) for i in range(1, n_items + 1)},
                    exclude_history=history_rule,
                )
                for u, (h, t) in enumerate(zip(histories, targets))
            ]
            for key, value in brute_metrics(ranks, ks).items():
                assert got[name][key] == pytest.approx(value, abs=2e-6), (seed, name, key)
        listed = evaluate(FixedLists(ids, list_scores), ex, n_items, cfg)
        for name, history_rule in (("filtered", True), ("unfiltered", False)):
            ranks, covered = [], {k: set() for k in ks}
            for u, (h, t) in enumerate(zip(histories, targets)):
                generated = list(zip(ids[u, :max_k].tolist(), list_scores[u, :max_k].tolist()))
                ranks.append(brute_rank(t, set(h), listed=generated, exclude_history=history_rule))
                kept = brute_list(set(h), generated, history_rule)
                for k in ks:
                    covered[k] |= set(kept[:k])
            expected = brute_metrics(ranks, ks)
            expected.update({f"coverage@{k}": len(covered[k]) / n_items for k in ks})
            for key, value in expected.items():
                assert listed[name][key] == pytest.approx(value, abs=2e-6), (seed, "lists", name, key)
        # Sampled: n_neg draws from the items neither in the history nor the target. Where every allowed item
        # scores at least the target (or none does), the rank is fixed: n_neg (or 0); else it lies between.
        lo, hi = [], []
        for u, (h, t) in enumerate(zip(histories, targets)):
            s = {i: float(table[u, i]) for i in range(1, n_items + 1)}
            if (exclude and t in h) or not s[t] > NEG:
                lo.append(None), hi.append(None)
                continue
            allowed = [i for i in s if i != t and i not in h]
            ahead = sum(1 for i in allowed if s[i] > NEG and s[i] >= s[t])
            lo.append(n_neg if allowed and ahead == len(allowed) else 0)
            hi.append(0 if ahead == 0 else n_neg)
        best = brute_metrics([min(a, b) if a is not None else None for a, b in zip(lo, hi)], ks)
        worst = brute_metrics([max(a, b) if a is not None else None for a, b in zip(lo, hi)], ks)
        for key in best:
            assert worst[key] - 2e-6 <= got["sampled"][key] <= best[key] + 2e-6, (seed, "sampled", key)
