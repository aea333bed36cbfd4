import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPEATS_CSV


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


# ---- mistakes: one line or click's usage message, exit status 2, nothing half-written


def test_version_and_usage_errors_without_tracebacks():
    from genrec import __version__

    r = genrec("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"genrec {__version__}"
    for args, needle in (
        (["nonsense"], "No such command 'nonsense'"),
        (["train"], "Missing argument"),
        (["recommend", "x", "-k", "0"], "Invalid value for '-k'"),
    ):
        r = genrec(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("Usage:") and needle in r.stderr and len(r.stderr.splitlines()) <= 5


def test_invalid_yaml_reports_its_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  name: mf\ntrain:\n  epochs: 3\n   lr: 2\n")
    r = genrec("train", str(recipe), "--out", str(tmp_path / "never"))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {recipe}: invalid YAML at line 5, column 6: mapping values are not allowed here"
    ]
    assert not (tmp_path / "never").exists()


def test_download_without_a_network_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    import sys
    import urllib.error
    import urllib.request

    from genrec import cli
    from genrec.data import registry

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(registry, "locate", lambda name, data_dir=None: None)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data, out = tmp_path / "data", tmp_path / "run"
    argv = ["genrec", "train", "popularity", "--dataset", "ml-1m", "--set", "data.download=true"]
    monkeypatch.setattr(sys, "argv", [*argv, "--set", f"data.data_dir={data}", "--out", str(out)])
    with pytest.raises(SystemExit) as code:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert code.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: cannot download ml-1m from https://files.grouplens.org/")
    assert "Temporary failure in name resolution" in err[0]
    assert not data.exists() and not out.exists()


def test_a_diverged_training_run_is_one_line_and_leaves_nothing_behind(tiny_p5, tmp_path):
    out = tmp_path / "run"
    sets = ["train.lr=1e12", "train.epochs=2", "model.dim=16", "train.batch_size=4", "train.grad_clip=null"]
    r = genrec("train", "sasrec", "--dataset", str(tiny_p5), "--out", str(out), *[f"--set={s}" for s in sets])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert lines[-1].startswith("error: training diverged: loss nan at epoch 1, step ")
    assert "no checkpoint was written" in lines[-1] and not out.exists()


def test_metrics_table_shows_the_computed_ks(tmp_path):
    data = tmp_path / "inter.csv"
    data.write_text(REPEATS_CSV)
    r = genrec(
        "train",
        "popularity",
        "--dataset",
        str(data),
        "--set",
        "eval.ks=[1,5,10]",
        "--out",
        str(tmp_path / "r"),
    )
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if "split" in line)
    columns = [c.strip() for c in header.strip("┃│ ").split("┃")]
    assert columns == ["split", "R@1", "N@1", "R@5", "N@5", "R@10", "N@10", "MRR", "Cov@10", "users"]
    assert "nan" not in r.stdout
    test_row = next(line for line in r.stdout.splitlines() if line.strip("│ ").startswith("test "))
    assert test_row.split("│")[2:9] == [" 0.0000 "] * 7  # every test target repeats a history item
