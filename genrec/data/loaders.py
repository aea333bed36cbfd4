"""Readers from source formats (and a user's DataFrame) into the canonical `Dataset`.

Each loader reads files only; finding them (data directories, downloads) is the registry's job. User and item
ids keep the source's form: text sources are read as strings and become Int64 only when every id is a canonical
integer, typed sources keep their integer or string dtype (the rule is in `genrec.data.ids`).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl

from genrec.data.ids import check_ids, ids_from_text, ids_from_typed
from genrec.data.schema import Dataset
from genrec.errors import DataError

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding=encoding) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def _interactions(
    user: pl.Series, item: pl.Series, timestamp=None, rating=None, position=None
) -> pl.DataFrame:
    n = len(user)
    return pl.DataFrame(
        {
            "user_id": user.alias("user_id"),
            "item_id": item.alias("item_id"),
            "timestamp": pl.Series(timestamp if timestamp is not None else [None] * n, dtype=pl.Int64),
            "position": np.arange(n, dtype=np.int64) if position is None else np.asarray(position),
            "rating": pl.Series(rating if rating is not None else [None] * n, dtype=pl.Float32),
        }
    )


def load_movielens_100k(folder: Path) -> Dataset:
    raw = pl.read_csv(
        folder / "u.data",
        separator="\t",
        has_header=False,
        new_columns=["user_id", "item_id", "rating", "timestamp"],
        schema_overrides={
            "user_id": pl.Int64,
            "item_id": pl.Int64,
            "rating": pl.Float32,
            "timestamp": pl.Int64,
        },
    )
    inter = raw.with_row_index("position").with_columns(pl.col("position").cast(pl.Int64))
    rows = [line.split("|") for line in _read_lines(folder / "u.item", encoding="latin-1")]
    items = pl.DataFrame(
        {
            "item_id": [int(r[0]) for r in rows],
            "title": [r[1] for r in rows],
            "release_date": [r[2] or None for r in rows],
            "categories": [[g for g, flag in zip(ML100K_GENRES, r[5:24]) if flag == "1"] for r in rows],
        }
    )
    users = None
    if (folder / "u.user").exists():
        urows = [line.split("|") for line in _read_lines(folder / "u.user", encoding="latin-1")]
        users = pl.DataFrame(
            {
                "user_id": [int(r[0]) for r in urows],
                "age": [int(r[1]) for r in urows],
                "gender": [r[2] for r in urows],
                "occupation": [r[3] for r in urows],
                "zip": [r[4] for r in urows],
            }
        )
    return Dataset("ml-100k", inter, items, users, source=str(folder))


def load_movielens_1m(folder: Path) -> Dataset:
    """All 1,000,209 ratings; timestamps exist only for users 1-2999 (see the data README).

    Users without timestamps are listed in `unordered_users`: their file order is not chronological, so
    sequential splits drop them (and say so) unless the config keeps them.
    """
    merged = folder / "derived" / "ratings_merged.csv.gz"
    if merged.exists():
        inter = pl.read_csv(
            merged,
            schema_overrides={
                "user_id": pl.Int64,
                "movie_id": pl.Int64,
                "rating": pl.Float32,
                "timestamp": pl.Int64,
            },
        ).rename({"movie_id": "item_id"})
    else:
        lines = _read_lines(
            folder / ("ratings.dat.gz" if (folder / "ratings.dat.gz").exists() else "ratings.dat")
        )
        parts = np.array([line.split("::") for line in lines], dtype=np.int64)
        inter = pl.DataFrame(
            {"user_id": parts[:, 0], "item_id": parts[:, 1], "rating": parts[:, 2], "timestamp": parts[:, 3]}
        )
    inter = inter.with_row_index("position").with_columns(pl.col("position").cast(pl.Int64))
    unordered = inter.filter(pl.col("timestamp").is_null())["user_id"].unique().sort().to_numpy()
    rows = [line.split("::") for line in _read_lines(folder / "movies.dat", encoding="latin-1")]
    items = pl.DataFrame(
        {
            "item_id": [int(r[0]) for r in rows],
            "title": [r[1] for r in rows],
            "categories": [r[2].split("|") for r in rows],
        }
    )
    users = None
    if (folder / "users.dat").exists():
        urows = [line.split("::") for line in _read_lines(folder / "users.dat", encoding="latin-1")]
        users = pl.DataFrame(
            {
                "user_id": [int(r[0]) for r in urows],
                "gender": [r[1] for r in urows],
                "age": [int(r[2]) for r in urows],
                "occupation": [r[3] for r in urows],
                "zip": [r[4] for r in urows],
            }
        )
    notes = []
    if len(unordered):
        notes.append(
            f"{len(unordered)} users have no timestamps (ML-1M copy: only users 1-2999 are timed); "
            "sequential splits drop them unless data.unordered_users=keep"
        )
    return Dataset("ml-1m", inter, items, users, unordered_users=unordered, source=str(folder), notes=notes)


def find_p5_sequence_file(folder: Path) -> Path | None:
    for name in ("sequential.txt", "sequential_data.txt"):
        if (folder / name).exists():
            return folder / name
    return None


def load_p5(folder: Path, name: str | None = None) -> Dataset:
    """P5 layout: `sequential.txt` (or `sequential_data.txt`), one line per user `user item item ...` in order;
    optional `items.jsonl` / `derived/items.jsonl` with `item_id`, `title`, `categories`.

    Ids are text: the user column and the item column are each Int64 when all their ids are canonical integers
    (the published Amazon files), strings otherwise.
    """
    path = find_p5_sequence_file(folder)
    if path is None:
        raise DataError(f"{folder}: no sequential.txt or sequential_data.txt (P5 layout)")
    users, items = [], []
    for line in _read_lines(path):
        ids = line.split()
        if len(ids) < 2:
            continue  # a user with no items carries nothing to learn or evaluate
        users.extend([ids[0]] * (len(ids) - 1))
        items.extend(ids[1:])
    if not users:
        raise DataError(f"{path}: no interactions")
    inter = _interactions(ids_from_text(pl.Series(users)), ids_from_text(pl.Series(items)))
    item_table = _read_item_text(folder)
    if item_table is None:
        item_table = pl.DataFrame({"item_id": inter["item_id"].unique().sort()})
    return Dataset(name or folder.name, inter, item_table, source=str(folder))


def _read_item_text(folder: Path) -> pl.DataFrame | None:
    for candidate in (folder / "items.jsonl", folder / "derived" / "items.jsonl"):
        if candidate.exists():
            return read_item_table(candidate)
    return None


def read_item_table(path: Path) -> pl.DataFrame:
    """Item text from JSONL / CSV / Parquet: `item_id`, optional `title`, `categories` (list or '|' string).

    Ids follow the loaders' rule: JSONL and CSV ids are text (JSON numbers count as their digits), Parquet keeps
    its integer or string dtype; `Dataset` then matches them to the interactions' id dtype. Raises DataError for
    a missing item_id column, missing ids, or ids that are neither integers nor strings.
    """
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        records = []
        for lineno, line in enumerate(_read_lines(path), start=1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path}:{lineno}: not valid JSON") from None
            cats = rec.get("categories") or []
            # Amazon metadata nests category paths: [["Beauty", "Makeup", ...]]; flatten keeping order.
            flat: list[str] = []
            for c in cats:
                for x in c if isinstance(c, list) else [c]:
                    if x not in flat:
                        flat.append(str(x))
            item_id = rec.get("item_id")
            if isinstance(item_id, bool) or not isinstance(item_id, int | str | None):
                raise DataError(f"{path}:{lineno}: item_id {item_id!r} is neither an integer nor a string")
            item_id = None if item_id is None else str(item_id)
            records.append({"item_id": item_id, "title": rec.get("title"), "categories": flat})
        table = pl.DataFrame(
            records, schema={"item_id": pl.Utf8, "title": pl.Utf8, "categories": pl.List(pl.Utf8)}
        )
        return _item_frame(table, str(path), text=True)
    if suffix == ".csv":
        return _item_frame(pl.read_csv(path, schema_overrides={"item_id": pl.Utf8}), str(path), text=True)
    if suffix == ".parquet":
        return _item_frame(pl.read_parquet(path), str(path), text=False)
    raise DataError(f"{path}: item table must be .jsonl, .csv or .parquet")


def _item_frame(table: pl.DataFrame, where: str, text: bool) -> pl.DataFrame:
    """An item table with checked ids (text or typed rule), '|'-separated categories split, first row per id."""
    if "item_id" not in table.columns:
        raise DataError(f"{where}: item table needs an item_id column (has {table.columns})")
    if "categories" in table.columns and table.schema["categories"] == pl.Utf8:
        table = table.with_columns(pl.col("categories").str.split("|"))
    ids = table["item_id"]
    check_ids(ids, where)
    table = table.with_columns(ids_from_text(ids) if text else ids_from_typed(ids, where))
    return table.unique("item_id", keep="first", maintain_order=True)


COLUMN_ALIASES = {
    "user_id": ("user_id", "user", "userid", "uid"),
    "item_id": ("item_id", "item", "itemid", "iid", "movie_id"),
    "timestamp": ("timestamp", "time", "ts", "datetime"),
    "rating": ("rating", "score", "label"),
}


def load_table(
    path: Path,
    columns: dict[str, str | None] | None = None,
    items_path: Path | None = None,
    unreadable_ratings: str = "error",
) -> Dataset:
    """A user's own interactions as CSV / TSV (ids read as text) or Parquet (ids keep their dtype).

    `columns` maps canonical names (user_id, item_id, timestamp, rating) to the file's names; unset ones are
    looked up among common aliases. Rows keep their file order as a tie-breaker for equal or missing times.
    The item table is `items_path`, else `items.jsonl` / `items.csv` beside the file, else ids only.
    A blank line anywhere in a text file (between rows or after the last one) is a DataError.
    Rating values that are not numbers follow `unreadable_ratings` (`read_ratings`).
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            raw = pl.read_parquet(path)
        elif suffix in (".csv", ".tsv", ".gz"):
            separator = "\t" if suffix == ".tsv" else ","
            header = pl.read_csv(path, separator=separator, n_rows=0).columns
            chosen = _choose_columns(header, columns, str(path))
            # Ids are read as text so that "007" and "7" stay two ids (genrec.data.ids decides the dtype), and
            # times too, so that fractional seconds are read from their digits, not from a float64 rounding.
            # Ratings as text as well, so that every value is read by one rule (`read_ratings`) whatever row it is on.
            as_text = {chosen[c]: pl.Utf8 for c in ("user_id", "item_id", "timestamp", "rating") if chosen[c]}
            raw = pl.read_csv(path, separator=separator, infer_schema_length=10000, schema_overrides=as_text)
        else:
            raise DataError(f"{path}: expected a .csv, .tsv or .parquet file")
    except pl.exceptions.NoDataError:
        raise DataError(f"{path}: file is empty") from None
    except pl.exceptions.ComputeError as e:
        raise DataError(f"{path}: cannot parse ({str(e).splitlines()[0]})") from None
    if suffix != ".parquet":
        _refuse_blank_lines(raw, path)
    if raw.height == 0:
        raise DataError(f"{path}: file has a header but no rows")
    if items_path is not None:
        items = read_item_table(items_path)
    else:
        sibling = next(
            (p for p in (path.parent / "items.jsonl", path.parent / "items.csv") if p.exists()), None
        )
        items = read_item_table(sibling) if sibling else None
    text = suffix != ".parquet"
    ds = _table_dataset(
        raw,
        path.stem,
        str(path),
        columns,
        text,
        items,
        unreadable_ratings=unreadable_ratings,
        line_offset=2 * text,
    )
    return ds


def _refuse_blank_lines(raw: pl.DataFrame, path: Path) -> None:
    """DataError naming the first blank line of a text data file, wherever it is (between rows or after the last
    one): a blank line is no interaction, and it often marks files pasted together or cut short. The newline that
    ends the last row is no blank line."""
    blank = pl.all_horizontal(
        [pl.col(c).is_null() | (pl.col(c).cast(pl.Utf8).str.strip_chars() == "") for c in raw.columns]
    )
    if not raw.select(blank.any()).item():
        return  # rows without values that are not blank lines (",,,") are left to the id checks, which name them
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                raise DataError(
                    f"{path}: line {n} is a blank line; remove it (one interaction per line, no empty lines, "
                    "also none at the end)"
                )


def dataset_from_frame(
    df, name: str = "dataframe", columns: dict[str, str | None] | None = None, items=None
) -> Dataset:
    """A Dataset from an in-memory pandas or Polars DataFrame of interactions (one row per interaction).

    `df` needs user and item id columns and may have `timestamp` (ints, date strings or datetimes) and `rating`;
    `columns` renames as in `load_table` (canonical name -> the frame's column; unset ones are found among the
    same aliases). Ids keep the frame's integer or string dtype (other dtypes raise DataError). Row order is the
    tie-breaker for equal or missing times. `items` is an optional item frame with `item_id`, `title`,
    `categories` (list of str or a '|'-separated string). Raises DataError (one line) for a missing column, no
    rows, missing ids, or a frame that is neither pandas nor Polars.
    """
    raw = _polars_frame(df, name)
    if raw.height == 0:
        raise DataError(f"{name}: the DataFrame has no rows")
    item_table = (
        None if items is None else _item_frame(_polars_frame(items, f"{name} items"), f"{name} items", False)
    )
    source = f"{type(df).__module__.split('.')[0]} DataFrame {name!r}"
    return _table_dataset(raw, name, source, columns, False, item_table, "columns={{'{}': ...}}")


def _polars_frame(df, where: str) -> pl.DataFrame:
    """A Polars DataFrame from a Polars (Lazy)DataFrame or, by duck-typing, a pandas one (pandas stays optional)."""
    if isinstance(df, pl.LazyFrame):
        return df.collect()
    if isinstance(df, pl.DataFrame):
        return df
    if type(df).__module__.split(".")[0] == "pandas" and hasattr(df, "columns"):
        try:
            return pl.from_pandas(df)
        except (ImportError, TypeError, ValueError, pl.exceptions.PolarsError) as e:
            raise DataError(
                f"{where}: cannot convert the pandas DataFrame ({str(e).splitlines()[0]})"
            ) from None
    raise DataError(f"{where}: expected a pandas or Polars DataFrame, got {type(df).__name__}")


def _choose_columns(
    available: list[str], columns: dict | None, where: str, setting: str = "data.columns.{}"
) -> dict[str, str | None]:
    """Canonical name -> source column: the `columns` mapping first, then the first alias present.

    Raises DataError when a mapped column is absent or no user / item id column is found; the message names
    `setting` (the config key, or the `columns` argument) as the fix.
    """
    columns = dict(columns or {})
    chosen: dict[str, str | None] = {}
    lowered = {c.lower(): c for c in available}
    for canonical, aliases in COLUMN_ALIASES.items():
        name = columns.get(canonical)
        if name:
            if name not in available:
                raise DataError(
                    f"{where}: column {name!r} (for {canonical}) not found; columns are {available}"
                )
        else:
            name = next((lowered[a] for a in aliases if a in lowered), None)
        if name is None and canonical in ("user_id", "item_id"):
            raise DataError(
                f"{where}: no {canonical} column (tried {', '.join(aliases)}); columns are {available}; "
                f"set {setting.format(canonical)}"
            )
        chosen[canonical] = name
    return chosen


def _table_dataset(
    raw: pl.DataFrame,
    name: str,
    source: str,
    columns: dict | None,
    text: bool,
    items: pl.DataFrame | None,
    setting: str = "data.columns.{}",
    unreadable_ratings: str = "error",
    line_offset: int = 0,
) -> Dataset:
    """The canonical Dataset of a table of interactions; `text` says ids were read as text (see the module).

    `source` (a path, or which DataFrame) starts every error message; `setting` names the column mapping;
    `line_offset` > 0 names rows by their line in a text file (row index + offset) rather than as "row N".
    """
    where = source
    chosen = _choose_columns(raw.columns, columns, where, setting)
    for canonical in ("user_id", "item_id"):  # rows without ids are named before their ratings
        check_ids(raw[chosen[canonical]].alias(canonical), where, chosen[canonical])
    notes = []
    rating_name = chosen["rating"]
    if rating_name:
        row = "line {}" if line_offset else "row {}"
        ratings, keep = read_ratings(
            raw[rating_name], f"{where}: column {rating_name!r}", unreadable_ratings, row, line_offset or 1
        )
        if keep is not None:
            notes.append(
                f"dropped {int((~keep).sum())} rows whose {rating_name!r} is not a number "
                "(data.unreadable_ratings=drop)"
            )
            raw, ratings = raw.filter(keep), ratings.filter(keep)
            if raw.height == 0:
                raise DataError(f"{where}: no row has a readable {rating_name!r}")
    else:
        ratings = pl.Series([None] * raw.height, dtype=pl.Float32)
    out = {}
    for canonical in ("user_id", "item_id"):
        col = raw[chosen[canonical]].alias(canonical)
        out[canonical] = (
            ids_from_text(col) if text else ids_from_typed(col, f"{where} (column {chosen[canonical]!r})")
        )
    ts_name = chosen["timestamp"]
    sub_second = None
    if ts_name is not None:
        out["timestamp"], sub_second = read_times(raw[ts_name], f"{where}: column {ts_name!r}")
    else:
        out["timestamp"] = pl.Series([None] * raw.height, dtype=pl.Int64)
    out["rating"] = ratings.alias("rating")
    inter = pl.DataFrame(out).with_row_index("position").with_columns(pl.col("position").cast(pl.Int64))
    if sub_second is not None and sub_second.any():
        # Timestamps are kept in whole seconds; the position carries the exact order of events within one
        # second (file order where the exact times tie too), so sorting by (timestamp, position) is exact.
        exact = pl.DataFrame({"s": out["timestamp"], "sub": sub_second, "row": np.arange(raw.height)})
        order = exact.with_row_index("i").sort(["s", "sub", "row"], nulls_last=True)["i"].to_numpy()
        position = np.empty(raw.height, dtype=np.int64)
        position[order] = np.arange(raw.height)
        inter = inter.with_columns(pl.Series("position", position))
        notes.append(
            "timestamps have sub-second parts: events are ordered by the exact time, stored in seconds"
        )
    if items is None:
        items = pl.DataFrame({"item_id": inter["item_id"].unique().sort()})
    return Dataset(name, inter, items, source=source, notes=notes)


def read_ratings(
    col: pl.Series, where: str, unreadable: str = "error", row: str = "row {}", first: int = 1
) -> tuple[pl.Series, pl.Series | None]:
    """A rating / label column read as numbers -> (Float32 ratings, rows to keep or None).

    Every value must be a finite number: numeric text ("4", " 4.5 ", "-1", "1e1") is read as such, booleans as
    0 / 1. Text that is not a number ("five", "5 stars", "N/A"), NaN, infinities and empty cells are refused
    with a DataError naming `where` (the file and column), how many and an example (`row` formats its number,
    counted from `first`); with `unreadable="drop"` those rows are dropped instead (keep mask returned). A
    column with no value at all counts as no ratings (all null, no error). Values are never rounded or clipped:
    the scale is read later (`genrec.data.feedback`)."""
    if col.dtype == pl.Boolean or col.dtype.is_numeric():
        values, present = col.cast(pl.Float64), col.is_not_null()
    else:
        text = col.cast(pl.Utf8, strict=False).str.strip_chars().replace("", None)
        values, present = text.cast(pl.Float64, strict=False), text.is_not_null()
    if not present.any():
        return pl.Series([None] * len(col), dtype=pl.Float32), None
    bad = (values.is_null() | values.is_nan() | values.is_infinite()).fill_null(True)
    if not bad.any():
        return values.cast(pl.Float32), None
    if unreadable == "drop":
        return values.cast(pl.Float32), ~bad
    first_bad = int(bad.arg_true()[0])
    shown = col[first_bad]
    example = (
        "an empty cell" if shown is None or (isinstance(shown, str) and not shown.strip()) else repr(shown)
    )
    raise DataError(
        f"{where}: {int(bad.sum())} of {len(col)} ratings are not numbers (e.g. {row.format(first_bad + first)}: "
        f"{example}); fix them, or drop those rows with --set data.unreadable_ratings=drop"
    )


NS = 1_000_000_000  # nanoseconds a second
_DECIMAL = r"^[+-]?(\d+\.?\d*|\.\d+)$"
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def read_times(col: pl.Series, where: str) -> tuple[pl.Series, np.ndarray]:
    """A timestamp column read exactly -> (whole unix seconds (floor) as Int64, nulls kept; [n] int64 nanoseconds
    within that second, 0 where missing): together they order events exactly.

    Accepted: integer or fractional unix seconds (numbers, or numeric strings read digit by digit up to
    nanoseconds), date / datetime strings (ISO 8601 and the other formats polars infers; sub-second parts and UTC
    offsets kept) and Parquet date / datetime columns. Empty cells are missing times. Anything else is refused
    with a DataError naming `where` and an example value: a value that cannot be read, NaN or infinite numbers,
    times before 1970 (-1 marks a missing time downstream), more than 9 decimal places, mixed date formats.
    """
    n = len(col)
    if col.dtype == pl.Utf8:
        col = col.str.strip_chars().replace("", None)
        numeric = col.str.contains(_NUMBER)
        if numeric.any() and not numeric.fill_null(True).all():
            wrong = numeric.not_() & col.is_not_null()
            raise DataError(
                f"{where}: {int(wrong.sum())} timestamps are not numbers among unix seconds "
                f"(e.g. {col.filter(wrong)[0]!r})"
            )
        if numeric.any() and col.str.contains(_DECIMAL).fill_null(True).all():
            seconds, sub = _decimal_seconds(col, where)
        elif numeric.any():
            seconds, sub = _float_seconds(col.cast(pl.Float64), where)
        else:
            seconds, sub = _split_ns(_datetime_ns(col, where))
    elif col.dtype.is_integer():
        seconds, sub = col.cast(pl.Int64), pl.Series([0] * n, dtype=pl.Int64)
    elif col.dtype.is_float():
        seconds, sub = _float_seconds(col.cast(pl.Float64), where)
    elif col.dtype == pl.Date:
        seconds, sub = _split_ns(col.cast(pl.Datetime("ns")).dt.epoch("ns"))
    elif isinstance(col.dtype, pl.Datetime):
        seconds, sub = _split_ns(col.dt.cast_time_unit("ns").dt.epoch("ns"))
    elif col.dtype == pl.Null:
        seconds, sub = pl.Series([None] * n, dtype=pl.Int64), pl.Series([0] * n, dtype=pl.Int64)
    else:
        raise DataError(f"{where}: timestamps of type {col.dtype} cannot be read; give unix seconds or dates")
    negative = seconds.fill_null(0) < 0
    if negative.any():
        raise DataError(
            f"{where}: {int(negative.sum())} timestamps lie before 1970 (e.g. {col.filter(negative)[0]!r}); "
            "give unix seconds >= 0"
        )
    return seconds.cast(pl.Int64), sub.fill_null(0).cast(pl.Int64).to_numpy()


def _split_ns(ns: pl.Series) -> tuple[pl.Series, pl.Series]:
    return ns // NS, ns % NS


def _decimal_seconds(col: pl.Series, where: str) -> tuple[pl.Series, pl.Series]:
    """Decimal strings ("1700000000.123") -> exact (floor seconds, nanoseconds), by their digits."""
    parts = col.str.split_exact(".", 1)
    whole = parts.struct.field("field_0")
    frac = parts.struct.field("field_1").fill_null("")
    long = frac.str.len_chars() > 9
    if long.any():
        raise DataError(f"{where}: timestamp {col.filter(long)[0]!r} has more than 9 decimal places")
    seconds = whole.str.replace(r"^\+", "").replace({"": "0", "-": "-0"}).cast(pl.Int64, strict=False)
    too_big = seconds.is_null() & col.is_not_null()
    if too_big.any():
        raise DataError(f"{where}: timestamp {col.filter(too_big)[0]!r} is out of range")
    sub = frac.str.pad_end(9, "0").replace("", "0").cast(pl.Int64)
    negative = whole.str.starts_with("-").fill_null(False) & (sub > 0)
    # -1.25 s is 2 s before 1970 plus 0.75 s (a floor, as for every other input); refused below anyway.
    seconds = pl.select(pl.when(negative).then(seconds - 1).otherwise(seconds)).to_series()
    sub = pl.select(pl.when(negative).then(NS - sub).otherwise(sub)).to_series()
    return seconds, sub


def _float_seconds(col: pl.Series, where: str) -> tuple[pl.Series, pl.Series]:
    """Float seconds -> (floor seconds, rounded nanoseconds): as exact as the float, and in the same order."""
    bad = col.is_nan().fill_null(False) | col.is_infinite().fill_null(False)
    if bad.any():
        raise DataError(
            f"{where}: {int(bad.sum())} timestamps are NaN or infinite (e.g. {col.filter(bad)[0]!r})"
        )
    floor = col.floor()
    too_big = floor.abs().fill_null(0) >= 2.0**63
    if too_big.any():
        raise DataError(f"{where}: timestamp {col.filter(too_big)[0]!r} is out of range")
    sub = ((col - floor) * NS).round().clip(0, NS - 1)
    return floor.cast(pl.Int64), sub.cast(pl.Int64)


def _datetime_ns(col: pl.Series, where: str) -> pl.Series:
    """Date / datetime strings -> nanoseconds since 1970 (UTC where an offset is given)."""
    try:
        parsed = col.str.to_datetime(time_unit="ns", strict=False)
    except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError):
        parsed = None
    failed = col.is_not_null() if parsed is None else parsed.is_null() & col.is_not_null()
    if failed.any():
        raise DataError(
            f"{where}: {int(failed.sum())} of {col.is_not_null().sum()} timestamps cannot be read as unix seconds "
            f"or dates (e.g. {col.filter(failed)[0]!r}); use one format (ISO 8601, e.g. 2020-01-31 12:00:00) "
            "or unix seconds"
        )
    return parsed.dt.epoch("ns")
