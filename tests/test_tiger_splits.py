"""TIGER's validation and test figures, recomputed by brute force: one user at a time, the model's exact
log-probability of every catalogue item given the history (teacher-forced, no beam search), ranked by hand.

Both splits must come out of the evaluator exactly as this loop computes them: the history each split reads
(validation: the training sequence; test: the training sequence and the validation item), truncated to the newest
`max_len` items for the model but excluded whole from the ranking, a target that repeats a history item a miss,
no user token, and cold targets (never in training) ranked like any other item."""

import math

import numpy as np
import polars as pl
import pytest
import torch
from conftest import write_p5

from genrec.config import EvalConfig, TrainConfig, load_config
from genrec.data.batching import HistoryBatch
from genrec.data.registry import load_dataset
from genrec.data.split import leave_one_out
from genrec.eval.evaluator import evaluate, evaluate_split
from genrec.items import semantic_ids as semantic_ids_module
from genrec.models import build_model
from genrec.models.base import Resources
from genrec.runs.retrieval import fit_retrieval
from genrec.training.trainer import FitContext

N_ITEMS, MAX_LEN, KS = 14, 4, [1, 5, 10]


def user_rows() -> list[list[int]]:
    """Item sequences of 3 to 9 items (several longer than MAX_LEN + 2, so both splits truncate); item 13 occurs
    only as user 0's validation target, item 14 only as user 1's test target (both never trained on); user 2's
    test target repeats an item of its history."""
    rng = np.random.default_rng(7)
    rows = []
    for u in range(40):
        length = 3 + u % 7
        rows.append([int(i) for i in rng.choice(np.arange(1, 13), size=length, replace=False)])
    rows[0][-2] = 13
    rows[1][-1] = 14
    rows[2][-1] = rows[2][0]
    return rows


def brute_force_ranks(model, rows: list[list[int]], cut: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user with at least 3 items: target = item at len - cut, history = the items before it. 0-based rank
    of the target among all items by log p(item | newest MAX_LEN history items) (unfiltered), and among the
    items outside the whole history (filtered; inf when the target is in the history)."""
    every = torch.arange(1, N_ITEMS + 1)[None]
    unfiltered, filtered = [], []
    for row in rows:
        if len(row) < 3:
            continue
        history, target = row[: len(row) - cut], row[len(row) - cut]
        batch = HistoryBatch(items=torch.tensor([history[-MAX_LEN:]]))  # no users: TIGER has no user token
        with torch.no_grad():
            score = model.log_likelihood(batch, every)[0].double().numpy()  # score[i - 1] = item i
        mine = score[target - 1]
        unfiltered.append(float((score > mine).sum()))
        allowed = np.ones(N_ITEMS, dtype=bool)
        allowed[np.array(history) - 1] = False
        filtered.append(math.inf if target in history else float((score[allowed] > mine).sum()))
    return np.array(unfiltered), np.array(filtered)


def metrics_of(ranks: np.ndarray) -> dict[str, float]:
    hit = {k: ranks < k for k in KS}
    out = {f"recall@{k}": float(hit[k].mean()) for k in KS}
    gain = np.where(np.isinf(ranks), 0.0, 1.0 / np.log2(np.where(np.isinf(ranks), 0, ranks) + 2))
    out.update({f"ndcg@{k}": float(np.where(hit[k], gain, 0.0).mean()) for k in KS})
    return out


@pytest.mark.parametrize(
    "backbone, history_tokens", [("native", "items"), ("native", "codes"), ("t5", "items")]
)
def test_valid_and_test_figures_equal_a_brute_force_loop(backbone, history_tokens, tmp_path, monkeypatch):
    rows = user_rows()
    folder = write_p5(
        tmp_path / "data", [[u + 1, *r] for u, r in enumerate(rows)], {i: f"Item {i}" for i in range(1, 15)}
    )
    ds = load_dataset(str(folder))
    split = leave_one_out(ds.encode())
    seq = split.sequences
    assert seq.n_items == N_ITEMS and [seq.row(u).tolist() for u in range(seq.n_users)] == rows
    items = pl.DataFrame({"item_id": seq.item_ids}).join(
        ds.items.select(["item_id", "title", "categories"]), on="item_id", how="left", maintain_order="left"
    )
    vectors = np.random.default_rng(0).normal(size=(N_ITEMS, 8)).astype(np.float32)
    monkeypatch.setattr(semantic_ids_module, "item_embeddings", lambda cfg, it, ids, collab=None: vectors)
    over = [
        f"model.backbone={backbone}",
        f"model.history_tokens={history_tokens}",
        "model.dim=32",
        "model.heads=2",
        "model.tokenizer.levels=2",
        "model.tokenizer.codebook_size=3",
        f"model.max_len={MAX_LEN}",
        "model.beam=64",  # wider than every trie level: the beam search is exact, so ranks must match
        "model.precision=float32",
        "model.dropout=0",
    ]
    cfg = load_config("tiger", over).model
    torch.manual_seed(0)
    model = build_model(cfg, N_ITEMS, seq.n_users)
    train = TrainConfig(epochs=3, batch_size=64, lr=3e-2, warmup_steps=0, eval_every=3)
    ctx = FitContext(train, EvalConfig(ks=KS), None, progress=False, resources=Resources(items=items))
    fit_retrieval(model, split, ctx)
    model.eval()
    # The items never trained on are the validation-only and test-only targets.
    assert np.flatnonzero(~model.trained_items.numpy()[1:]).tolist() == [12, 13]

    eval_cfg = EvalConfig(ks=KS, batch_size=7)  # batches of mixed history lengths
    figures = evaluate_split(model, split, eval_cfg)
    for name, cut in (("valid", 2), ("test", 1)):
        unfiltered, filtered = brute_force_ranks(model, rows, cut)
        assert filtered[2] == math.inf if name == "test" else filtered[2] < math.inf
        ranks: dict = {}
        evaluate(model, getattr(split, name), N_ITEMS, eval_cfg, example_ranks=ranks)
        # The evaluator lists the top-10: ranks past it are misses.
        for mine, theirs in ((filtered, ranks["filtered"]), (unfiltered, ranks["unfiltered"])):
            assert np.array_equal(np.where(mine < max(KS), mine, math.inf), theirs)
        for mine, key in ((filtered, name), (unfiltered, f"{name}_unfiltered")):
            expected = metrics_of(mine)
            assert {m: figures[key][m] for m in expected} == pytest.approx(expected, abs=1e-6)
    assert figures["valid"]["ndcg@10"] != figures["test"]["ndcg@10"]  # the splits are told apart
