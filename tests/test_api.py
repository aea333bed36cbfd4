"""The Python API as the README shows it, string ids end to end, ranking runs served, and a model defined
outside the package trained, evaluated and served without editing genrec."""

import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import polars as pl
import pytest
import torch
from fastapi.testclient import TestClient

import genrec
from genrec.config import ModelConfig
from genrec.models import Recommender
from genrec.serve import create_app

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs_as_written(tmp_path):
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    r = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "runs" / "api-demo" / "metrics.json").exists()
    assert "item_id" in r.stdout and "score" in r.stdout


def string_id_log() -> pl.DataFrame:
    """ASIN-like items (with '007' and '7' as two items) and UUID users, a 'next item' pattern."""
    items = ["B000000001", "B000000002", "007", "7", "B00ABC1234", "B00XYZ9876"]
    rows = []
    rng = np.random.default_rng(0)
    for u in range(30):
        user = str(uuid.UUID(int=u + 1))
        start = int(rng.integers(0, len(items)))
        for t in range(5):
            rows.append((user, items[(start + t) % len(items)], 1_700_000_000 + 100 * t))
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")


def test_string_ids_train_evaluate_recommend_and_serve_verbatim(tmp_path):
    log = string_id_log()
    csv = tmp_path / "log.csv"
    log.write_csv(csv)
    run = genrec.train("popularity", dataset=str(csv), out=tmp_path / "run")
    assert set(run.items["item_id"].to_list()) == set(log["item_id"].to_list())  # '007' and '7' both kept
    assert run.evaluate()["test"]["examples"] == 30
    user = log["user_id"][0]
    recs = run.recommend(user=user, k=3, exclude_seen=False)
    assert set(recs["item_id"].to_list()) <= set(log["item_id"].to_list())
    assert run.recommend(history=["007"], k=6, exclude_seen=True)["item_id"].to_list().count("007") == 0
    client = TestClient(create_app(run))
    body = client.post("/recommend", json={"user_id": user, "k": 3, "exclude_seen": False}).json()
    assert [i["item_id"] for i in body["items"]] == recs["item_id"].to_list()
    assert client.get("/items/007").json()["item_id"] == "007"
    assert client.get("/items/7").json()["item_id"] == "7"
    # The CLI takes and prints ids verbatim too.
    r = subprocess.run(
        [sys.executable, "-m", "genrec", "recommend", str(tmp_path / "run"), "--history", "007,B00ABC1234"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "B000000001" in r.stdout or "B00XYZ9876" in r.stdout or " 7 " in r.stdout


def test_a_dataframe_goes_in_directly_and_the_run_can_be_evaluated_again(tmp_path):
    run = genrec.train("popularity", data=string_id_log(), out=tmp_path / "run")
    again = genrec.load_run(tmp_path / "run").evaluate()
    assert again["test"] == run.metrics["test"]


def test_a_ranking_run_answers_rank_over_http_and_the_cli(tmp_path):
    run = genrec.train(
        "din", dataset="ml-100k", overrides={"model.dim": 8, "model.max_len": 8, "train.epochs": 1},
        out=tmp_path / "ranker",
    )  # fmt: skip
    assert run.task.name == "ranking" and 0 <= run.metrics["test"]["auc"] <= 1
    scored = run.rank([1, 50, 100], user=1)
    client = TestClient(create_app(tmp_path / "ranker"))
    body = client.post("/rank", json={"user_id": 1, "candidates": [1, 50, 100]}).json()
    by_id = {i["item_id"]: i["score"] for i in body["items"]}
    expected = {str(i): s for i, s in zip(scored["item_id"].to_list(), scored["score"].to_list())}
    assert by_id == pytest.approx(expected, abs=1e-5)
    assert (
        client.post("/recommend", json={"user_id": 1, "k": 3}).status_code == 422
    )  # rankers do not retrieve
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "genrec",
            "recommend",
            str(tmp_path / "ranker"),
            "--user",
            "1",
            "--candidates",
            "1,50",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "best first" in r.stdout, r.stderr
    assert genrec.load_run(tmp_path / "ranker").evaluate()["test"]["auc"] == pytest.approx(
        run.metrics["test"]["auc"]
    )


class ItemBiasConfig(ModelConfig):
    name: Literal["item_bias_test"] = "item_bias_test"
    default_objective: ClassVar[str | None] = "bpr"


class ItemBias(Recommender):
    """A model written outside the package: one learned score per item, trained with BPR."""

    config_class = ItemBiasConfig
    trainable = True

    def __init__(self, cfg, n_items, n_users):
        super().__init__(cfg, n_items, n_users)
        self.bias = torch.nn.Parameter(torch.zeros(n_items + 1))

    def training_batches(self, split, rng, batch_size):
        items = split.train.items
        order = rng.permutation(len(items))
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            yield torch.from_numpy(items[idx]), torch.from_numpy(rng.integers(1, self.n_items + 1, len(idx)))

    def pair_scores(self, batch):
        pos, neg = batch
        return self.bias[pos] - self.bias[neg], torch.zeros(())

    def score(self, batch):
        return self.bias.expand(batch.items.shape[0], -1)


def test_a_model_defined_outside_the_package_trains_evaluates_and_serves(tmp_path):
    genrec.register(ItemBias)
    recipe = tmp_path / "item-bias.yaml"
    recipe.write_text("model:\n  name: item_bias_test\ntrain:\n  epochs: 2\n  lr: 0.05\n")
    run = genrec.train(str(recipe), dataset="ml-100k", out=tmp_path / "run")
    history = run.metrics["training"]["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert run.metrics["test"]["recall@50"] > 0
    client = TestClient(create_app(tmp_path / "run"))
    body = client.post("/recommend", json={"user_id": 1, "k": 5}).json()
    assert [i["item_id"] for i in body["items"]] == [str(i) for i in run.recommend(user=1, k=5)["item_id"]]


def test_a_run_written_with_a_removed_key_loads_when_it_was_off_and_says_how_to_retrain_when_not(tmp_path):
    import yaml

    from genrec.errors import DataError

    genrec.train("popularity", dataset="ml-100k", out=tmp_path / "run")
    config = tmp_path / "run" / "config.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["train"]["ema_decay"] = None  # as runs written before the key was removed have it
    config.write_text(yaml.safe_dump(raw))
    assert genrec.load_run(tmp_path / "run").recommend(user=1, k=3).height == 3
    raw["train"]["ema_decay"] = 0.9
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match="ema_decay=0.9, which genrec no longer has; retrain"):
        genrec.load_run(tmp_path / "run")


def test_served_ranking_run_keeps_a_live_users_ratings_and_titles(tmp_path):
    run = genrec.train(
        "din", dataset="ml-100k", overrides={"model.dim": 8, "model.max_len": 8, "train.epochs": 1},
        out=tmp_path / "ranker",
    )  # fmt: skip
    assert run.items["title"].null_count() == 0  # ranking runs keep the item table's titles too
    client = TestClient(create_app(run))
    assert client.post("/events", json={"user_id": 1, "items": [50]}).status_code == 200
    live = {
        i["item_id"]: i["score"]
        for i in client.post("/rank", json={"user_id": 1, "candidates": [1, 2, 3]}).json()["items"]
    }
    _, hist, times = run.user_history(1)
    expected = run.rank_internal(run.item_index([1, 2, 3]), 0, np.append(hist, run.item_index([50])), None)
    assert [live[i] for i in ("1", "2", "3")] == pytest.approx(expected.tolist(), abs=1e-5)
    # A late event (older than the user's newest) goes to its place in time; the stored ratings keep theirs.
    at = int(times[len(times) // 2])
    r = client.post("/events", json={"user_id": 1, "items": [60], "timestamps": [at]})
    assert r.json()["update"] == "recompute (late event)"
    place = int(np.searchsorted(times, at, side="right"))
    history = np.insert(np.append(hist, run.item_index([50])), place, run.item_index([60])[0])
    arrived = np.insert(np.append(np.zeros(len(hist), bool), True), place, True)
    served_items, served_times, _ = client.app.state.engine.history(1)
    assert served_items.tolist() == history.tolist()
    expected = run.rank_internal(run.item_index([1, 2, 3]), 0, history, served_times, arrived)
    ranked = client.post("/rank", json={"user_id": 1, "candidates": [1, 2, 3]}).json()["items"]
    assert [{i["item_id"]: i["score"] for i in ranked}[c] for c in ("1", "2", "3")] == pytest.approx(
        expected.tolist(), abs=1e-5
    )
    # An id that cannot be one of this run's (integer) ids starts a new live user instead of failing.
    assert client.post("/events", json={"user_id": "newbie", "items": [50]}).json()["new_user"] is True
