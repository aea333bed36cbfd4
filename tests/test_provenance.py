"""Stale data is never used without a word: a run, a cached dataset and a sweep point know the fingerprint and
the resolved path of their data, and resuming, re-evaluating or reusing them on other data is a one-line error."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_p5
from typer.testing import CliRunner

from genrec.cli import app
from genrec.config import load_config
from genrec.errors import ConfigError, DataError
from genrec.runs import evaluate_run, load_run, train_run


def _log(path, rekey: dict | None = None):
    """12 users reading items 1..10 in a shifted cycle; `rekey` renames items (the same log, other ids)."""
    rekey = rekey or {}
    rows = [
        f"{u},{rekey.get(i, i)},{100 * u + t}"
        for u in range(1, 13)
        for t, i in enumerate([(u + k) % 10 + 1 for k in range(6)])
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    return path


def test_resume_on_changed_data_is_refused(tmp_path):
    data = _log(tmp_path / "log.csv")
    cfg = load_config("popularity", [], str(data))
    train_run(cfg, tmp_path / "run", progress=False)
    _log(data, rekey={3: 33})  # one item re-keyed: the same shape, another index
    with pytest.raises(DataError, match="not the data it was made from.*train into a new --out"):
        train_run(cfg, tmp_path / "run", resume=True, progress=False)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert len(meta["data"]["fingerprint"]) == 16 and meta["data"]["source"] == str(data.resolve())
    _log(data)  # the original content again: resuming is fine
    train_run(cfg, tmp_path / "run", resume=True, progress=False)


def test_evaluate_reads_the_file_the_run_was_trained_on(tmp_path, monkeypatch):
    """A relative dataset path is stored resolved: evaluating from another folder that has a file of the same
    name scores the run's own data, and a changed file is a one-line error."""
    _log(tmp_path / "a" / "log.csv")
    _log(tmp_path / "b" / "log.csv", rekey={1: 11, 2: 12, 3: 13})
    monkeypatch.chdir(tmp_path / "a")
    metrics = train_run(load_config("popularity", [], "log.csv"), tmp_path / "run", progress=False)
    monkeypatch.chdir(tmp_path / "b")
    again = evaluate_run(load_run(tmp_path / "run"), progress=False)
    assert again["test"] == metrics["test"]
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert stored["data"]["dataset"] == str(tmp_path / "a" / "log.csv")
    _log(tmp_path / "a" / "log.csv", rekey={5: 55})
    with pytest.raises(DataError, match="not the data it was made from"):
        evaluate_run(load_run(tmp_path / "run"), progress=False)
    repo = Path(__file__).resolve().parents[1]  # `python -m` imports genrec from its working directory
    r = subprocess.run(
        [sys.executable, "-m", "genrec", "evaluate", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "fingerprint" in lines[0], r.stderr
    # Naming the data explicitly evaluates on it, without a check.
    assert "test" in evaluate_run(load_run(tmp_path / "run"), str(tmp_path / "a" / "log.csv"), progress=False)


def _sweep(*args):
    return CliRunner().invoke(app, ["sweep", "sasrec", *args, "--bootstrap", "0"])


@pytest.fixture
def sweep_data(tmp_path):
    rows = [[u] + [(u * 3 + j) % 25 + 1 for j in range(6 + u % 5)] for u in range(1, 41)]
    return write_p5(tmp_path / "tiny", rows)


def test_sweep_refuses_points_of_another_config_or_data(tmp_path, sweep_data):
    out = tmp_path / "sweep"
    base = [
        "--dataset",
        str(sweep_data),
        "--out",
        str(out),
        "--set",
        "train.epochs=1",
        "--set",
        "model.max_len=8",
    ]
    grid = ["--grid", "model.dim=8,16,24"]
    assert _sweep(*base, *grid).exit_code == 0
    r = _sweep(*base, *grid, "--set", "train.lr=0.01")
    assert isinstance(r.exception, ConfigError) and "train.lr: 0.001 there, 0.01 now" in str(r.exception)
    (sweep_data / "sequential.txt").write_text("1 2 3 4 5 6\n" * 3 + "2 3 4 5 6 7\n" * 30)
    r = _sweep(*base, *grid)
    assert isinstance(r.exception, DataError) and "not the data it was made from" in str(r.exception)
    assert all(len(p["data"]) == 16 for p in json.loads((out / "sweep.json").read_text())["points"])


def test_an_interrupted_budget_sweep_continues(tmp_path, sweep_data):
    out = tmp_path / "sweep"
    args = ["--dataset", str(sweep_data), "--out", str(out), "--grid", "model.dim=8,16,24",
            "--set", "train.epochs=1", "--set", "model.max_len=8", "--budget-minutes", "30"]  # fmt: skip
    assert _sweep(*args).exit_code == 0
    point = out / "dim24"
    cap = yaml.safe_load((point / "config.yaml").read_text())["train"]["max_minutes"]
    for name in ("metrics.json", "model.safetensors"):  # as if killed before it finished
        (point / name).unlink()
    r = _sweep(*args)
    assert r.exit_code == 0, r.output
    assert (point / "metrics.json").exists()
    assert yaml.safe_load((point / "config.yaml").read_text())["train"]["max_minutes"] == cap
