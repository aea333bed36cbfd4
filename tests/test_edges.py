"""Correctness at the edges (issue 18), one section per kind of fault; expected values are worked out by hand in
the docstrings and comments. The last section checks every retrieval metric on random tiny datasets against a
brute-force computation written here in plain Python."""

import math

import numpy as np
import pytest
import torch

from genrec.config import EvalConfig, load_config
from genrec.data.batching import HistoryBatch
from genrec.data.split import Csr, EvalSet
from genrec.decoding.beam import CodeTrie, constrained_beam_search
from genrec.decoding.cold_places import keep_cold_places
from genrec.eval.evaluator import evaluate
from genrec.eval.metrics import MISS, MetricAccumulator, compact_lists, ranks_from_lists, target_ranks
from genrec.items.semantic_ids import SemanticIds
from genrec.models import build_model
from genrec.runs import train_run

NEG = float("-inf")

# ---- 1. ranks and metrics at the edges ------------------------------------------------------------------------

ISSUE_CSV = """user_id,item_id,timestamp
1,1,100
1,2,101
1,3,102
1,1,103
2,2,100
2,3,101
2,4,102
2,2,103
3,3,100
3,4,101
3,5,102
3,3,103
4,4,100
4,5,101
4,6,102
4,4,103
"""


class FixedScores(torch.nn.Module):
    """Score rows given per example (looked up by user id)."""

    capabilities = frozenset({"score"})
    max_history = None

    def __init__(self, table) -> None:
        super().__init__()
        self.table = torch.as_tensor(table, dtype=torch.float32)

    def score(self, batch):
        return self.table[batch.users]


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
    """The issue's data: every test target repeats a history item. History excluded, all metrics are 0 at any K.
    Unfiltered (popularity from the training prefixes 1 2 | 2 3 | 3 4 | 4 5: item 1 -> 1, 2/3/4 -> 2, 5 -> 1,
    6 -> 0): user 1's target 1 ties with 5 below 2, 3, 4 -> pessimistic rank 4; the others rank 2."""
    data = tmp_path / "inter.csv"
    data.write_text(ISSUE_CSV)
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


# ---- 4. list generators return min(k, items left) valid distinct items ----------------------------------------


def forty_item_codes():
    """40 items, 2 levels of 4 codes + a separation code: item i (1..40) -> ((i-1) % 4, (i-1) // 4 % 4, (i-1) // 16)."""
    i = np.arange(40)
    return np.stack([i % 4, i // 4 % 4, i // 16], 1), [4, 4, 3]


def test_beam_prunes_prefixes_whose_items_are_all_excluded():
    """The model prefers code 0 at both levels, so the 5 best prefixes are (0, 0), (0, 1), (0, 2), (0, 3),
    (1, 0) or alike; the history holds every item under codes 0, 1 and 2 of the first level and some more: 7
    items are left, all under first code 3. Beam 5, k 5 must still find 5 of them (it found fewer before)."""
    codes, sizes = forty_item_codes()
    trie = CodeTrie(codes, sizes)
    pref = [torch.log_softmax(-torch.arange(s, dtype=torch.float32) * 3, 0) for s in sizes]

    def step(prefix, level):
        return pref[level].expand(prefix.shape[0], prefix.shape[1], -1)

    left = [4, 8, 12, 16, 20, 24, 28]  # items with first code 3 and second code 0 or 1 (or separation 1)
    history = torch.tensor([[i for i in range(1, 41) if i not in left]])  # 33 items
    items, scores, _ = constrained_beam_search(step, trie, 1, 5, 5, history)
    assert sorted(items[0].tolist()) == sorted(items[0].unique().tolist()) and len(items[0].unique()) == 5
    assert set(items[0].tolist()) <= set(left) and torch.isfinite(scores).all()
    # k beyond what is left: every one of the 7, then empty slots
    items, scores, _ = constrained_beam_search(step, trie, 1, 5, 10, history)
    assert sorted(items[0, :7].tolist()) == left and items[0, 7:].tolist() == [0, 0, 0]
    assert torch.isinf(scores[0, 7:]).all()
    # without exclusion it is the plain beam search: the 5 items with the most zeros in their codes first
    items, _, _ = constrained_beam_search(step, trie, 1, 5, 1)
    assert items[0].tolist() == [1]


def test_tiger_returns_min_k_items_left_after_its_history():
    """An untrained TIGER on 40 items (2 x 4 codes + separation), beam 5, k 5, after a 33-item history made of
    the items it ranks highest: 5 unseen items (7 exist), not fewer; k 10 gives all 7."""
    sets = ["model.dim=16", "model.heads=2", "model.tokenizer.levels=2", "model.tokenizer.codebook_size=4"]
    cfg = load_config("tiger", [*sets, "model.beam=5", "model.precision=float32"]).model
    torch.manual_seed(0)
    model = build_model(cfg, 40, 1).eval()
    model.tok_emb.weight.data *= 8
    codes, sizes = forty_item_codes()
    model.set_semantic_ids(SemanticIds(codes, sizes))
    batch = HistoryBatch(items=torch.tensor([[1, 2, 3]]), users=torch.tensor([0]), timestamps=None)
    ranked, _ = model.recommend(batch, 40)  # k = 40 widens the beam to the whole catalogue
    history = ranked[:, :33]
    for k, expected in ((5, 5), (10, 7)):
        items, scores = model.recommend(batch, k, exclude=history)
        found = items[0][items[0] > 0]
        assert len(found) == expected and len(found.unique()) == expected
        assert not torch.isin(found, history[0]).any() and torch.isfinite(scores[0, :expected]).all()


def test_cold_places_are_given_to_warm_items_when_the_cold_ones_are_excluded():
    """Share 0.5, k 4: places 2 and 4 are cold. Row 0 has only one cold item left: it takes place 2 and warm
    items fill places 1, 3, 4. Row 1 has no warm item left: cold items fill every place."""
    warm = torch.tensor([[10, 11, 12, 13], [0, 0, 0, 0]])
    warm_s = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [NEG, NEG, NEG, NEG]])
    cold = torch.tensor([[20, 0, 0, 0], [20, 21, 22, 23]])
    cold_s = torch.tensor([[-5.0, NEG, NEG, NEG], [-5.0, -6.0, -7.0, -8.0]])
    items, scores = keep_cold_places(warm, warm_s, cold, cold_s, 0.5, 4)
    assert items.tolist() == [[10, 20, 11, 12], [20, 21, 22, 23]]
    assert scores[0].tolist() == [-1.0, -5.0, -2.0, -3.0]
    full, _ = keep_cold_places(warm[:1, :2], warm_s[:1, :2], cold[1:, :2], cold_s[1:, :2], 0.5)
    assert full.tolist() == [[10, 20, 11, 21]]


def test_server_tells_an_exhausted_catalogue_from_a_list_that_stopped_short(tmp_path):
    """6 items; a history of 4 of them leaves 2, so k = 5 gives 2 items and says the catalogue is exhausted."""
    from fastapi.testclient import TestClient

    from genrec.serve import create_app
    from genrec.serve.app import shortfall_note

    data = tmp_path / "inter.csv"
    data.write_text(ISSUE_CSV)
    train_run(load_config("popularity", [], dataset=str(data)), tmp_path / "run", progress=False)
    client = TestClient(create_app(tmp_path / "run"))
    got = client.post("/recommend", json={"history": [1, 2, 3, 4], "k": 5}).json()
    assert sorted(x["item_id"] for x in got["items"]) == ["5", "6"]
    assert got["notes"][-1] == "catalogue exhausted: only 2 items are left after excluding the history"
    assert shortfall_note(4, 5, 7, scores_every_item=False) == (
        "4 of the 7 items left were returned (the beam search ran out); asked for 5"
    )


# ---- 2. time values read exactly or refused -----------------------------------------------------------------


def order_of(tmp_path, text, name="inter.csv"):
    from genrec.data.loaders import load_table

    path = tmp_path / name
    path.write_text(text)
    seq = load_table(path).encode()
    return [seq.item_ids[seq.row(u) - 1].tolist() for u in range(seq.n_users)], seq


def test_fractional_unix_seconds_keep_their_order(tmp_path):
    """User 1's times 100.9, 100.1, 100.5, 200.0 order its items 20, 30, 10, 40 (truncating to 100 used to leave
    file order). User 2's two events at 5.25 tie exactly: file order (50, 60). Stored times are whole seconds."""
    rows, seq = order_of(
        tmp_path,
        "user_id,item_id,timestamp\n1,10,100.9\n1,20,100.1\n1,30,100.5\n1,40,200.0\n2,60,7\n2,50,5.25\n2,60,5.25\n",
    )
    assert rows == [[20, 30, 10, 40], [50, 60, 60]]
    assert seq.timestamps.tolist() == [100, 100, 100, 200, 5, 5, 7]


def test_date_strings_with_milliseconds_and_offsets_keep_their_order(tmp_path):
    """Milliseconds order events within one second; a UTC offset is honoured: 01:00+02:00 is 23:00 UTC the day
    before, so it comes first. A column mixing the two formats is refused, not half read."""
    from genrec.errors import DataError

    text = "user,item,time\n1,1,2020-01-01 00:00:00.900\n1,2,2020-01-01 00:00:00.100\n1,3,2020-01-01 00:00:00.500\n"
    rows, seq = order_of(tmp_path, text)
    assert rows == [[2, 3, 1]] and seq.timestamps.tolist() == [1577836800] * 3
    rows, seq = order_of(
        tmp_path, "user,item,time\n2,4,2020-01-01T00:30:00+00:00\n2,5,2020-01-01T01:00:00+02:00\n"
    )
    assert rows == [[5, 4]] and seq.timestamps.tolist() == [1577833200, 1577838600]
    with pytest.raises(DataError, match="1 of 4 timestamps cannot be read"):
        order_of(tmp_path, text + "2,4,2020-01-01T00:30:00+00:00\n")


def test_parquet_datetimes_with_microseconds_keep_their_order(tmp_path):
    import datetime as dt

    import polars as pl

    from genrec.data.loaders import load_table

    t0 = dt.datetime(2021, 5, 1, 12, 0, 0)
    pl.DataFrame(
        {
            "user_id": [1, 1, 1],
            "item_id": [7, 8, 9],
            "timestamp": [t0 + dt.timedelta(microseconds=3), t0 + dt.timedelta(microseconds=1), t0],
        }
    ).write_parquet(tmp_path / "t.parquet")
    seq = load_table(tmp_path / "t.parquet").encode()
    assert seq.item_ids[seq.row(0) - 1].tolist() == [9, 8, 7]


@pytest.mark.parametrize(
    "value,needle",
    [
        ("yesterday", "1 timestamps are not numbers among unix seconds (e.g. 'yesterday')"),
        ("1e999", "NaN or infinite"),
        ("-5", "before 1970"),
        ("100.1234567891", "more than 9 decimal places"),
    ],
)
def test_unreadable_times_are_refused_with_one_clear_line(tmp_path, value, needle):
    from genrec.errors import DataError

    with pytest.raises(DataError, match="column 'timestamp'") as err:
        order_of(tmp_path, f"user_id,item_id,timestamp\n1,1,10\n1,2,{value}\n")
    assert needle in str(err.value) and "\n" not in str(err.value)
    # A date column with one bad value is refused too, never read as "no time".
    with pytest.raises(DataError, match="e.g. 'soon'"):
        order_of(tmp_path, "user_id,item_id,timestamp\n1,1,2020-01-01\n1,2,soon\n")


# ---- 3. non-finite numbers never pass as results --------------------------------------------------------------


def test_training_stops_at_the_first_non_finite_loss_and_keeps_the_last_good_checkpoint(tiny_p5, tmp_path):
    """MF on the tiny data, batches of 4 (9 steps an epoch); the loss turns NaN at step 11 (epoch 2, step 2): one
    line naming both, the checkpoint of epoch 1 is kept and holds finite weights."""
    from genrec.config import TrainConfig
    from genrec.data.registry import load_dataset
    from genrec.data.split import leave_one_out
    from genrec.runs.retrieval import fit_retrieval
    from genrec.training.checkpoint import load_state
    from genrec.training.trainer import FitContext, TrainingDiverged

    split = leave_one_out(load_dataset(str(tiny_p5)).encode())
    model = build_model(load_config("mf").model, split.n_items, split.n_users)
    real_scores, calls = model.pair_scores, []

    def pair_scores(batch):  # what MF's BPR objective reads: the 11th step's loss is NaN
        calls.append(1)
        diff, penalty = real_scores(batch)
        return (diff * float("nan") if len(calls) == 11 else diff), penalty

    model.pair_scores = pair_scores
    steps = sum(1 for _ in model.training_batches(split, np.random.default_rng(0), 4))
    ctx = FitContext(TrainConfig(epochs=3, batch_size=4), EvalConfig(ks=[1, 5, 10]), tmp_path, progress=False)
    with pytest.raises(TrainingDiverged) as err:
        fit_retrieval(model, split, ctx)
    message = str(err.value)
    assert steps == 9 and "loss nan at epoch 2, step 2 of 9" in message and "\n" not in message
    assert "keeps epoch 1" in message
    kept = load_state(tmp_path / "checkpoint.pt")
    assert kept["trainer"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values())


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


def test_server_answers_with_null_for_a_nan_score_and_never_lets_nan_take_a_place(tmp_path):
    """Popularity counts [_, 5, NaN, 4, 3, 2, 1]: the top-3 after item 6 is 1, 3, 4 (NaN used to take the first
    place and then be dropped: two items); /rank lists item 2 last with score null (it used to be a 500)."""
    from fastapi.testclient import TestClient

    from genrec.serve import create_app

    data = tmp_path / "inter.csv"
    data.write_text(ISSUE_CSV)
    train_run(load_config("popularity", [], dataset=str(data)), tmp_path / "run", progress=False)
    client = TestClient(create_app(tmp_path / "run"))
    client.app.state.engine.model.counts.copy_(torch.tensor([0, 5, float("nan"), 4, 3, 2, 1]))
    got = client.post("/recommend", json={"history": [6], "k": 3}).json()
    assert [x["item_id"] for x in got["items"]] == ["1", "3", "4"]
    r = client.post("/rank", json={"history": [6], "candidates": [2, 1, 3]})
    assert r.status_code == 200
    assert [(x["item_id"], x["score"]) for x in r.json()["items"]] == [("1", 5.0), ("3", 4.0), ("2", None)]
    r = client.post("/events", json={"user_id": 1, "items": [1], "timestamps": [-5]})
    assert r.status_code == 422 and "greater than or equal to 0" in r.json()["detail"]


# ---- 9. a wall-clock budget never decides the result ---------------------------------------------------------


def fit_mf(tiny_p5, run_dir=None, **train):
    from genrec.config import TrainConfig
    from genrec.data.registry import load_dataset
    from genrec.data.split import leave_one_out
    from genrec.runs.retrieval import fit_retrieval
    from genrec.training.trainer import FitContext

    split = leave_one_out(load_dataset(str(tiny_p5)).encode())
    torch.manual_seed(0)
    model = build_model(load_config("mf").model, split.n_items, split.n_users)
    ctx = FitContext(TrainConfig(batch_size=4, **train), EvalConfig(ks=[1, 5, 10]), run_dir, progress=False)
    return model, split, fit_retrieval(model, split, ctx)


def spent_after_first_epoch(monkeypatch):
    """The trainer's clock jumps a day ahead after its third reading (deadline, check before epoch 1, check before
    epoch 2): a budget of any size is spent after epoch 1, whatever the machine's speed."""
    from genrec.training import trainer

    real, readings = trainer.time.monotonic, []

    def clock():
        readings.append(1)
        return real() + (86400.0 if len(readings) >= 3 else 0.0)

    monkeypatch.setattr(trainer.time, "monotonic", clock)


def test_a_budget_stop_validates_the_weights_it_stops_with(tiny_p5, capsys, monkeypatch):
    """Validation every 7 epochs of 6, and a budget that is spent after epoch 1: the weights of epoch 1 were
    never validated; they are validated at the stop and chosen (the run used to report best epoch 0, score -1,
    and test figures of weights it never validated). The cap says on stderr that it bound."""
    spent_after_first_epoch(monkeypatch)
    model, split, summary = fit_mf(tiny_p5, epochs=6, eval_every=7, max_minutes=1)
    assert summary["stopped_by"] == "time budget" and summary["epochs_run"] == 1
    assert summary["best_epoch"] == 1 and 0 <= summary["best_valid"]["ndcg@10"] <= 1
    assert summary["history"][-1]["validated_at_stop"] and "valid_ndcg@10" in summary["history"][-1]
    assert "train.max_minutes=1 reached after epoch 1 of 6" in summary["stop"]
    from genrec.eval.evaluator import validation_score

    assert validation_score(model, split.valid, split.n_items, EvalConfig(ks=[1, 5, 10])) == pytest.approx(
        summary["best_valid"]["ndcg@10"]
    )
    assert "warning: time budget: train.max_minutes=1" in capsys.readouterr().err


def test_no_epoch_at_all_still_reports_validated_weights(tiny_p5):
    _, _, summary = fit_mf(tiny_p5, epochs=0)
    assert summary["best_epoch"] == 0 and summary["history"] == [
        {"epoch": 0, "valid_ndcg@10": summary["best_valid"]["ndcg@10"], "validated_at_stop": True}
    ]


def test_a_signal_stops_after_the_current_step_and_validates(tiny_p5):
    """SIGINT at step 2 of epoch 2 (9 steps an epoch): training stops there, those weights are validated and
    take part in the choice; the checkpoint keeps epoch 1 (a partial epoch is never saved)."""
    import os
    import signal

    from genrec.data.registry import load_dataset
    from genrec.data.split import leave_one_out

    calls = []
    original = build_model(load_config("mf").model, 1, 1).__class__.pair_scores

    def pair_scores(self, batch):  # what MF's objective reads, once per step
        calls.append(1)
        if len(calls) == 11:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch)

    split = leave_one_out(load_dataset(str(tiny_p5)).encode())
    cls = build_model(load_config("mf").model, split.n_items, split.n_users).__class__
    try:
        cls.pair_scores = pair_scores
        _, _, summary = fit_mf(tiny_p5, epochs=5)
    finally:
        cls.pair_scores = original
    assert summary["stopped_by"] == "signal SIGINT" and summary["epochs_run"] == 1
    last = summary["history"][-1]
    assert last["epoch"] == 2 and last["steps"] == "2 of 9" and "valid_ndcg@10" in last
    assert "SIGINT during epoch 2 (after step 2 of 9)" in summary["stop"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_budget_stop_is_written_in_the_protocol(tiny_p5, tmp_path, monkeypatch):
    spent_after_first_epoch(monkeypatch)
    cfg = load_config(
        "mf", ["train.epochs=4", "train.eval_every=3", "train.max_minutes=1"], dataset=str(tiny_p5)
    )
    metrics = train_run(cfg, tmp_path / "run", progress=False)
    p = metrics["protocol"]
    assert p["training_stop"].startswith("time budget: train.max_minutes=1 reached after epoch 1 of 4")
    assert "training stopped early (time budget" in p["checkpoint_selection"]
    assert metrics["training"]["best_epoch"] == 1


def test_built_in_recipes_bound_their_work_by_epochs_not_minutes():
    from genrec.config import list_recipes, recipe_dict

    timed = [name for name in list_recipes() if recipe_dict(name).get("train", {}).get("max_minutes")]
    assert timed == []
    tiger = load_config("tiger-amazon-beauty")
    assert tiger.train.epochs == 14 and tiger.train.max_minutes is None
    assert load_config("textrec-amazon-beauty").train.epochs == 57


# ---- 7. one line per epoch when nobody watches a terminal ---------------------------------------------------


def test_training_prints_one_line_per_epoch_to_a_pipe(tiny_p5, tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "genrec",
            "train",
            "mf",
            "--dataset",
            str(tiny_p5),
            "--out",
            str(tmp_path / "r"),
        ]
        + ["--set", "train.epochs=3", "--set", "train.eval_every=2", "--examples", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "loss " in lines[0] and "valid ndcg@10 -" in lines[0] and lines[0].endswith("s")
    assert "valid ndcg@10 0." in lines[1] and "(best " in lines[1]


# ---- 5. command-line mistakes: one line or click's usage message, exit status 2, nothing half-written ---------


def genrec_cli(*args, cwd=None):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "genrec", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_version_and_usage_errors_without_tracebacks():
    import genrec

    r = genrec_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"genrec {genrec.__version__}"
    for args, needle in (
        (["nonsense"], "No such command 'nonsense'"),
        (["train"], "Missing argument"),
        (["recommend", "x", "-k", "0"], "Invalid value for '-k'"),
    ):
        r = genrec_cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("Usage:") and needle in r.stderr and len(r.stderr.splitlines()) <= 5


@pytest.mark.parametrize(
    "sets,expected",
    [
        (["train.epochz=1"], "config train.epochz: unknown key (did you mean train.epochs?)"),
        (["epochs=1"], "config epochs: unknown key (did you mean train.epochs?)"),
        (["trian.lr=1"], "config trian.lr: unknown key (did you mean train.lr?)"),
        (["model.dimm=8"], "config model.dimm: unknown key (did you mean model.dim?)"),
    ],
)
def test_unknown_set_keys_name_the_nearest_valid_one(sets, expected):
    from genrec.config import load_config
    from genrec.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config("mf", sets)
    assert str(err.value) == expected


def test_invalid_yaml_reports_its_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  name: mf\ntrain:\n  epochs: 3\n   lr: 2\n")
    r = genrec_cli("train", str(recipe), "--out", str(tmp_path / "never"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {recipe}: invalid YAML at line 5, column 6: mapping values are not allowed here"
    ]
    assert not (tmp_path / "never").exists()


def test_download_without_a_network_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    import sys
    import urllib.error
    import urllib.request

    from genrec import cli
    from genrec.data import registry

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(registry, "locate", lambda name, data_dir=None: None)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data, out = tmp_path / "data", tmp_path / "run"
    argv = ["genrec", "train", "popularity", "--dataset", "ml-1m", "--set", "data.download=true"]
    monkeypatch.setattr(sys, "argv", [*argv, "--set", f"data.data_dir={data}", "--out", str(out)])
    with pytest.raises(SystemExit) as code:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert code.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: cannot download ml-1m from https://files.grouplens.org/")
    assert "Temporary failure in name resolution" in err[0]
    assert not data.exists() and not out.exists()


def test_a_diverged_training_run_is_one_line_and_leaves_nothing_behind(tiny_p5, tmp_path):
    out = tmp_path / "run"
    sets = ["train.lr=1e12", "train.epochs=2", "model.dim=16", "train.batch_size=4", "train.grad_clip=null"]
    r = genrec_cli(
        "train", "sasrec", "--dataset", str(tiny_p5), "--out", str(out), *[f"--set={s}" for s in sets]
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert lines[-1].startswith("error: training diverged: loss nan at epoch 1, step ")
    assert "no checkpoint was written" in lines[-1] and not out.exists()


# ---- 6. the printed table shows the K values that were computed ------------------------------------------------


def test_metrics_table_shows_the_computed_ks(tmp_path):
    data = tmp_path / "inter.csv"
    data.write_text(ISSUE_CSV)
    r = genrec_cli(
        "train",
        "popularity",
        "--dataset",
        str(data),
        "--set",
        "eval.ks=[1,5,10]",
        "--out",
        str(tmp_path / "r"),
    )
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if "split" in line)
    columns = [c.strip() for c in header.strip("┃│ ").split("┃")]
    assert columns == ["split", "R@1", "N@1", "R@5", "N@5", "R@10", "N@10", "MRR", "Cov@10", "users"]
    assert "nan" not in r.stdout
    test_row = next(line for line in r.stdout.splitlines() if line.strip("│ ").startswith("test "))
    assert test_row.split("│")[2:9] == [" 0.0000 "] * 7  # every test target repeats a history item


# ---- 8. /docs works offline -------------------------------------------------------------------------------------


def test_docs_pages_load_their_assets_from_the_server_itself(tmp_path):
    """Every script and stylesheet of /docs and /redoc is a path on this server (no CDN), and each is served."""
    import re

    from fastapi.testclient import TestClient

    from genrec.serve import create_app

    data = tmp_path / "inter.csv"
    data.write_text(ISSUE_CSV)
    train_run(load_config("popularity", [], dataset=str(data)), tmp_path / "run", progress=False)
    client = TestClient(create_app(tmp_path / "run"))
    for page, marker in (("/docs", "SwaggerUIBundle"), ("/redoc", "Redoc")):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
        assert assets and all(a.startswith("/") for a in assets), assets
        assert "cdn." not in html and "fonts.googleapis" not in html
        bodies = [client.get(a) for a in assets]
        assert all(b.status_code == 200 and len(b.content) > 10_000 for b in bodies)
        assert any(marker in b.text for b in bodies)
    assert "SwaggerUIBundle(" in client.get("/docs").text  # the page starts Swagger UI with /openapi.json
    assert "/recommend" in client.get("/openapi.json").json()["paths"]


# ---- property: every retrieval metric against brute force on random tiny data ------------------------------


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


@pytest.mark.parametrize("seed", range(25))
def test_beam_search_returns_min_k_allowed_items_on_random_tries(seed):
    """Random codes (2 levels of 3 + separation), random per-user exclusions, random model: the list holds
    min(k, items left) distinct allowed items; with a beam as wide as the catalogue it is the exact top-k of the
    allowed items by total log-probability (brute force over every item)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 19))
    pairs = rng.permutation(np.array([(a, b) for a in range(3) for b in range(3)] * 2))[:n]
    sep = np.array([sum((pairs[:i] == pairs[i]).all(1)) for i in range(n)])
    codes, sizes = np.column_stack([pairs, sep]), [3, 3, 2]
    trie = CodeTrie(codes, sizes)
    batch = 3
    tables = [torch.log_softmax(torch.from_numpy(rng.normal(size=(batch, s)) * 3).float(), -1) for s in sizes]

    def step(prefix, level):
        return tables[level][:, None, :].expand(-1, prefix.shape[1], -1)

    exclude = torch.from_numpy(rng.integers(0, n + 1, (batch, int(rng.integers(1, n + 2)))))
    total = [
        {i + 1: sum(float(tables[d][u, codes[i, d]]) for d in range(3)) for i in range(n)}
        for u in range(batch)
    ]
    for k in sorted({1, 2, n // 2 + 1, n, n + 2}):
        for beam in (1, n):
            items, scores, _ = constrained_beam_search(step, trie, batch, beam, k, exclude)
            for u in range(batch):
                allowed = [i for i in range(1, n + 1) if i not in exclude[u].tolist()]
                got = [i for i in items[u].tolist() if i > 0]
                assert len(got) == min(k, len(allowed)) and len(set(got)) == len(got), (seed, k, beam, u)
                assert set(got) <= set(allowed) and items[u, len(got) :].eq(0).all()
                if beam >= n:
                    best = sorted(allowed, key=lambda i: -total[u][i])[:k]
                    assert [round(total[u][i], 4) for i in got] == [round(total[u][i], 4) for i in best]
