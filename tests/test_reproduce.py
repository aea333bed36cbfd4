"""Reproduction checks on real data (minutes each): `pytest -m slow`."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _train(recipe, dataset, out, *overrides):
    args = [
        sys.executable,
        "-m",
        "genrec",
        "train",
        recipe,
        "--dataset",
        dataset,
        "--out",
        str(out),
        "--examples",
        "0",
        "--no-progress",
    ]
    for o in overrides:
        args += ["--set", o]
    subprocess.run(args, check=True, timeout=3600)
    return json.loads((out / "metrics.json").read_text())


def test_itemknn_beauty_reproduces(tmp_path):
    m = _train("itemknn-amazon-beauty", "amazon-beauty", tmp_path / "knn")
    assert m["test"]["ndcg@10"] == pytest.approx(0.0425, abs=0.002)
    assert m["test_unfiltered"]["ndcg@10"] < m["test"]["ndcg@10"]


def test_sasrec_beauty_beats_published_row(tmp_path):
    m = _train("sasrec-amazon-beauty", "amazon-beauty", tmp_path / "sasrec")
    assert m["test_unfiltered"]["ndcg@10"] > 0.0318  # SASRec row of the TIGER paper
