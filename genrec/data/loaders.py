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
    path: Path, columns: dict[str, str | None] | None = None, items_path: Path | None = None
) -> Dataset:
    """A user's own interactions as CSV / TSV (ids read as text) or Parquet (ids keep their dtype).

    `columns` maps canonical names (user_id, item_id, timestamp, rating) to the file's names; unset ones are
    looked up among common aliases. Rows keep their file order as a tie-breaker for equal or missing times.
    The item table is `items_path`, else `items.jsonl` / `items.csv` beside the file, else ids only.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            raw = pl.read_parquet(path)
        elif suffix in (".csv", ".tsv", ".gz"):
            separator = "\t" if suffix == ".tsv" else ","
            header = pl.read_csv(path, separator=separator, n_rows=0).columns
            chosen = _choose_columns(header, columns, str(path))
            # Ids are read as text so that "007" and "7" stay two ids (genrec.data.ids decides the dtype).
            as_text = {chosen[c]: pl.Utf8 for c in ("user_id", "item_id")}
            raw = pl.read_csv(path, separator=separator, infer_schema_length=10000, schema_overrides=as_text)
        else:
            raise DataError(f"{path}: expected a .csv, .tsv or .parquet file")
    except pl.exceptions.NoDataError:
        raise DataError(f"{path}: file is empty") from None
    except pl.exceptions.ComputeError as e:
        raise DataError(f"{path}: cannot parse ({str(e).splitlines()[0]})") from None
    if raw.height == 0:
        raise DataError(f"{path}: file has a header but no rows")
    if items_path is not None:
        items = read_item_table(items_path)
    else:
        sibling = next(
            (p for p in (path.parent / "items.jsonl", path.parent / "items.csv") if p.exists()), None
        )
        items = read_item_table(sibling) if sibling else None
    return _table_dataset(raw, path.stem, str(path), columns, suffix != ".parquet", items)


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
) -> Dataset:
    """The canonical Dataset of a table of interactions; `text` says ids were read as text (see the module).

    `source` (a path, or which DataFrame) starts every error message; `setting` names the column mapping.
    """
    where = source
    chosen = _choose_columns(raw.columns, columns, where, setting)
    out = {}
    for canonical in ("user_id", "item_id"):
        col = raw[chosen[canonical]].alias(canonical)
        check_ids(col, where, chosen[canonical])
        out[canonical] = (
            ids_from_text(col) if text else ids_from_typed(col, f"{where} (column {chosen[canonical]!r})")
        )
    ts_name = chosen["timestamp"]
    if ts_name is not None:
        ts = raw[ts_name]
        if ts.dtype == pl.Utf8:
            parsed = ts.str.to_datetime(strict=False)
            ts = (
                parsed.dt.epoch("s") if parsed.null_count() < len(parsed) else ts.cast(pl.Int64, strict=False)
            )
        elif ts.dtype.is_temporal():
            ts = ts.cast(pl.Datetime("us")).dt.epoch("s")
        out["timestamp"] = ts.cast(pl.Int64, strict=False)
    else:
        out["timestamp"] = pl.Series([None] * raw.height, dtype=pl.Int64)
    rating_name = chosen["rating"]
    out["rating"] = (
        raw[rating_name].cast(pl.Float32, strict=False)
        if rating_name
        else pl.Series([None] * raw.height, dtype=pl.Float32)
    )
    inter = pl.DataFrame(out).with_row_index("position").with_columns(pl.col("position").cast(pl.Int64))
    if items is None:
        items = pl.DataFrame({"item_id": inter["item_id"].unique().sort()})
    return Dataset(name, inter, items, source=source)
