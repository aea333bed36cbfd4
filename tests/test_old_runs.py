"""Run directories written before the loss settings moved to `train.objective` still load, evaluate and serve.

`fixtures/sasrec-run-before-objectives` was written by genrec at commit fc81a3b (`genrec.train("sasrec")` with
`model.loss=bce`, `model.loss_chunk=64`, `model.contrastive_weight=0.2`, dim 8, 2 epochs) on the tiny data that
`tiny_rows` rebuilds; its config.yaml names that data by an absolute path, which the tests point at a fresh copy.
"""

import json
import shutil
from pathlib import Path

import pytest
from conftest import write_p5

from genrec.config import load_config
from genrec.runs import evaluate_run, load_run, train_run

FIXTURE = Path(__file__).parent / "fixtures" / "sasrec-run-before-objectives"


def tiny_rows() -> list[list[int]]:
    return [[u] + [(u + j) % 20 + 1 for j in range(5 + u % 4)] for u in range(1, 41)]


@pytest.fixture
def old_run(tmp_path) -> Path:
    data = write_p5(tmp_path / "data", tiny_rows(), {i: f"Item {i} thing" for i in range(1, 21)})
    run = tmp_path / "old"
    shutil.copytree(FIXTURE, run)
    config = (run / "config.yaml").read_text().replace("/tmp/i27-fix/data", str(data))
    (run / "config.yaml").write_text(config)
    return run


def test_a_run_written_before_train_objective_loads_evaluates_and_recommends(old_run):
    run = load_run(old_run)
    objective = run.cfg.train.objective  # model.loss, loss_chunk and contrastive_* became the objective
    assert objective.name == "contrastive" and objective.weight == 0.2 and objective.temperature == 0.1
    assert objective.base.name == "bce" and not hasattr(run.cfg.model, "loss")
    stored = run.metrics
    again = evaluate_run(run, progress=False)
    assert again["test"] == pytest.approx(stored["test"]) and again["valid"] == pytest.approx(stored["valid"])
    assert again["protocol"]["checkpoint_selection"] == stored["protocol"]["checkpoint_selection"]
    assert len(run.recommend(user=run.users["user_id"][0], k=3)) == 3


def test_metrics_json_keeps_every_key_it_had(old_run, tmp_path):
    """A run trained today with the same settings writes every metrics.json key the old run has (protocol and
    training summary included)."""
    stored = json.loads((old_run / "metrics.json").read_text())
    overrides = ["model.dim=8", "model.max_len=8", "model.layers=1", "train.epochs=2", "train.batch_size=8"]
    overrides += ["train.objective.name=contrastive", "train.objective.weight=0.2", "train.threads=1"]
    overrides += ["train.objective.base={name: bce}"]
    new = train_run(
        load_config("sasrec", overrides, str(tmp_path / "data")), tmp_path / "new", progress=False
    )
    assert set(stored) <= set(new)
    assert set(stored["protocol"]) <= set(new["protocol"])
    assert set(stored["training"]) <= set(new["training"])
    assert new["training"]["objective"] == stored["training"]["objective"] == "bce+contrastive"
