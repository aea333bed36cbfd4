"""User and item ids kept as the source gives them (strings or integers), and the raw <-> internal IdMap."""

import re

import numpy as np
import polars as pl
import pytest

from genrec.data import IdMap, dataset_from_frame
from genrec.data.registry import load_dataset
from genrec.errors import DataError

ALICE = "3f2b8c1e-9d4a-4f6e-8b7a-2c1d0e9f8a7b"
BOB = "a1b2c3d4-e5f6-4711-8899-aabbccddeeff"


def _write(path, text):
    path.write_text(text)
    return str(path)


def _string_log(tmp_path):
    """UUID users, ASIN-like items and both `007` and `7` as items."""
    rows = [
        (ALICE, "B00ABC1234", 30),
        (ALICE, "007", 10),
        (ALICE, "7", 20),
        (BOB, "7", 5),
        (BOB, "B00XYZ9876", 6),
        (BOB, "B00ABC1234", 7),
    ]
    body = "".join(f"{u},{i},{t}\n" for u, i, t in rows)
    return _write(tmp_path / "log.csv", "user_id,item_id,timestamp\n" + body)


def _raw_rows(seq):
    """Each user's sequence as raw ids, keyed by the raw user id."""
    return {u: seq.item_map.raw(seq.row(k)) for k, u in enumerate(seq.user_map.raw(range(seq.n_users)))}


def test_csv_with_string_ids_keeps_them_verbatim(tmp_path):
    ds = load_dataset(_string_log(tmp_path))
    assert ds.interactions.schema["item_id"] == pl.String
    assert ds.interactions.schema["user_id"] == pl.String
    seq = ds.encode()
    # "007" and "7" are two items; strings sort lexicographically.
    assert seq.item_ids.tolist() == ["007", "7", "B00ABC1234", "B00XYZ9876"]
    assert seq.item_ids.dtype == object and all(type(i) is str for i in seq.item_ids)
    assert seq.user_ids.tolist() == [ALICE, BOB]
    assert _raw_rows(seq) == {ALICE: ["007", "7", "B00ABC1234"], BOB: ["7", "B00XYZ9876", "B00ABC1234"]}


def test_canonical_integer_csv_gives_int64_ids(tmp_path):
    path = _write(tmp_path / "log.csv", "user_id,item_id,timestamp\n2,10,1\n2,9,2\n1,10,3\n-3,100,4\n")
    ds = load_dataset(path)
    assert ds.interactions.schema["user_id"] == pl.Int64
    assert ds.interactions.schema["item_id"] == pl.Int64
    seq = ds.encode()
    assert seq.item_ids.dtype == np.int64 and seq.item_ids.tolist() == [9, 10, 100]  # numeric, not text order
    assert seq.user_ids.dtype == np.int64 and seq.user_ids.tolist() == [-3, 1, 2]
    assert _raw_rows(seq) == {-3: [100], 1: [10], 2: [10, 9]}


@pytest.mark.parametrize("variant", ["007", "+7", " 7", "7.0", "-0", "99999999999999999999"])
def test_a_non_canonical_integer_keeps_the_column_as_strings(tmp_path, variant):
    path = _write(tmp_path / "log.csv", f'user_id,item_id\n1,7\n1,"{variant}"\n2,8\n')
    ds = load_dataset(path)
    assert ds.interactions.schema["item_id"] == pl.String
    assert ds.interactions.schema["user_id"] == pl.Int64  # each column is decided on its own
    seq = ds.encode()
    assert seq.n_items == 3 and sorted(seq.item_ids.tolist()) == sorted(["7", variant, "8"])


def test_item_table_is_matched_to_the_interaction_ids(tmp_path):
    # String interaction ids, an items.csv whose ids all look like integers (read as Int64): matched as text.
    log = _write(tmp_path / "log.csv", "user,item\nu1,B01\nu1,7\nu2,7\nu2,10\n")
    _write(tmp_path / "items.csv", "item_id,title,categories\n7,Seven,A|B\n10,Ten,\n")
    ds = load_dataset(log)
    assert ds.items.schema["item_id"] == pl.String
    titles = dict(zip(ds.items["item_id"].to_list(), ds.items["title"].to_list()))
    assert titles == {"7": "Seven", "10": "Ten"}
    # Integer interaction ids, an item table with "007" (cannot be the integer 7) and "7": only "7" matches.
    (tmp_path / "int").mkdir()
    log = _write(tmp_path / "int" / "log.csv", "user,item\n1,7\n2,8\n")
    _write(
        tmp_path / "int" / "items.jsonl",
        '{"item_id": "007", "title": "Bond"}\n{"item_id": 7, "title": "Seven"}\n',
    )
    ds = load_dataset(log)
    assert ds.items.schema["item_id"] == pl.Int64
    assert ds.items.select("item_id", "title").rows() == [(7, "Seven")]
    assert any("ignored 1 item table rows" in n for n in ds.notes)


def test_p5_folder_with_string_ids(tmp_path):
    (tmp_path / "p5").mkdir()
    _write(tmp_path / "p5" / "sequential.txt", "u1 B01 007 7\nu2 7 B01\n")
    seq = load_dataset(str(tmp_path / "p5")).encode()
    assert seq.item_ids.tolist() == ["007", "7", "B01"]
    assert _raw_rows(seq) == {"u1": ["B01", "007", "7"], "u2": ["7", "B01"]}


def test_parquet_keeps_its_id_dtype(tmp_path):
    frame = pl.DataFrame({"user_id": pl.Series([1, 2], dtype=pl.Int32), "item_id": ["7", "8"]})
    frame.write_parquet(tmp_path / "log.parquet")
    ds = load_dataset(str(tmp_path / "log.parquet"))
    # A typed string column stays strings even when its values look like integers.
    assert ds.interactions.schema["item_id"] == pl.String
    assert ds.interactions.schema["user_id"] == pl.Int64
    frame.with_columns(pl.Series("item_id", [7.0, 8.0])).write_parquet(tmp_path / "float.parquet")
    with pytest.raises(DataError, match="item_id must hold integers or strings, not Float64"):
        load_dataset(str(tmp_path / "float.parquet"))


@pytest.mark.parametrize(
    "ids,start,raw_type",
    [(np.array([3, 10, 7]), 1, int), (np.array(["B00ABC1234", "007", "7"], dtype=object), 0, str)],
)
def test_idmap_round_trips(tmp_path, ids, start, raw_type):
    m = IdMap(ids, start=start)
    assert len(m) == 3 and m.ids.tolist() == ids.tolist()
    idx = m.index(ids[::-1])
    assert idx.dtype == np.int64 and idx.tolist() == [start + 2, start + 1, start]
    raw = m.raw(idx)
    assert raw == ids[::-1].tolist() and all(type(r) is raw_type for r in raw)
    assert m.raw(np.array([start])) == [ids[0]]
    # Stored as a column (a run's items.parquet) and read back: same ids, same dtype, same indices.
    m.to_series().to_frame().write_parquet(tmp_path / "items.parquet")
    back = IdMap.from_series(pl.read_parquet(tmp_path / "items.parquet")["item_id"], start=start)
    assert back.dtype == m.dtype and back.ids.tolist() == m.ids.tolist()
    assert back.index(ids).tolist() == m.index(ids).tolist()
    with pytest.raises(IndexError):
        m.raw([start + 3])


def test_idmap_coerce_and_unknown_ids():
    ints = IdMap([3, 7, 10], start=1)
    assert ints.dtype == pl.Int64
    assert ints.coerce("7") == 7 and ints.coerce(7) == 7 and type(ints.coerce(np.int64(7))) is int
    assert ints.index(["7", 10]).tolist() == [2, 3]  # canonical text of an integer id matches
    for bad in ("007", "+7", " 7", "7.0", "seven"):
        with pytest.raises(DataError, match=re.escape(f"unknown item id {bad!r}")):
            ints.coerce(bad)  # never silently another id
    with pytest.raises(DataError, match=r"unknown item id\(s\) '007', 99 \(2 of 3"):
        ints.index(["007", 99, 3])
    strings = IdMap(["007", "7", "B00ABC1234"], start=1)
    assert strings.dtype == pl.String
    assert strings.coerce(7) == "7" and strings.coerce("007") == "007"
    assert strings.index([7, "007"]).tolist() == [2, 1]
    with pytest.raises(DataError, match="unknown user id"):
        IdMap(["a"], kind="user").index(["b"])
    assert strings.index(["x", "7"], missing=0).tolist() == [0, 2]
    for bad in (True, 7.0, None):
        with pytest.raises(DataError, match="must be an integer or a string"):
            strings.coerce(bad)
    with pytest.raises(DataError, match="repeated ids"):
        IdMap(["a", "b", "a"])


def test_encode_in_a_given_index(tmp_path):
    """Re-encoding in a stored run's order: same indices for known ids, new users after, unknown items dropped."""
    seq = load_dataset(_string_log(tmp_path)).encode()
    items, users = seq.item_map.to_series(), seq.user_map.to_series()
    log = tmp_path / "more"
    log.mkdir()
    path = _write(log / "log.csv", f"user_id,item_id\nnewcomer,7\n{BOB},B00ABC1234\n{BOB},NEW\n")
    ds = load_dataset(path)
    again = ds.encode(items.to_numpy(), users.to_numpy())
    assert again.item_ids.tolist() == seq.item_ids.tolist()
    assert again.user_ids.tolist() == [ALICE, BOB, "newcomer"]
    assert _raw_rows(again) == {ALICE: [], BOB: ["B00ABC1234"], "newcomer": ["7"]}
    assert any("dropped 1 interactions with items outside the catalogue" in n for n in ds.notes)


def _frame():
    return pl.DataFrame(
        {
            "user_id": [ALICE, ALICE, BOB, ALICE, BOB],
            "item_id": ["B00ABC1234", "007", "7", "7", "B00ABC1234"],
            "timestamp": [3, 1, 5, 2, 4],
            "rating": [5.0, 3.0, 4.0, 1.0, 2.0],
        }
    )


def _same_sequences(a, b):
    for field in ("user_ids", "item_ids", "offsets", "items", "timestamps", "ratings"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.tolist() == y.tolist(), field


@pytest.mark.parametrize("integer_ids", [False, True])
def test_dataset_from_polars_frame_equals_the_csv(tmp_path, integer_ids):
    frame = _frame()
    if integer_ids:
        frame = frame.with_columns(pl.col("user_id").rank("dense").cast(pl.Int64), pl.col("timestamp") * 7)
        frame = frame.with_columns(pl.Series("item_id", [30, 2, 10, 10, 30]))
    frame.write_csv(tmp_path / "log.csv")
    from_csv = load_dataset(str(tmp_path / "log.csv")).encode()
    from_frame = dataset_from_frame(frame).encode()
    _same_sequences(from_frame, from_csv)
    assert from_frame.item_ids.dtype == (np.int64 if integer_ids else object)
    assert dataset_from_frame(frame.lazy()).encode().items.tolist() == from_csv.items.tolist()


def test_dataset_from_pandas_frame_equals_the_csv(tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas is optional and not installed")
    frame = _frame()
    frame.write_csv(tmp_path / "log.csv")
    from_pandas = dataset_from_frame(pd.DataFrame(frame.to_dict(as_series=False))).encode()
    _same_sequences(from_pandas, load_dataset(str(tmp_path / "log.csv")).encode())


def test_dataset_from_frame_columns_items_and_errors():
    frame = _frame().rename({"user_id": "customer", "item_id": "sku"})
    items = pl.DataFrame(
        {"item_id": ["007", "7"], "title": ["Bond", "Seven"], "categories": ["Film|Spy", ""]}
    )
    ds = dataset_from_frame(
        frame, name="shop", columns={"user_id": "customer", "item_id": "sku"}, items=items
    )
    assert ds.name == "shop" and ds.encode().n_items == 3
    assert ds.items.filter(pl.col("item_id") == "007")["categories"][0].to_list() == ["Film", "Spy"]
    with pytest.raises(DataError, match=r"no user_id column .* set columns=\{'user_id'"):
        dataset_from_frame(frame)
    with pytest.raises(DataError, match="column 'buyer' \\(for user_id\\) not found"):
        dataset_from_frame(frame, columns={"user_id": "buyer", "item_id": "sku"})
    with pytest.raises(DataError, match="item_id missing in 1 row"):
        dataset_from_frame(pl.DataFrame({"user_id": [1, 2], "item_id": ["a", None]}))
    with pytest.raises(DataError, match="not Float64"):
        dataset_from_frame(pl.DataFrame({"user_id": [1, 2], "item_id": [1.0, 2.0]}))
    with pytest.raises(DataError, match="no rows"):
        dataset_from_frame(pl.DataFrame({"user_id": [], "item_id": []}))
    with pytest.raises(DataError, match="expected a pandas or Polars DataFrame, got dict"):
        dataset_from_frame({"user_id": [1], "item_id": [2]})


def test_ml100k_keeps_int64_ids():
    ds = load_dataset("ml-100k")  # the bundled copy, else $GENREC_DATA
    assert ds.interactions.schema["user_id"] == pl.Int64 and ds.interactions.schema["item_id"] == pl.Int64
    assert ds.items.schema["item_id"] == pl.Int64
    seq = ds.encode()
    assert seq.item_ids.dtype == np.int64 and seq.item_ids.tolist() == list(range(1, 1683))
    assert seq.user_ids.dtype == np.int64 and seq.user_ids.tolist() == list(range(1, 944))
    # User 1's first rated items by time (ties by file order), as before ids could be strings.
    assert seq.item_map.raw(seq.row(0)[:3]) == [168, 172, 165]
