import numpy as np
import pytest
import torch

from genrec.config import EvalConfig, TrainConfig, load_config
from genrec.data.batching import history_batch
from genrec.data.registry import load_dataset
from genrec.data.split import leave_one_out
from genrec.eval.evaluator import evaluate
from genrec.models import build_model
from genrec.runs.retrieval import fit_retrieval
from genrec.training.checkpoint import load_weights
from genrec.training.trainer import FitContext


@pytest.fixture
def tiny_split(tiny_p5):
    return leave_one_out(load_dataset(str(tiny_p5)).encode())


def fit(name, split, run_dir=None, resume=False, **train):
    cfg = load_config(name).model
    torch.manual_seed(0)  # as train_run does: the same initial weights for every run
    model = build_model(cfg, split.n_items, split.n_users)
    summary = fit_retrieval(
        model,
        split,
        FitContext(TrainConfig(**train), EvalConfig(ks=[1, 5, 10]), run_dir, resume, progress=False),
    )
    return model, summary


def test_popularity_counts_training_items(tiny_split):
    model, _ = fit("popularity", tiny_split)
    counts = np.bincount(tiny_split.train.items, minlength=tiny_split.n_items + 1)
    batch = history_batch(tiny_split.test.history.offsets, tiny_split.test.history.items, np.array([0]), 5)
    assert torch.equal(model.score(batch)[0], torch.from_numpy(counts).float())


def test_itemknn_learns_the_successor_pattern(tiny_split):
    model, _ = fit("itemknn", tiny_split)
    res = evaluate(model, tiny_split.test, tiny_split.n_items, EvalConfig(ks=[1, 5, 10]))
    pop, _ = fit("popularity", tiny_split)
    base = evaluate(pop, tiny_split.test, tiny_split.n_items, EvalConfig(ks=[1, 5, 10]))
    assert res["filtered"]["ndcg@5"] > base["filtered"]["ndcg@5"]
    # neighbours are symmetric co-occurrence: item 3's best neighbours include 2 and 4
    assert set(model.neighbour_ids[3, :2].tolist()) <= {2, 4, 5, 1}


def test_mf_training_beats_random_and_resumes_exactly(tiny_split, tmp_path):
    full, summary = fit("mf", tiny_split, tmp_path / "a", epochs=6, batch_size=8, lr=0.05, patience=10)
    assert summary["epochs_run"] == 6
    losses = [h["loss"] for h in summary["history"]]
    assert losses[-1] < losses[0]
    assert (tmp_path / "a" / "checkpoint.pt").exists()
    # A run killed after epoch 3 (its checkpoint is what a 3-epoch run leaves) and resumed to 6 epochs ends
    # with the same weights as the uninterrupted run; the constant schedule makes the two configs agree.
    fit("mf", tiny_split, tmp_path / "d", epochs=3, batch_size=8, lr=0.05, patience=10)
    resumed, s2 = fit(
        "mf", tiny_split, tmp_path / "d", resume=True, epochs=6, batch_size=8, lr=0.05, patience=10
    )
    assert s2["epochs_run"] == 6
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k]), k
    best = load_weights(tmp_path / "a" / "best.safetensors")
    assert set(best) == set(full.state_dict())
