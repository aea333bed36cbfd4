import json
import subprocess
import sys
from pathlib import Path

import pytest


def genrec(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "genrec", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_train_popularity_on_p5_folder_writes_a_complete_run(tiny_p5, tmp_path):
    out = tmp_path / "run"
    r = genrec("train", "popularity", "--dataset", str(tiny_p5), "--out", str(out), "--examples", "1")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("valid", "test", "valid_unfiltered", "test_unfiltered", "protocol"):
        assert key in metrics
    assert {"recall@10", "ndcg@10", "mrr"} <= set(metrics["test"])
    assert "full catalogue" in metrics["protocol"]["candidates"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "config.yaml",
            "meta.json",
            "items.parquet",
            "users.parquet",
            "model.safetensors",
            "metrics.json",
            "train.log",
        ]
    )
    assert "Item" in r.stdout  # titles printed for the example users

    r = genrec("recommend", str(out), "--history", "2,3", "-k", "3")
    assert r.returncode == 0, r.stderr
    assert "Item" in r.stdout
    r = genrec("evaluate", str(out))
    assert r.returncode == 0 and "test_unfiltered" in r.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "no-such-recipe"], "unknown recipe"),
        (["train", "popularity", "--dataset", "no-such-data"], "unknown dataset"),
        (["train", "mf", "--set", "model.bogus=1"], "model.bogus"),
        (["train", "mf", "--set", "train.epochz=1"], "train.epochz"),
        (["train", "mf", "--set", "model.dim=abc"], "model.dim"),
    ],
)
def test_bad_input_is_one_clear_line(args, needle, tmp_path):
    r = genrec(*args, "--out", str(tmp_path / "never"))
    assert r.returncode == 2
    lines = [line for line in r.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert not (tmp_path / "never").exists()


def test_bad_csv_and_unknown_ids(tmp_path, tiny_p5):
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id\n1,\n")  # a missing id (any non-empty text is a valid id)
    r = genrec("train", "popularity", "--dataset", str(bad), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "item_id missing" in r.stderr and "Traceback" not in r.stderr
    out = tmp_path / "run"
    assert (
        genrec(
            "train", "popularity", "--dataset", str(tiny_p5), "--out", str(out), "--examples", "0"
        ).returncode
        == 0
    )
    r = genrec("recommend", str(out), "--history", "2,999")
    assert r.returncode == 2 and "999" in r.stderr
    r = genrec("recommend", str(out), "--user", "12345")
    assert r.returncode == 2 and "unknown user" in r.stderr
    r = genrec("evaluate", str(tmp_path))
    assert r.returncode == 2 and "not a finished genrec run" in r.stderr


def test_datasets_and_recipes_list():
    r = genrec("datasets")
    assert r.returncode == 0 and "ml-100k" in r.stdout and "943" in r.stdout
    r = genrec("recipes")
    assert r.returncode == 0 and "popularity" in r.stdout


def test_python_m_and_console_script_agree():
    venv_script = Path(sys.executable).parent / "genrec"
    if venv_script.exists():
        r = subprocess.run([str(venv_script), "recipes"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "mf" in r.stdout


def test_recommend_for_a_user_matches_the_evaluated_scores(tmp_path):
    """`recommend --user` scores the stored history with its timestamps, as the evaluator does."""
    import numpy as np
    import torch

    from genrec.data.batching import history_batch
    from genrec.runs import load_run

    out = tmp_path / "hstu"
    r = genrec(
        "train",
        "hstu",
        "--dataset",
        "ml-100k",
        "--out",
        str(out),
        "--examples",
        "1",
        "--set",
        "train.epochs=1",
        "--set",
        "model.dim=16",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    run = load_run(out)
    user, history, times = run.user_history(int(run.users["user_id"][0]))
    assert times is not None and len(times) == len(history)
    ids, scores = run.recommend_internal(history, 5, exclude_seen=False, user=user, timestamps=times)
    batch = history_batch(
        np.array([0, len(history)]), history, np.array([0]), run.model.max_history, timestamps=times
    )
    with torch.no_grad():
        expected = run.model.score(batch)[0]
    assert np.allclose(scores, expected[torch.from_numpy(ids)].numpy(), atol=1e-5)

    # Weights that do not fit the config (an older model version): one line, not a PyTorch traceback.
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("dim: 16", "dim: 32"))
    r = genrec("recommend", str(out), "--user", str(user), "-k", "3")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "does not fit the model" in r.stderr and len(r.stderr.strip().splitlines()) == 1
