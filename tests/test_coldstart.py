import dataclasses

import numpy as np
import polars as pl
import pytest
import torch
from conftest import write_p5

from genrec.config import EvalConfig, TrainConfig, load_config
from genrec.data.batching import history_batch, pad_left
from genrec.data.registry import load_dataset
from genrec.data.split import leave_one_out
from genrec.eval.evaluator import evaluate
from genrec.experiments.coldstart import ColdPlaces, cold_items, cold_start_split, evaluate_warm_cold
from genrec.items import text
from genrec.models import build_model
from genrec.models.base import Resources
from genrec.runs.retrieval import fit_retrieval
from genrec.training.trainer import FitContext


@pytest.fixture
def tiny(tiny_p5):
    ds = load_dataset(str(tiny_p5))
    split = leave_one_out(ds.encode())
    items = pl.DataFrame({"item_id": split.sequences.item_ids}).join(
        ds.items.select(["item_id", "title", "categories"]), on="item_id", how="left"
    )
    return split, items


def test_cold_items_are_the_ones_first_seen_last_and_leave_training(tmp_path):
    # items 9 and 5 only ever appear at the end of sequences; 9 is rarer, so it is the newest
    rows = [[u, 1, 2, 3, 4, 9 if u % 4 == 0 else 5] for u in range(1, 21)]
    folder = write_p5(tmp_path / "d", rows)
    split = leave_one_out(load_dataset(str(folder)).encode())
    nine = int(split.sequences.item_index([9])[0])
    assert cold_items(split, 0.1).tolist() == [nine]
    cs, is_cold, details = cold_start_split(split, 0.1)
    assert not is_cold[cs.train.items].any() and not is_cold[cs.valid.targets].any()
    assert details["test_examples_cold"] == 5 and details["test_examples_warm"] == 15
    assert len(cs.test) == len(split.test)


def test_textrec_learns_and_faiss_agrees_with_exact_search(tiny, monkeypatch):
    split, items = tiny
    monkeypatch.setattr(
        text,
        "item_text_embeddings",
        lambda it, enc=None, profiles=None: np.eye(len(it), 16, dtype=np.float32),
    )
    cfg = load_config("textrec", ["model.text_dim=16", "model.dim=16", "model.dropout=0"]).model
    torch.manual_seed(0)
    model = build_model(cfg, split.n_items, split.n_users)
    ctx = FitContext(
        TrainConfig(epochs=40, batch_size=8, lr=1e-2, patience=40, eval_every=20),
        EvalConfig(ks=[1, 5, 10]),
        progress=False,
    )
    ctx = dataclasses.replace(ctx, resources=Resources(items=items))
    fit_retrieval(model, split, ctx)
    res = evaluate(model, split.test, split.n_items, EvalConfig(ks=[1, 5, 10]))
    assert res["filtered"]["recall@5"] >= 0.75
    hist = split.test.history
    rows = np.arange(len(split.test))
    batch = history_batch(hist.offsets, hist.items, rows, cfg.max_len)
    seen = torch.from_numpy(pad_left(hist.offsets, hist.items, rows, None)).long()
    exact, _ = model.recommend(batch, 3, seen)
    ann = build_model(cfg.model_copy(update={"retrieval": "faiss"}), split.n_items, split.n_users)
    ann.load_state_dict(model.state_dict())
    ann.eval()
    approx, scores = ann.recommend(batch, 3, seen)
    assert torch.equal(exact, approx) and "score" not in ann.capabilities


def test_warm_and_cold_metrics_are_reported_separately(tiny, monkeypatch):
    split, items = tiny
    cs, is_cold, details = cold_start_split(split, 0.2)
    model = build_model(load_config("popularity").model, split.n_items, split.n_users)
    fit_retrieval(model, cs, FitContext(TrainConfig(), EvalConfig(ks=[1, 5, 10]), progress=False))
    out = evaluate_warm_cold(model, cs, is_cold, EvalConfig(ks=[1, 5, 10]))
    assert out["warm"]["examples"] == details["test_examples_warm"]
    assert out["cold"]["examples"] == details["test_examples_cold"]
    assert out["cold_after_cold"]["examples"] + out["cold_first"]["examples"] == out["cold"]["examples"]
    hist = cs.test.history
    after = [is_cold[hist.items[hist.offsets[r] : hist.offsets[r + 1]]].any() for r in range(len(cs.test))]
    assert out["cold_after_cold"]["examples"] == sum(a for a, t in zip(after, cs.test.targets) if is_cold[t])
    if details["test_examples_cold"]:
        assert out["cold_unfiltered"]["recall@1"] == 0.0  # popularity never ranks an unseen item first


def test_cold_places_put_the_best_cold_items_at_every_tenth_place():
    """Share 0.2 of a top-10 list: the two best-scoring cold items at places 5 and 10, the eight best warm items
    around them in score order; history items stay out of both groups."""

    class Fixed(torch.nn.Module):
        capabilities, max_history, n_items = frozenset({"score"}), None, 30

        def score(self, batch):
            return torch.arange(31, dtype=torch.float32).expand(len(batch.items), -1)  # item i scores i

    is_cold = np.zeros(31, dtype=bool)
    is_cold[[3, 4, 5, 28]] = True
    batch = history_batch(np.array([0, 1]), np.array([30]), np.array([0]), None)
    items, scores = ColdPlaces(Fixed(), is_cold, 0.2).recommend(batch, 10, exclude=torch.tensor([[28]]))
    assert items[0].tolist() == [30, 29, 27, 26, 5, 25, 24, 23, 22, 4]
    assert scores[0, 4] == 5 and scores[0, 9] == 4
