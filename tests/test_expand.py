"""Fractal expansion (`genrec expand`) keeps the source's statistics; the streaming loader equals `encode`."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data.expand import expand, reduced_matrix
from genrec.data.registry import load_dataset
from genrec.data.stream import scan_sequences
from genrec.errors import DataError

QUANTILES = [0.25, 0.5, 0.75, 0.9, 0.99]


def relative_quantiles(counts: np.ndarray) -> np.ndarray:
    counts = counts[counts > 0].astype(float)
    return np.quantile(counts / counts.mean(), QUANTILES)


@pytest.fixture(scope="module")
def source():
    return load_dataset("ml-100k").encode()


@pytest.mark.parametrize("kind, tolerance", [("uniform", 0.12), ("blocks", 0.6)])
def test_expansion_keeps_sizes_and_degree_shapes(source, tmp_path, kind, tolerance):
    meta = expand(source, 4, tmp_path, reduced=kind, seed=1)
    seq = scan_sequences(tmp_path / "interactions.parquet")
    n = len(source.items)
    assert abs(len(seq.items) - 4 * n) < 0.01 * 4 * n and meta["interactions"] == len(seq.items)
    m, k = meta["user_copies"], meta["item_copies"]
    assert seq.n_users <= m * source.n_users and seq.n_items <= k * source.n_items
    assert seq.n_users > 0.95 * m * source.n_users  # nearly every user copy keeps some events
    for count, src in (
        (np.bincount(seq.items)[1:], np.bincount(source.items)[1:]),  # item popularity
        (np.diff(seq.offsets), np.diff(source.offsets)),  # user activity
    ):
        ratio = relative_quantiles(count) / relative_quantiles(src)
        assert np.all(np.abs(np.log(ratio)) < np.log1p(tolerance)), (kind, ratio)
    # Every user's events are in time order, and each user copy reads its source user's items in order.
    table = pl.read_parquet(tmp_path / "interactions.parquet")
    assert table.group_by("user_id").agg(pl.col("timestamp").diff().min().alias("d"))["d"].min() >= 0
    first = table.filter(pl.col("user_id") == 1)["item_id"].to_numpy() % source.n_items
    src = source.row(0) % source.n_items
    assert np.isin(first, src).all()


def test_reduced_matrix_sums_to_the_factor_and_refuses_a_small_shape(source):
    k = reduced_matrix(source, 4, 5, 10.0)
    assert k.shape == (4, 5) and abs(k.sum() - 10.0) < 1e-6 and k.max() <= 1.0 and k.std() > 0
    with pytest.raises(DataError, match="at least"):
        reduced_matrix(source, 2, 2, 5.0)


def test_scan_sequences_equals_encode(tmp_path):
    ds = load_dataset("ml-100k")
    path = tmp_path / "log.parquet"
    ds.interactions.select("user_id", "item_id", "timestamp").write_parquet(path)
    ds.interactions.select("user_id", "item_id", "timestamp").write_csv(tmp_path / "log.csv")
    want = ds.encode()
    for got in (scan_sequences(path), scan_sequences(tmp_path / "log.csv")):
        assert np.array_equal(got.offsets, want.offsets)
        assert np.array_equal(got.items, want.items)
        assert np.array_equal(got.timestamps, want.timestamps)
    assert scan_sequences(path).user_ids.tolist() == want.user_ids.tolist()
    with pytest.raises(DataError, match="no user_id"):
        pl.DataFrame({"a": [1], "item_id": [2]}).write_parquet(tmp_path / "bad.parquet")
        scan_sequences(tmp_path / "bad.parquet")


def test_expand_command(tmp_path):
    out = tmp_path / "big"
    done = CliRunner().invoke(app, ["expand", "ml-100k", "--factor", "2", "--out", str(out)])
    assert done.exit_code == 0, done.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["factor"] == 2 and abs(meta["interactions"] - 200_000) < 2_000
    again = CliRunner().invoke(app, ["expand", "ml-100k", "--factor", "2", "--out", str(out)])
    assert again.exit_code != 0 and "not empty" in str(again.exception)  # main() prints it as one line
