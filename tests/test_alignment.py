"""Preference alignment: pair sources, DPO on sessions, list metrics, the reward model and `genrec align`."""

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from genrec.alignment.pairs import (
    histories,
    preference_batches,
    rating_pairs,
    reward_beam_pairs,
    self_play_pairs,
)
from genrec.alignment.reward import RewardModel
from genrec.config import (
    DataConfig,
    PreferenceDataConfig,
    dump_config,
    list_recipes,
    load_config,
    recipe_dict,
)
from genrec.data.batching import HistoryBatch
from genrec.data.schema import Sequences
from genrec.data.split import Csr, EvalSet, Split
from genrec.errors import ConfigError
from genrec.eval.lists import ListAccumulator, ListContext, future_ratings, popular_items
from genrec.models import build_model
from genrec.objectives import DPO, SDPO, PreferenceBatch
from genrec.runs import evaluate_run, load_run, train_run
from genrec.runs.preference import load_reward_model
from genrec.runs.retrieval import make_split, prepare_dataset
from genrec.training.trainer import training_step

TINY = [
    "model.dim=8",
    "model.max_len=10",
    "model.layers=1",
    "train.epochs=1",
    "data.split=temporal",
    "train.threads=1",
]


@pytest.fixture(scope="module")
def split():
    cfg = DataConfig(dataset="ml-100k", split="temporal")
    return make_split(prepare_dataset(cfg), cfg)


@pytest.fixture(scope="module")
def sasrec_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sup") / "run"
    train_run(load_config("sasrec", TINY, "ml-100k"), out, progress=False)
    return out


@pytest.fixture(scope="module")
def ranker_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rank") / "run"
    overrides = ["model.max_len=8", "model.stride=8", "model.dim=8", "train.epochs=1", "train.threads=1"]
    overrides += ["data.valid_quantile=0.97", "data.test_quantile=0.98"]
    train_run(load_config("din", overrides, "ml-100k"), out, progress=False)
    return out


def genrec_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "genrec", *args], capture_output=True, text=True, timeout=300
    )


def _train_events(split, u):
    seq = split.sequences
    n = split.train.lengths()[u]
    sl = slice(seq.offsets[u], seq.offsets[u] + n)
    return seq.items[sl], seq.ratings[sl]


def test_rating_pairs_respect_the_ratings(split):
    cfg = PreferenceDataConfig(negatives=3, anchors_per_user=2)
    pairs = rating_pairs(split, cfg, np.random.default_rng(0))
    assert len(pairs) > 500 and pairs.rejected.shape == (len(pairs), 3)
    from_dislikes = 0
    for p in range(len(pairs)):
        u, t, c = pairs.users[p], pairs.hist_len[p], pairs.chosen[p]
        items, ratings = _train_events(split, u)
        assert items[t] == c and ratings[t] >= 4  # the chosen item is the next event, and liked
        liked = set(items[ratings >= 4].tolist())
        rej = pairs.rejected[p].tolist()
        assert c not in rej and not liked & set(rej) and not set(items[:t].tolist()) & set(rej)
        assert len(set(rej)) == 3 and min(rej) >= 1 and max(rej) <= split.n_items
        low = set(items[t + 1 :][ratings[t + 1 :] <= 2].tolist())
        # every rejected item is disliked later in training, or never seen in training
        assert all(r in low or r not in set(items.tolist()) for r in rej)
        from_dislikes += bool(low & set(rej))
    assert from_dislikes > 0


def test_self_play_rejected_are_the_models_own_unliked_top_items(split):
    torch.manual_seed(0)
    model = build_model(
        load_config("sasrec", ["model.dim=8", "model.max_len=10"]).model, split.n_items, 1
    ).eval()
    cfg = PreferenceDataConfig(pairs="self-play", negatives=2, anchors_per_user=1, self_play_top=10)
    pairs = self_play_pairs(split, cfg, model, np.random.default_rng(0))
    batch = histories(split, pairs.users[:50], pairs.hist_len[:50], model.max_history)
    top, _ = model.recommend(batch, 10, exclude=batch.items)
    for p in range(50):
        items, ratings = _train_events(split, pairs.users[p])
        liked = set(items[ratings >= 4].tolist())
        rej = set(pairs.rejected[p].tolist())
        assert pairs.chosen[p] not in rej and not rej & liked
        assert (
            rej <= set(top[p].tolist()) - liked - {int(pairs.chosen[p])}
            or len(set(top[p].tolist()) - liked) < 3
        )


class SessionModel(torch.nn.Module):
    """log p of a session = sum of a table's log-softmax over its items, whatever the history; generates
    fixed candidate sessions."""

    capabilities = frozenset({"session_log_likelihood", "generate_sessions"})
    max_history = None

    def __init__(self, logits):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(logits))
        self.cfg = type("Cfg", (), {"name": "session_test"})

    def can(self, capability):
        return capability in self.capabilities

    def session_log_likelihood(self, batch, sessions):
        return torch.log_softmax(self.table, 0)[sessions].sum(-1)

    def generate_sessions(self, batch, n_beams, n):
        b = len(batch.items)
        sessions = torch.arange(1, n_beams * n + 1).reshape(n_beams, n)
        return sessions.expand(b, -1, -1).clone(), torch.zeros(b, n_beams)


def test_dpo_on_sessions_equals_a_hand_computation():
    model = SessionModel([0.0, 1.0, 2.0, 0.5, -1.0])
    reference = SessionModel([0.0, 0.0, 0.0, 0.0, 0.0])
    batch = PreferenceBatch(
        HistoryBatch(torch.tensor([[1]])), torch.tensor([[1, 2]]), torch.tensor([[[3, 4], [2, 4]]])
    )
    lp = torch.log_softmax(torch.tensor([0.0, 1.0, 2.0, 0.5, -1.0]), 0).tolist()
    lr = math.log(1 / 5)
    m_c = lp[1] + lp[2] - 2 * lr
    m_r = [lp[3] + lp[4] - 2 * lr, lp[2] + lp[4] - 2 * lr]
    beta = 0.5
    dpo = sum(-math.log(1 / (1 + math.exp(-beta * (m_c - m)))) for m in m_r) / 2
    assert DPO(beta)(model, batch, reference).item() == pytest.approx(dpo, rel=1e-5)
    inner = -math.log(sum(math.exp(beta * (m - m_c)) for m in m_r))
    assert SDPO(beta)(model, batch, reference).item() == pytest.approx(
        -math.log(1 / (1 + math.exp(-inner))), rel=1e-5
    )
    sft = DPO(beta, sft_weight=2.0)(model, batch, reference).item()
    assert sft == pytest.approx(dpo - 2.0 * (lp[1] + lp[2]), rel=1e-5)
    with pytest.raises(ValueError, match="sessions"):
        PreferenceBatch(HistoryBatch(torch.tensor([[1]])), torch.tensor([[1, 2]]), torch.tensor([[3, 4]]))
    items = PreferenceBatch(HistoryBatch(torch.tensor([[1]])), torch.tensor([1]), torch.tensor([[3]]))
    with pytest.raises(ConfigError, match="log_likelihood"):
        DPO()(model, items, reference)


def test_reward_beams_pick_best_and_worst_sessions(split):
    cfg = PreferenceDataConfig(
        pairs="reward-beams", beams=4, session_len=3, negatives=2, users_per_round=20, reward_run="unused"
    )

    def reward(users, hist_len, lists):  # higher item ids are better
        return lists.float().mean(-1)

    pairs = reward_beam_pairs(split, cfg, SessionModel([0.0] * 20), reward, np.random.default_rng(0))
    assert pairs.chosen.shape == (20, 3) and pairs.rejected.shape == (20, 2, 3)
    assert (pairs.chosen == [10, 11, 12]).all() and (pairs.rejected[:, 0] == [4, 5, 6]).all()
    assert (pairs.rejected[:, 1] == [1, 2, 3]).all()
    assert (pairs.hist_len == split.train.lengths()[pairs.users]).all()


def _hand_split():
    # user 0: 6 events; user 1: 4 events. Ratings per event.
    items = np.array([1, 2, 3, 4, 5, 6, 2, 3, 4, 5])
    ratings = np.array([5, 4, 5, 1, 4, 2, 3, 5, 2, 4], dtype=np.float32)
    seq = Sequences(np.array([10, 11]), np.arange(100, 108), np.array([0, 6, 10]), items, None, ratings)
    train = Csr(np.array([0, 2, 3]), np.array([1, 2, 2]))
    valid = EvalSet(np.array([0, 1]), Csr(np.array([0, 2, 3]), np.array([1, 2, 2])), np.array([3, 3]))
    test = EvalSet(np.array([0]), Csr(np.array([0, 4]), np.array([1, 2, 3, 4])), np.array([5]))
    return Split("temporal", seq, train, valid, test, {})


def test_list_metrics_on_a_hand_made_example():
    split = _hand_split()
    fut = future_ratings(split, "valid")
    # user 0's validation period stops where its test history ends (event 4); user 1 has no test example
    assert fut.row(0)[0].tolist() == [3, 4] and fut.row(1)[0].tolist() == [3, 4, 5]
    assert future_ratings(split, "test").row(0)[0].tolist() == [5, 6]
    genres = [
        frozenset(),
        frozenset("a"),
        frozenset("a"),
        frozenset("ab"),
        frozenset("b"),
        frozenset(),
        frozenset("c"),
        frozenset(),
        frozenset(),
    ]
    popular = popular_items(np.array([3, 3, 3, 4, 4, 1]), 8, share=0.2)  # ceil(1.6) = 2 items: 3 and 4
    assert popular.nonzero()[0].tolist() == [3, 4]

    def reward(users, hist_len, lists):
        return torch.full(lists.shape[:2], 0.25)

    acc = ListAccumulator(ListContext(genres, popular, reward), fut, k=3)
    lists = torch.tensor([[3, 4, 7], [5, 6, 0]])
    acc.add(np.array([0, 1]), np.array([0, 1]), np.array([2, 1]), lists)
    m = acc.result()
    # rated top items: user 0 -> 3 (5), 4 (1); user 1 -> 5 (4): 3 rated, 2 liked, 1 disliked
    assert m["liked_precision@3"] == pytest.approx(2 / 3) and m["disliked_share@3"] == pytest.approx(1 / 3)
    assert m["rated@3"] == pytest.approx(1.5)
    # list 0: genres {a,b}, {b} -> items 3, 4 (7 has none): distance 1 - 1/2; list 1: 5 only -> skipped
    assert m["ild@3"] == pytest.approx(0.5)
    assert m["popular_share@3"] == pytest.approx(2 / 5) and m["reward@3"] == pytest.approx(0.25)


# `genrec align` flags of a small S-DPO alignment (flat `--set` keys are the old align section's).
ALIGN = ["--objective", "sdpo", "--negatives", "2", "--beta", "0.5", "--set", "anchors_per_user=1"]
ALIGN += ["--set", "threads=1", "--no-progress"]


def test_align_end_to_end_writes_a_loadable_run(sasrec_run, tmp_path):
    overrides = [f"init_from={sasrec_run}", "train.objective.name=sdpo", "train.objective.beta=0.5"]
    overrides += ["data.negatives=2", "data.anchors_per_user=1", "train.threads=1", "train.seed=0"]
    cfg = load_config("preference", overrides)
    reference = load_run(sasrec_run)
    # An ordinary run config: the model, data and eval sections of the run it starts from.
    assert cfg.task == "preference" and cfg.model == reference.cfg.model and cfg.eval == reference.cfg.eval
    assert cfg.data.split == "temporal" and cfg.data.pairs == "ratings" and cfg.train.objective.name == "sdpo"
    out = tmp_path / "aligned"
    metrics = train_run(cfg, out, progress=False)
    proto = metrics["protocol"]["alignment"]
    assert proto["reference_run"] == str(sasrec_run.resolve()) and proto["pair_source"] == "ratings"
    assert proto["objective"] == "sdpo" and proto["beta"] == 0.5 and proto["seed"] == 0
    assert (
        metrics["protocol"]["task"] == "preference"
        and "valid_liked_precision@10" in metrics["training"]["history"][0]
    )
    assert {"liked_precision@10", "disliked_share@10", "ild@10", "popular_share@10"} <= set(metrics["test"])
    assert {"ndcg@10", "liked_precision@10"} <= set(metrics["training"]["reference_valid"])
    run = load_run(out)
    assert run.task.name == "preference" and run.task.can("recommend") and not (out / "align.yaml").exists()
    assert any(
        not torch.equal(a, b)
        for a, b in zip(run.model.state_dict().values(), reference.model.state_dict().values())
    )
    assert json.loads((out / "metrics.json").read_text())["test"] == metrics["test"]
    assert len(run.recommend(user=run.users["user_id"][0], k=5)) == 5
    again = evaluate_run(run, progress=False)  # `genrec evaluate` of the aligned run
    assert again["test"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"])
    assert again["protocol"]["alignment"] == metrics["protocol"]["alignment"]
    with pytest.raises(ConfigError, match="already holds a finished run"):
        train_run(cfg, out, progress=False)


def test_align_cli_and_reward_beams(sasrec_run, ranker_run, tmp_path):
    out = tmp_path / "beams"
    args = ["--pairs", "reward-beams", "--objective", "dpo", "--beta", "0.2", "--reward-run", str(ranker_run)]
    args += ["--rounds", "2", "--set", "users_per_round=50", "--set", "threads=1", "--out", str(out)]
    r = genrec_cli("align", str(sasrec_run), *args, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "aligned in" in r.stdout and "reward-beams pairs, dpo, beta 0.2" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["alignment"]["rounds"] == 2 and "reward@10" in metrics["test"]
    history = metrics["training"]["history"]
    assert [h["epoch"] for h in history] == [1, 2] and "valid_reward@10" in history[0]
    assert "reward@10" in metrics["training"]["reference_valid"]
    r = genrec_cli("align", str(sasrec_run), "--pairs", "reward-beams", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "pairs reward-beams needs a reward model: --reward-run" in r.stderr
    assert not (tmp_path / "x").exists()


def test_align_resume_continues_a_killed_alignment(sasrec_run, tmp_path, monkeypatch):
    """An alignment killed right after its first epoch's checkpoint ends, with `genrec align ... --resume`, in the
    run an uninterrupted alignment writes."""
    from genrec.cli import app
    from genrec.training.trainer import Trainer

    args = [str(sasrec_run), *ALIGN, "--rounds", "3"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = genrec_cli("align", *args, "--out", str(whole))
    assert r.returncode == 0, r.stderr
    save = Trainer._save

    class Killed(BaseException):
        pass

    def save_and_die(self, best_state):
        save(self, best_state)
        raise Killed  # the process dies once the checkpoint is on disk

    monkeypatch.setattr(Trainer, "_save", save_and_die)
    with pytest.raises(Killed):
        app(["align", *args, "--out", str(killed)], standalone_mode=False)
    monkeypatch.undo()
    assert (killed / "checkpoint.pt").exists() and not (killed / "metrics.json").exists()
    r = genrec_cli("align", *args, "--out", str(killed), "--resume")
    assert r.returncode == 0, r.stderr
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (whole, killed))
    assert a["test"] == b["test"] and a["valid"] == b["valid"]
    assert [h["loss"] for h in a["training"]["history"]] == [h["loss"] for h in b["training"]["history"]]


def test_align_on_two_processes_equals_one(sasrec_run, tmp_path):
    """`genrec align --nproc 2` (torchrun, gloo): each process takes half of every batch of pairs."""
    import os
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "genrec", "align", str(sasrec_run), *ALIGN, "--rounds", "2"]
    for out, extra in ((tmp_path / "one", []), (tmp_path / "two", ["--nproc", "2"])):
        done = subprocess.run(
            [*args, "--out", str(out), *extra], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert two["protocol"]["data_parallel"]["world_size"] == 2
    a = {f"{s}/{k}": v for s in ("valid", "test") for k, v in one[s].items() if isinstance(v, float)}
    b = {f"{s}/{k}": v for s in ("valid", "test") for k, v in two[s].items() if isinstance(v, float)}
    assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) <= 1e-4
    losses = zip(one["training"]["history"], two["training"]["history"])
    assert all(abs(x["loss"] - y["loss"]) <= 1e-4 for x, y in losses)


def test_the_aligned_runs_checkpoint_is_chosen_on_validation(sasrec_run, tmp_path):
    """The weights kept are those of the best validation epoch: a 4-epoch alignment whose validation peaks earlier
    ends with the weights of a run stopped at that epoch (every epoch's pairs and order are seeded by the epoch)."""
    common = [
        f"init_from={sasrec_run}",
        "train.objective.beta=0.5",
        "data.anchors_per_user=1",
        "train.threads=1",
    ]
    common += ["train.lr=0.1", "eval.select_metric=mrr"]  # large steps: validation peaks at epoch 2
    long = train_run(
        load_config("preference", [*common, "train.epochs=4"]), tmp_path / "long", progress=False
    )
    history = long["training"]["history"]
    best = max(history, key=lambda h: h["valid_mrr"])["epoch"]
    assert long["training"]["best_epoch"] == best < 4
    short = train_run(
        load_config("preference", [*common, f"train.epochs={best}"]), tmp_path / "short", progress=False
    )
    assert long["test"] == short["test"] and long["valid"] == short["valid"]


def test_reward_model_scores_lists_and_rejects_wrong_runs(sasrec_run, ranker_run, split):
    model = load_reward_model(ranker_run)
    reward = model.bind(split.sequences)
    lists = torch.tensor([[[1, 2, 3], [4, 5, 0], [0, 0, 0]]]).expand(2, -1, -1)
    r = reward(np.array([0, 1]), np.array([5, 5]), lists)
    assert r.shape == (2, 3) and ((r[:, :2] > 0) & (r[:, :2] < 1)).all() and (r[:, 2] == 0).all()
    diverse = RewardModel(model.run, diversity=1.0).bind(split.sequences)
    assert (diverse(np.array([0, 1]), np.array([5, 5]), lists)[:, 0] >= r[:, 0]).all()
    with pytest.raises(ConfigError, match="ranking run"):
        load_reward_model(sasrec_run)
    other = Sequences(np.array([1]), np.array([999991, 999992]), np.array([0, 1]), np.array([1]))
    with pytest.raises(ConfigError, match="item ids do not match"):
        model.bind(other)
    with pytest.raises(ConfigError, match="unknown recipe"):
        load_config("no-such", [f"init_from={sasrec_run}"])
    with pytest.raises(ConfigError, match="beta"):
        load_config("preference", [f"init_from={sasrec_run}", "train.objective.beta=-1"])
    with pytest.raises(ConfigError, match="task preference aligns a trained run: set init_from"):
        load_config("sasrec", ["task=preference"])
    with pytest.raises(ConfigError, match="trains on preference pairs: use task: preference"):
        load_config("sasrec", ["train.objective=dpo"])
    with pytest.raises(ConfigError, match="init_from: .* is not a genrec run directory"):
        load_config("preference", ["init_from=/no/such/run"])


@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_dpo_on_rating_pairs_moves_any_log_likelihood_model(name, split):
    torch.manual_seed(0)
    cfg = load_config(name, ["model.dim=8", "model.max_len=10", "model.dropout=0.0"]).model
    model = build_model(cfg, split.n_items, split.n_users)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    pairs = rating_pairs(
        split, PreferenceDataConfig(negatives=2, anchors_per_user=1), np.random.default_rng(0)
    )
    batch = next(preference_batches(split, pairs, 64, model.max_history, np.random.default_rng(0)))
    assert batch.history.timestamps is not None  # HSTU reads the events' times

    def margin() -> float:
        with torch.no_grad():
            lp = model.log_likelihood(batch.history, batch.item_ids())
        return float((lp[:, :1] - lp[:, 1:]).mean())

    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    start = margin()
    for _ in range(5):
        training_step(model, SDPO(beta=0.5), optimizer, batch, 1.0, reference)
    assert margin() > start


def test_every_preference_recipe_resolves(tmp_path):
    """Alignment recipes are ordinary recipes of task preference without a model section: the run in init_from
    gives it (with its data and eval sections)."""
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "config.yaml").write_text(dump_config(load_config("sasrec-temporal-ml-1m")))
    names = [n for n in list_recipes() if "model" not in recipe_dict(n)]
    assert {"preference", "sasrec-dpo-ml-1m", "sasrec-sdpo-ml-1m", "tiger-dpo-ml-1m"} <= set(names)
    for name in names:
        cfg = load_config(name, [f"init_from={ref}", f"data.reward_run={ref}"])
        assert cfg.task == "preference" and cfg.train.objective.beta > 0 and cfg.data.split == "temporal"
    sdpo = load_config("sasrec-sdpo-ml-1m", [f"init_from={ref}", "train.objective.beta=0.7"])
    assert (
        sdpo.train.objective.name == "sdpo" and sdpo.train.objective.beta == 0.7 and sdpo.data.negatives == 4
    )
