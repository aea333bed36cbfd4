import numpy as np
import polars as pl
import pytest

from genrec.data import filters
from genrec.data.batching import length_bucketed_batches, pad_left
from genrec.data.registry import load_dataset
from genrec.data.split import leave_one_out, temporal
from genrec.errors import DataError


def test_bundled_ml100k_matches_published_statistics():
    s = load_dataset("ml-100k").stats()
    assert (s["users"], s["items"], s["interactions"]) == (943, 1682, 100_000)
    assert s["timestamps"] == "all"


def test_p5_folder_loads_in_order_with_text(tiny_p5):
    ds = load_dataset(str(tiny_p5))
    seq = ds.encode()
    assert seq.n_users == 12
    # User 1 starts at item 2 and counts up: order is the file order.
    assert seq.item_ids[seq.row(0) - 1].tolist() == [2, 3, 4, 5, 6]
    assert ds.items.filter(pl.col("item_id") == 3)["title"][0] == "Item 3"
    assert ds.items["categories"][0].to_list() == ["Cat", "Item"]


def test_csv_with_aliases_and_datetime(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("uid,iid,time\n1,10,2024-01-02\n1,11,2024-01-01\n2,10,2024-01-03\n2,12,2024-01-04\n")
    seq = load_dataset(str(path)).encode()
    assert seq.item_ids[seq.row(0) - 1].tolist() == [11, 10]  # sorted by time, not file order


@pytest.mark.parametrize(
    "content,message",
    [
        ("", "empty"),
        ("user_id,item_id\n", "no rows"),
        ("user,thing\n1,2\n", "no item_id column"),
        ("user_id,item_id\n1,\n", "item_id missing in 1 row"),
        ("uid,iid\n,5\n1,6\n", "user_id \\(column 'uid'\\) missing"),
    ],
)
def test_bad_csv_gives_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))


def test_unknown_dataset_and_bad_p5(tmp_path):
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("no-such-dataset")
    (tmp_path / "p5").mkdir()
    (tmp_path / "p5" / "sequential.txt").write_text("1\n2\n")
    with pytest.raises(DataError, match="no interactions"):
        load_dataset(str(tmp_path / "p5"))


def _toy(tmp_path):
    path = tmp_path / "toy.csv"
    rows = ["user_id,item_id,timestamp"]
    # user 1: 5 items; user 2: 4 items incl. a repeat; user 3: 2 items; item 9 seen once.
    for u, items in {1: [1, 2, 3, 4, 5], 2: [1, 2, 1, 3], 3: [2, 9]}.items():
        rows += [f"{u},{i},{100 * u + t}" for t, i in enumerate(items)]
    path.write_text("\n".join(rows) + "\n")
    return load_dataset(str(path))


def test_filters(tmp_path):
    ds = _toy(tmp_path)
    assert filters.deduplicate(ds).interactions.height == 10
    core = filters.k_core(ds, 2)
    assert 9 not in core.interactions["item_id"].to_list()
    assert 3 not in core.interactions["user_id"].to_list()  # user 3 falls below 2 once item 9 goes
    assert filters.min_sequence_length(ds, 5).interactions["user_id"].unique().to_list() == [1]


def test_leave_one_out(tmp_path):
    split = leave_one_out(_toy(tmp_path).encode())
    assert len(split.test) == 2  # user 3 has only 2 items: training only
    assert split.train.lengths().tolist() == [3, 2, 2]
    # user 1: history for test = first 4 items, target = 5th
    assert split.test.history.items[:4].tolist() == [1, 2, 3, 4] and split.test.targets[0] == 5
    assert split.valid.targets[0] == 4 and split.valid.history.lengths()[0] == 3


def test_temporal_split_has_no_leakage():
    ds = load_dataset("ml-100k")
    split = temporal(ds.encode(), 0.8, 0.9)
    cut_v, cut_t = split.details["valid_cutoff"], split.details["test_cutoff"]
    assert split.train.timestamps.max() < cut_v
    assert split.valid.history.timestamps.max() < cut_v
    assert split.test.history.timestamps.max() < cut_t
    seq = split.sequences
    target_ts = seq.timestamps[seq.offsets[split.test.users] + split.test.history.lengths()]
    assert (target_ts >= cut_t).all()


def test_pad_left_keeps_most_recent():
    offsets, values = np.array([0, 3, 3, 8]), np.arange(1, 9)
    out = pad_left(offsets, values, np.array([0, 1, 2]), max_len=4)
    assert out.tolist() == [[0, 1, 2, 3], [0, 0, 0, 0], [5, 6, 7, 8]]


def test_length_buckets_cover_every_row_once():
    lengths = np.random.default_rng(0).integers(1, 50, size=1000)
    batches = length_bucketed_batches(lengths, 32, np.random.default_rng(1), bucket_factor=4)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < np.ptp(lengths) / 2


@pytest.mark.parametrize("bad", ["five", "5 stars", "N/A", "nan", ""])
def test_unreadable_ratings_are_an_error_naming_column_and_row_or_dropped(tmp_path, bad):
    path = tmp_path / "log.csv"
    path.write_text(f"user_id,item_id,timestamp,rating\n1,10,100,5\n1,11,101,{bad}\n2,10,102,4\n2,12,103,3\n")
    with pytest.raises(
        DataError, match=r"log.csv: column 'rating': 1 of 4 ratings are not numbers \(e.g. line 3"
    ):
        load_dataset(str(path))
    ds = load_dataset(str(path), unreadable_ratings="drop")
    assert ds.interactions["rating"].to_list() == [5.0, 4.0, 3.0]
    assert any("dropped 1 rows whose 'rating' is not a number" in n for n in ds.notes)


def test_ratings_keep_their_values_and_an_empty_column_means_none(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,score\n1,10, 7.5\n1,11,-1\n2,10,10\n2,12,1e1\n")
    assert load_dataset(str(path)).interactions["rating"].to_list() == [7.5, -1.0, 10.0, 10.0]
    path.write_text("user_id,item_id,rating\n1,10,\n1,11,\n")
    assert load_dataset(str(path)).interactions["rating"].null_count() == 2


def test_a_blank_line_anywhere_is_refused_naming_it(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id\n1,10\n1,11\n")  # the newline that ends the last row is no blank line
    assert load_dataset(str(path)).interactions.height == 2
    for text, line in (
        ("user_id,item_id\n1,10\n1,11\n\n", 4),  # the file ends in a blank line
        ("user_id,item_id\n1,10\n\n1,11\n", 3),
        ("user_id,item_id\n1,10\n  \n1,11\n", 3),
    ):
        path.write_text(text)
        with pytest.raises(DataError, match=f"line {line} is a blank line"):
            load_dataset(str(path))


def test_duplicate_rows_unseen_targets_and_repeated_targets_are_reported(tmp_path, caplog):
    path = tmp_path / "log.csv"
    # User 1's last two rows are one event written twice; user 2's test target (item 99) is never trained on.
    path.write_text(
        "user_id,item_id,timestamp\n1,10,1\n1,11,2\n1,12,3\n1,12,3\n2,10,1\n2,11,2\n2,13,3\n2,99,4\n3,11,1\n"
    )
    ds = load_dataset(str(path))
    assert any(n.startswith("1 exact duplicate rows") for n in ds.notes)
    with caplog.at_level("WARNING", logger="genrec.data"):
        split = leave_one_out(ds.encode())
    assert split.details["test_targets_not_in_training"] == 2  # item 12 (user 1) and item 99 (user 2)
    assert split.details["valid_targets_not_in_training"] == 2  # item 12 and item 13
    assert split.details["test_target_repeats_valid_target"] == 1
    assert "1 of 2 users' test target is the same item" in caplog.text


def test_dataset_cache_tells_apart_same_named_folders(tmp_path):
    """Two P5 folders named alike, with files of the same names, sizes and times, are two datasets."""
    import os

    first = tmp_path / "a" / "beauty"
    second = tmp_path / "b" / "beauty"
    for folder, items in ((first, "1 2 3 4"), (second, "1 5 6 7")):
        folder.mkdir(parents=True)
        (folder / "sequential.txt").write_text(f"{items}\n")
        os.utime(folder / "sequential.txt", ns=(1_700_000_000 * 10**9,) * 2)
    one, two = load_dataset(str(first)), load_dataset(str(second))
    assert one.interactions["item_id"].to_list() == [2, 3, 4]
    assert two.interactions["item_id"].to_list() == [5, 6, 7]
    assert one.fingerprint() != two.fingerprint()
    assert load_dataset(str(first)).fingerprint() == one.fingerprint()  # from the cache, checked


def test_fingerprint_follows_content_only(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp,rating\n1,10,100,5\n1,11,101,4\n2,10,102,3\n")
    base = load_dataset(str(path)).fingerprint()
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "log.csv").write_text(path.read_text())
    assert load_dataset(str(tmp_path / "copy" / "log.csv")).fingerprint() == base
    for changed in ("1,10,100,5\n1,12,101,4\n2,10,102,3\n", "1,10,100,5\n1,11,101,4\n2,10,102,2\n"):
        path.write_text("user_id,item_id,timestamp,rating\n" + changed)
        ds = load_dataset(str(path))
        assert ds.fingerprint() != base
        assert (
            ds.encode().fingerprint()
            != load_dataset(str(tmp_path / "copy" / "log.csv")).encode().fingerprint()
        )


# ---- time values read exactly or refused


def order_of(tmp_path, text, name="inter.csv"):
    from genrec.data.loaders import load_table

    path = tmp_path / name
    path.write_text(text)
    seq = load_table(path).encode()
    return [seq.item_ids[seq.row(u) - 1].tolist() for u in range(seq.n_users)], seq


def test_fractional_unix_seconds_keep_their_order(tmp_path):
    """User 1's times 100.9, 100.1, 100.5, 200.0 order its items 20, 30, 10, 40 (truncating to 100 used to leave
    file order). User 2's two events at 5.25 tie exactly: file order (50, 60). Stored times are whole seconds."""
    rows, seq = order_of(
        tmp_path,
        "user_id,item_id,timestamp\n1,10,100.9\n1,20,100.1\n1,30,100.5\n1,40,200.0\n2,60,7\n2,50,5.25\n2,60,5.25\n",
    )
    assert rows == [[20, 30, 10, 40], [50, 60, 60]]
    assert seq.timestamps.tolist() == [100, 100, 100, 200, 5, 5, 7]


def test_date_strings_with_milliseconds_and_offsets_keep_their_order(tmp_path):
    """Milliseconds order events within one second; a UTC offset is honoured: 01:00+02:00 is 23:00 UTC the day
    before, so it comes first. A column mixing the two formats is refused, not half read."""
    from genrec.errors import DataError

    text = "user,item,time\n1,1,2020-01-01 00:00:00.900\n1,2,2020-01-01 00:00:00.100\n1,3,2020-01-01 00:00:00.500\n"
    rows, seq = order_of(tmp_path, text)
    assert rows == [[2, 3, 1]] and seq.timestamps.tolist() == [1577836800] * 3
    rows, seq = order_of(
        tmp_path, "user,item,time\n2,4,2020-01-01T00:30:00+00:00\n2,5,2020-01-01T01:00:00+02:00\n"
    )
    assert rows == [[5, 4]] and seq.timestamps.tolist() == [1577833200, 1577838600]
    with pytest.raises(DataError, match="1 of 4 timestamps cannot be read"):
        order_of(tmp_path, text + "2,4,2020-01-01T00:30:00+00:00\n")


def test_parquet_datetimes_with_microseconds_keep_their_order(tmp_path):
    import datetime as dt

    import polars as pl

    from genrec.data.loaders import load_table

    t0 = dt.datetime(2021, 5, 1, 12, 0, 0)
    pl.DataFrame(
        {
            "user_id": [1, 1, 1],
            "item_id": [7, 8, 9],
            "timestamp": [t0 + dt.timedelta(microseconds=3), t0 + dt.timedelta(microseconds=1), t0],
        }
    ).write_parquet(tmp_path / "t.parquet")
    seq = load_table(tmp_path / "t.parquet").encode()
    assert seq.item_ids[seq.row(0) - 1].tolist() == [9, 8, 7]


@pytest.mark.parametrize(
    "value,needle",
    [
        ("yesterday", "1 timestamps are not numbers among unix seconds (e.g. 'yesterday')"),
        ("1e999", "NaN or infinite"),
        ("-5", "before 1970"),
        ("100.1234567891", "more than 9 decimal places"),
    ],
)
def test_unreadable_times_are_refused_with_one_clear_line(tmp_path, value, needle):
    from genrec.errors import DataError

    with pytest.raises(DataError, match="column 'timestamp'") as err:
        order_of(tmp_path, f"user_id,item_id,timestamp\n1,1,10\n1,2,{value}\n")
    assert needle in str(err.value) and "\n" not in str(err.value)
    # A date column with one bad value is refused too, never read as "no time".
    with pytest.raises(DataError, match="e.g. 'soon'"):
        order_of(tmp_path, "user_id,item_id,timestamp\n1,1,2020-01-01\n1,2,soon\n")
