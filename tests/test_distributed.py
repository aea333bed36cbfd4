"""Data-parallel training (torchrun, gloo on CPU) equals one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genrec.config import load_config
from genrec.models.ranking.base import RankBatch
from genrec.objectives.losses import draw_items, negative_stream
from genrec.runs import train_run
from genrec.training import distributed

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.dim=16", "model.layers=1", "model.dropout=0", "train.epochs=2", "train.batch_size=96"]


def run_two_processes(recipe: str, sets: list[str], out: Path, *extra: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "genrec", "train", recipe, "--out", str(out), "--nproc", "2"]
    args += [a for s in sets for a in ("--set", s)] + ["--no-progress", "--examples", "0", *extra]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def numbers(metrics: dict) -> dict:
    return {
        f"{split}/{k}": v
        for split in ("valid", "test")
        for k, v in metrics[split].items()
        if isinstance(v, float)
    }


def assert_same(one: dict, two: dict) -> None:
    a, b = numbers(one), numbers(two)
    assert a.keys() == b.keys() and a
    worst = max(abs(a[k] - b[k]) for k in a)
    assert worst <= 1e-4, {k: (a[k], b[k]) for k in a if abs(a[k] - b[k]) > 1e-4}
    losses = [(h["loss"], g["loss"]) for h, g in zip(one["training"]["history"], two["training"]["history"])]
    assert losses and all(abs(x - y) <= 1e-4 for x, y in losses), losses


def test_shards_cover_the_batch_and_negatives_match_one_process():
    sizes = [distributed.shard_bounds(10, 3, r) for r in range(3)]
    assert sizes == [(0, 3), (3, 6), (6, 10)]
    b = 5
    batch = RankBatch(*(torch.arange(b * 2).view(b, 2) for _ in range(8)), cross=None, causal=True)
    batch.users = torch.arange(b)
    part = distributed.take_rows(batch, 2, 4)
    assert part.users.tolist() == [2, 3] and part.hist_items.shape == (2, 2) and part.causal is True
    assert distributed.rows((torch.zeros(7, 3), None)) == 7
    # Per-position negatives: the ranks' slices of one step's draw are the single process's draw.
    whole = draw_items(100, 10, False, distributed.step_generator((1, 2, 3)))
    parts = []
    for offset, n in ((0, 4), (4, 6)):
        with negative_stream(distributed.step_generator((1, 2, 3)), offset, 10):
            parts.append(draw_items(100, n, False))
    assert torch.equal(torch.cat(parts), whole)
    with negative_stream(distributed.step_generator((1, 2, 4)), 0, 10):
        assert not torch.equal(draw_items(100, 10, False), whole)  # another step, other negatives


def test_two_processes_equal_one_sasrec_bce(tmp_path):
    """BCE draws a negative per position: the per-step stream keeps the two runs equal."""
    sets = TINY + ["train.objective=bce"]
    one = train_run(load_config("sasrec", sets), tmp_path / "one", progress=False)
    run_two_processes("sasrec", sets, tmp_path / "two")
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert_same(one, two)
    assert two["protocol"]["data_parallel"]["world_size"] == 2
    assert two["protocol"]["data_parallel"]["global_batch"] == 96
    assert one["protocol"]["data_parallel"]["world_size"] == 1
    assert not list((tmp_path / "two").glob(".*"))  # atomic writes left no temporary file


@pytest.mark.slow
def test_two_processes_equal_one_ranker_and_resume(tmp_path):
    """A ranker (units = labelled impressions, a dataclass batch); then --resume from the finished
    checkpoint: rank 1 must receive rank 0's state, or it would train again alone and hang."""
    sets = ["model.dim=16", "model.dropout=0", "train.epochs=2", "train.batch_size=128"]
    one = train_run(load_config("din", sets), tmp_path / "one", progress=False)
    out = tmp_path / "two"
    run_two_processes("din", sets, out)
    two = json.loads((out / "metrics.json").read_text())
    assert_same(one, two)
    (out / "metrics.json").unlink()
    run_two_processes("din", sets, out, "--resume")
    again = json.loads((out / "metrics.json").read_text())
    assert numbers(again) == numbers(two)
