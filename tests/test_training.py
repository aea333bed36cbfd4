"""The trainer's stops: a non-finite loss, a wall-clock budget, a signal, no epoch at all; each validates the weights
it stops with and says why in one line; one progress line per epoch when nobody watches a terminal."""

import numpy as np
import pytest
import torch

from genrec.config import EvalConfig, load_config
from genrec.models import build_model
from genrec.runs import train_run


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
