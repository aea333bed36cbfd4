"""Generative ranking: metrics, the leak-free feedback split, M-FALCON equivalence, training = inference paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from genrec.config import RankDataConfig
from genrec.config import load_config as load_rank_config
from genrec.data.feedback import FeedbackData
from genrec.errors import ConfigError, DataError
from genrec.eval.ranking import auc, gauc, logloss, ndcg_at, ranking_metrics
from genrec.models.ranking import RankBatch
from genrec.models.ranking.mfalcon import make_batch, score_batch, score_candidates, score_one_at_a_time
from genrec.registry import get as model_class
from genrec.runs.ranking import build_ranker, prepare_feedback

GENERATIVE = ["hstu_ranker", "genrank", "mtgr"]


@pytest.fixture(scope="module")
def data() -> FeedbackData:
    return prepare_feedback(RankDataConfig(dataset="ml-100k"))[0]


def tiny(name: str, data: FeedbackData, **kw):
    torch.manual_seed(0)
    extra = {"layers": 2, "heads": 2} if name in GENERATIVE else {}
    cfg = model_class(name).config_class(name=name, dim=16, max_len=12, dropout=0.0, **extra, **kw)
    model = build_ranker(cfg, data)
    # Non-zero biases so that positions and times matter in the equivalence checks.
    if hasattr(model, "bias"):
        torch.nn.init.normal_(model.bias.pos, std=0.3)
        torch.nn.init.normal_(model.bias.time, std=0.3)
    return model.eval()


def test_metrics_known_values():
    y = np.array([0, 0, 1, 1])
    assert auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auc(y, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert auc(y, np.zeros(4)) == 0.5  # ties count half
    assert math.isnan(auc(np.ones(3), np.arange(3.0)))
    assert logloss(y, np.zeros(4)) == pytest.approx(math.log(2))
    users = np.array([1, 1, 1, 1, 2, 2])
    labels = np.array([0, 1, 0, 1, 1, 1])  # user 2 has only likes: no AUC, left out of GAUC
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.0, 0.5])
    g, n = gauc(users, labels, scores)
    assert (g, n) == (1.0, 1)
    assert ndcg_at(users, labels, scores, 2) == 1.0
    assert ndcg_at(np.zeros(2), np.array([0, 1]), np.zeros(2), None) == pytest.approx(1 / math.log2(3))
    m = ranking_metrics(users, labels, scores, (2,))
    assert m["gauc_users"] == 1 and m["impressions"] == 6 and m["ndcg@2"] == 1.0


def test_feedback_split_has_no_leakage(data: FeedbackData):
    cut_v, cut_t = data.details["valid_cutoff"], data.details["test_cutoff"]
    seq = data.sequences
    assert (data.train.times < cut_v).all()
    assert ((data.valid.times >= cut_v) & (data.valid.times < cut_t)).all()
    assert (data.test.times >= cut_t).all()
    for imps, cut in ((data.valid, cut_v), (data.test, cut_t)):
        start = seq.offsets[imps.users]
        assert (imps.hist_end > start).all()  # cold users are not evaluated
        last_hist = seq.timestamps[imps.hist_end - 1]
        assert (last_hist < cut).all()  # the history ends before the cut-off
        assert (imps.hist_end <= seq.offsets[imps.users + 1]).all()
    # Labels follow the rating threshold.
    assert set(np.unique(data.test.labels)) <= {0.0, 1.0}
    assert np.array_equal(data.test.labels, (data.test.actions >= 4).astype(np.float32))


def test_candidate_time_last_event(data: FeedbackData):
    assert np.array_equal(data.test.cand_times, data.test.times)  # the default: the impression's own time
    later = prepare_feedback(RankDataConfig(dataset="ml-100k", candidate_time="last_event"))[0]
    assert np.array_equal(later.test.times, data.test.times)  # the split does not move
    for imps in (later.valid, later.test):
        assert np.array_equal(imps.cand_times, later.sequences.timestamps[imps.hist_end - 1])
    assert (later.test.cand_times < later.details["test_cutoff"]).all()
    # Only models that read time score differently; DIN does not read it.
    part = np.arange(300)
    for name, changes in (("din", False), ("genrank", True)):
        model = tiny(name, data)
        before = model.predict(data, data.test.take(part))
        after = model.predict(later, later.test.take(part))
        assert (np.abs(before - after).max() > 1e-4) == changes


def test_cross_features_use_only_the_history(data: FeedbackData):
    u = int(data.valid.users[0])
    start = data.sequences.offsets[u]
    end = int(data.valid.hist_end[0])
    item = np.array([data.valid.items[0]])
    f = data.cross_features(np.array([u]), item, np.array([end]))[0]
    n = end - start
    likes = data.labels[start:end].sum()
    assert f[1] == pytest.approx((likes + 1) / (n + 2))
    # Changing a label after the history does not change the features.
    saved = data._cum_like.copy()
    data._cum_like[end + 1 :] += 5
    try:
        assert np.allclose(data.cross_features(np.array([u]), item, np.array([end]))[0], f)
    finally:
        data._cum_like = saved


@pytest.mark.parametrize("name", GENERATIVE)
def test_mfalcon_equals_one_at_a_time(name: str, data: FeedbackData):
    model = tiny(name, data, micro_batch=5)  # 5 does not divide the candidate count: a partial micro-batch
    _, batch = next(model.eval_batches(data, data.test, 3))
    with torch.no_grad():
        fast = score_batch(model, batch, micro_batch=5)
        slow = score_one_at_a_time(model, batch)
    assert fast.shape == batch.items.shape
    assert (fast - slow).abs().max().item() <= 1e-5
    # Not trivially equal: candidates do read the history.
    other = RankBatch(**{**batch.__dict__, "hist_items": torch.roll(batch.hist_items, 1, 0)})
    with torch.no_grad():
        assert (score_batch(model, other) - fast).abs().max().item() > 1e-4


def _window_batch(data: FeedbackData, user: int, w: int) -> RankBatch:
    s = int(data.sequences.offsets[user])
    idx = np.arange(s, s + w)
    items = torch.from_numpy(data.sequences.items[idx])[None]
    times = torch.from_numpy(data.sequences.timestamps[idx])[None]
    return RankBatch(
        users=torch.tensor([user]),
        hist_items=items,
        hist_actions=torch.from_numpy(data.actions[idx])[None],
        hist_times=times,
        items=items,
        times=times,
        labels=torch.from_numpy(data.labels[idx])[None],
        weights=torch.ones(1, w),
        cross=torch.from_numpy(data.cross_features(np.full(w, user), data.sequences.items[idx], idx))[None],
        causal=True,
    )


def _event_as_candidate(data: FeedbackData, user: int, t: int, cross: np.ndarray | None = None) -> RankBatch:
    """The user's event t as the one candidate of an evaluation batch whose history is the t events before it."""
    s = int(data.sequences.offsets[user])
    return make_batch(
        data.sequences.items[s : s + t],
        data.actions[s : s + t],
        data.sequences.items[s + t : s + t + 1],
        data.sequences.timestamps[s : s + t],
        data.sequences.timestamps[s + t : s + t + 1],
        user=user,
        cross=cross,
    )


@pytest.mark.parametrize("name", ["din", *GENERATIVE])
def test_training_logits_equal_inference_scores(name: str, data: FeedbackData):
    """The logit a training window gives event t is the score of candidate t after the history before it."""
    model = tiny(name, data, cross_features=True)
    w = model.cfg.max_len
    user = int(np.flatnonzero(data.sequences.lengths() > w)[0])
    batch = _window_batch(data, user, w)
    with torch.no_grad():
        train_logits = model.logits(batch)[0]
        for t in (1, w // 2, w - 1):
            one = _event_as_candidate(data, user, t, cross=batch.cross[0, t : t + 1].numpy())
            assert model.logits(one)[0, 0].item() == pytest.approx(train_logits[t].item(), abs=1e-5)


def test_score_candidates_api(data: FeedbackData):
    model = tiny("hstu_ranker", data)
    history = data.sequences.items[:30]
    scores = score_candidates(model, history, [1, 2, 3, 4], actions=data.actions[:30])
    assert scores.shape == (4,) and np.isfinite(scores).all()
    again = score_candidates(model, history, [3], actions=data.actions[:30])
    assert again[0] == pytest.approx(scores[2], abs=1e-5)


def test_training_reduces_loss_and_run_dir(tmp_path, data: FeedbackData):
    from genrec.eval.ranking import evaluate_ranker
    from genrec.runs import load_run
    from genrec.runs import train_run as rank_train

    cfg = load_rank_config(
        "hstu_ranker",
        ["model.dim=16", "model.max_len=10", "model.layers=1", "train.epochs=2", "train.batch_size=256"],
    )
    metrics = rank_train(cfg, tmp_path / "run", progress=False)
    hist = metrics["training"]["history"]
    assert hist[-1]["loss"] < hist[0]["loss"] + 1e-6
    assert 0.0 <= metrics["test"]["auc"] <= 1.0 and metrics["test"]["impressions"] == len(data.test)
    assert metrics["protocol"]["split"]["label"] == "like = rating >= 4 on a 1 to 5 scale (from the data)"
    run = load_run(tmp_path / "run")
    again = evaluate_ranker(run.model, run.feedback, run.feedback.test)
    assert again["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-6)


def test_rank_config_errors():
    assert load_rank_config("sasrec").task == "retrieval" and load_rank_config("din").task == "ranking"
    with pytest.raises(ConfigError, match="is a ranking model"):
        load_rank_config("din", ["task=retrieval"])
    with pytest.raises(ConfigError, match="model.dimm"):
        load_rank_config("din", ["model.dimm=3"])


def test_ml1m_baseline_and_hstu_ranker_read_the_same_input():
    """The DIN vs HSTU ranker comparison on ML-1M is fair only with the same history and training windows."""
    din, hstu = load_rank_config("din-ml-1m"), load_rank_config("hstu_ranker-ml-1m")
    assert din.model.max_len == hstu.model.max_len == 100
    assert din.model.stride == hstu.model.stride
    assert din.train.batch_size == hstu.train.batch_size and din.train.epochs == hstu.train.epochs
    assert din.data == hstu.data


def test_cascade_matches_retrieval_protocol(tmp_path):
    """Retrieval-alone numbers of the cascade equal the retrieval run's own test Recall@10 on the same split."""
    from genrec.config import load_config
    from genrec.experiments.cascade import cascade
    from genrec.runs import train_run
    from genrec.runs import train_run as rank_train

    retrieval = load_config(
        "popularity", ["data.split=temporal", "eval.ks=[10]", "eval.select_metric=ndcg@10"], "ml-100k"
    )
    r_metrics = train_run(retrieval, tmp_path / "retrieval", progress=False)
    ranker = load_rank_config("din", ["model.dim=8", "model.max_len=8", "train.epochs=1"])
    rank_train(ranker, tmp_path / "ranker", progress=False)
    res = cascade(tmp_path / "retrieval", tmp_path / "ranker", k_retrieve=50, k_final=10)
    assert res["retrieval"]["users"] == r_metrics["test"]["examples"]
    assert res["retrieval"]["hr@10"] == pytest.approx(r_metrics["test"]["recall@10"], abs=1e-4)
    assert res["cascade"]["users"] == res["retrieval"]["users"] == res["blend"]["users"]
    assert 0.0 <= res["cascade"]["liked_precision@10"] <= 1.0
    chosen = res["valid_by_weight"][str(res["blend_weight"])]
    assert chosen == max(res["valid_by_weight"].values())


def test_cascade_blend_orders_between_ranker_and_retrieval():
    """Weight 0 orders by the ranker alone, a huge weight by retrieval alone; unknown items always go last."""
    from genrec.experiments.cascade import _blend_order, _UserLists

    u = _UserLists(
        raw_ids=np.array([10, 20, 30, 40]),
        retrieval_log_prob=np.log([0.4, 0.3, 0.2, 0.1]),
        like_log_prob=np.array([-2.0, -np.inf, -0.1, -1.0]),  # item 20 unknown to the ranker
        target=30,
        liked=set(),
    )
    assert _blend_order(0.0)(u).tolist() == [30, 40, 10, 20]
    assert _blend_order(1e6)(u).tolist() == [10, 30, 40, 20]
    # w = 1: 10 -> -2.92, 30 -> -1.71, 40 -> -3.30
    assert _blend_order(1.0)(u).tolist() == [30, 10, 40, 20]


@pytest.mark.parametrize("command", ["train", "rank-train"])
def test_train_and_its_rank_train_alias_train_a_ranking_recipe(command, tmp_path, tiny_ratings):
    """One task stack: `genrec train` trains a ranker from a ranking recipe (a YAML extending one too), and
    `rank-train` is the same command (on ML-100K's 40 smallest users)."""
    import subprocess
    import sys

    recipe = tmp_path / "my-ranker.yaml"
    recipe.write_text(
        f"base: din\ndata:\n  data_dir: {tiny_ratings}\nmodel:\n  dim: 8\n  max_len: 8\ntrain:\n  epochs: 1\n"
    )
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "genrec", command, str(recipe), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "GAUC" in r.stdout and (out / "metrics.json").exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["task"] == "ranking"


def test_a_pruned_ranker_setting_loads_when_off_and_is_refused_when_on():
    """`model.text_interest` (text as user-candidate relevance) was removed after it measured no gain (docs/log.md):
    a stored config that had it off reads as before, one that had it on is refused in one line."""
    from genrec.config import build_config, migrate

    raw = load_rank_config("din-text-ml-1m").model_dump(mode="json")
    raw["model"] |= {"text_interest": False, "text_interest_max": True}
    assert build_config(migrate(raw)) == load_rank_config("din-text-ml-1m")
    raw["model"]["text_interest"] = True
    with pytest.raises(ConfigError, match="model.text_interest=True, which genrec no longer has"):
        migrate(raw)


def _feedback_log(tmp_path, rating, n_users=30, events=12, column="rating"):
    """A timed CSV of explicit feedback: user u's event k at time 1000 u + 50000 k, rated rating(u, k)."""
    path = tmp_path / f"fb-{column}.csv"
    rows = [
        f"{u},{(u * 7 + k) % 40 + 1},{1000 * u + 50_000 * k},{rating(u, k)}"
        for u in range(n_users)
        for k in range(events)
    ]
    path.write_text(f"user_id,item_id,timestamp,{column}\n" + "\n".join(rows) + "\n")
    return str(path)


@pytest.mark.parametrize(
    "values,scale,threshold",
    [
        ([0, 1], (0.0, 1.0), 1.0),  # binary labels: 1 is a like
        ([-1, 1], (-1.0, 1.0), 1.0),  # signed
        ([1, 2, 3, 4, 5], (1.0, 5.0), 4.0),
        (list(range(1, 11)), (1.0, 10.0), 8.0),  # 1-10: read, not clipped to 5
    ],
)
def test_feedback_scale_is_read_from_the_data(tmp_path, values, scale, threshold):
    path = _feedback_log(tmp_path, lambda u, k: values[(u + k) % len(values)], column="label")
    data, _, _ = prepare_feedback(RankDataConfig(dataset=path))
    assert data.details["scale"] == {"low": scale[0], "high": scale[1], "like_threshold": threshold}
    ratings = data.sequences.ratings
    assert np.array_equal(data.labels, (ratings >= threshold).astype(np.float32))
    assert np.array_equal(data.actions >= 4, ratings >= threshold)  # models read actions >= 4 as liked
    # Ordered, and never clipped: the highest rating and the lowest keep distinct actions.
    order = np.argsort(ratings, kind="stable")
    assert (np.diff(data.actions[order]) >= 0).all()
    assert data.actions[ratings == scale[1]].min() == 5 and data.actions[ratings == scale[0]].max() == 1
    assert 0 < data.train.labels.mean() < 1


def test_feedback_scale_and_threshold_from_config(tmp_path):
    path = _feedback_log(tmp_path, lambda u, k: 1 + (u + k) % 5)
    data, _, _ = prepare_feedback(RankDataConfig(dataset=path, rating_scale=(0, 10), like_threshold=3))
    assert data.details["scale"] == {"low": 0.0, "high": 10.0, "like_threshold": 3.0}
    assert np.array_equal(data.labels, (data.sequences.ratings >= 3).astype(np.float32))
    with pytest.raises(DataError, match=r"rating 5 lies outside data.rating_scale \[1, 4\]"):
        prepare_feedback(RankDataConfig(dataset=path, rating_scale=(1, 4)))
    with pytest.raises(ValueError):
        RankDataConfig(rating_scale=(5, 1))


def test_ranker_refuses_labels_of_one_class(tmp_path):
    """The last two events of every user (all test impressions, the last 10% of times) rated 5: every test
    impression is a like; the error names the key to change."""
    path = _feedback_log(tmp_path, lambda u, k: 5 if k >= 10 else 1 + (u + k) % 5)
    with pytest.raises(
        DataError, match=r"every test impression is one of the likes.*set data.like_threshold"
    ):
        prepare_feedback(RankDataConfig(dataset=path))
    with pytest.raises(DataError, match="data.like_threshold=9 makes every rating"):
        prepare_feedback(RankDataConfig(dataset=path, like_threshold=9))


def test_ranking_docs_name_the_like_threshold():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "ranking.md").read_text()
    assert "data.like_threshold" in doc and "data.rating_scale" in doc
