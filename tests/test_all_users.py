"""`genrec recommend RUN --all-users --out FILE`: every user's top-k streamed to Parquet, the same lists as
`recommend --user` gives, whichever way the catalogue is scored."""

import subprocess
import sys

import polars as pl
import pytest
import torch

from genrec.config import load_config
from genrec.inference.all_users import recommend_all_users
from genrec.runs import load_run, train_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained runs: SASRec with a history offset (item vectors) and popularity (score only)."""
    from conftest import write_p5

    rows = [[u] + [(u * 3 + j) % 15 + 1 for j in range(4 + u % 5)] for u in range(1, 31)]
    data = write_p5(tmp_path_factory.mktemp("all") / "data", rows, {i: f"Item {i}" for i in range(1, 16)})
    out = {}
    for name, sets in (
        ("sasrec", ["model.dim=16", "model.max_len=6", "model.history_bias=true", "train.epochs=2"]),
        ("popularity", []),
    ):
        torch.manual_seed(0)
        cfg = load_config(name, sets, str(data))
        train_run(cfg, tmp_path_factory.mktemp(name) / "run", progress=False)
        out[name] = load_run(tmp_path_factory.getbasetemp() / f"{name}0" / "run")
    return out


@pytest.mark.parametrize("name", ["sasrec", "popularity"])
@pytest.mark.parametrize("chunk", [4, None])
@pytest.mark.parametrize("include_seen", [False, True])
def test_every_users_list_is_what_recommend_gives(runs, name, chunk, include_seen, tmp_path):
    run = runs[name]
    path = tmp_path / "recs.parquet"
    n = recommend_all_users(run, path, k=5, include_seen=include_seen, batch_size=7, chunk=chunk)
    recs = pl.read_parquet(path)
    assert recs.columns == ["user_id", "rank", "item_id", "score"] and recs.height == n
    assert (
        recs["user_id"].dtype == run.users["user_id"].dtype
        and recs["item_id"].dtype == run.items["item_id"].dtype
    )
    for user in run.users["user_id"].to_list():
        mine = recs.filter(pl.col("user_id") == user).sort("rank")
        expected = run.recommend(user=user, k=5, exclude_seen=not include_seen)
        assert mine["rank"].to_list() == list(range(1, expected.height + 1))
        assert mine["item_id"].to_list() == expected["item_id"].to_list(), user
        # the same scores up to float rounding (other matmul shapes: one user against batches of 7)
        assert mine["score"].to_list() == pytest.approx(expected["score"].to_list(), abs=1e-5)


def test_the_command_writes_the_file_and_refuses_bad_arguments(runs, tmp_path):
    run = runs["sasrec"]
    out = tmp_path / "recs.parquet"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "genrec",
            "recommend",
            str(run.dir),
            "--all-users",
            "--out",
            str(out),
            "-k",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    recs = pl.read_parquet(out)
    assert recs.height == 3 * run.users.height and set(recs["rank"]) == {1, 2, 3}
    assert not list(tmp_path.glob("*.part"))
    # Bad arguments are input errors (the command prints them as one `error:` line and exits with status 2).
    from typer.testing import CliRunner

    from genrec.cli import app
    from genrec.errors import GenrecError

    for args, needle in (
        (["--all-users"], "add --out"),
        (["--out", str(out)], "goes with --all-users"),
        (["--all-users", "--out", str(tmp_path / "x.csv")], "give a .parquet file"),
        (["--all-users", "--out", str(out), "--user", "1"], "takes no --user"),
    ):
        result = CliRunner().invoke(app, ["recommend", str(run.dir), *args])
        assert isinstance(result.exception, GenrecError) and needle in str(result.exception), result.output
