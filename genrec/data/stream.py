"""Large interaction logs straight into `Sequences`, column by column: no Python object per event.

`scan_sequences(path)` reads a Parquet file (or a folder / glob of them) or a CSV with Polars' lazy engine: only
the id and time columns are read, ids become contiguous indices in the engine (dense rank: items 1..I and users
0..U-1 in ascending raw-id order, as `Dataset.encode` numbers them), rows are sorted by (user, time, file order)
and the result arrives as numpy arrays that become the CSR `Sequences` the splits and models read. Peak memory is
a few int64 columns of the log (about 40 bytes an event); 100M events load in minutes on two cores
(benchmarks/scale.py).

What it leaves out, against `load_table`: item text, ratings and the sub-second time rule. Ids follow
`genrec.data.ids`: CSV ids are read as text and become integers when every one is a canonical integer (`007` stays
text); Parquet ids keep their integer or string type. Null ids raise DataError.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from genrec.data.loaders import _choose_columns
from genrec.data.schema import Sequences
from genrec.errors import DataError


def scan_table(path: str | Path) -> pl.LazyFrame:
    """A lazy frame over a Parquet file / folder / glob, or a CSV / TSV (ids and times read as text)."""
    text = str(path)
    p = Path(text)
    if p.is_dir():
        text = str(p / "*.parquet")
    if text.endswith(".parquet") or p.is_dir():
        return pl.scan_parquet(text)
    if text.endswith((".csv", ".tsv", ".csv.gz")):
        return pl.scan_csv(text, separator="\t" if text.endswith(".tsv") else ",", infer_schema=False)
    raise DataError(f"{path}: expected Parquet (file, folder or glob) or a .csv / .tsv file")


def scan_sequences(path: str | Path, columns: dict[str, str | None] | None = None) -> Sequences:
    """Chronological per-user sequences of the log at `path` (see the module). `columns` maps user_id /
    item_id / timestamp to the file's names (unset: the usual aliases, as `load_table`). Timestamps must be
    integer unix seconds (or absent: file order). Raises DataError (one line) for a missing column or null ids."""
    lf = scan_table(path)
    where = str(path)
    chosen = _choose_columns(lf.collect_schema().names(), columns, where)
    ts = chosen["timestamp"]
    lf = lf.select(
        pl.col(chosen["user_id"]).alias("user"),
        pl.col(chosen["item_id"]).alias("item"),
        (pl.col(ts).cast(pl.Int64) if ts else pl.lit(None, dtype=pl.Int64)).alias("ts"),
    ).with_row_index("row")
    nulls = lf.select(pl.col("user").null_count(), pl.col("item").null_count()).collect()
    if nulls.row(0) != (0, 0):
        raise DataError(f"{where}: {sum(nulls.row(0))} null user or item ids")
    schema = lf.collect_schema()
    text = [c for c in ("user", "item") if schema[c] == pl.String]
    if text:  # ids read as text become integers when every one is a canonical integer (genrec.data.ids)
        same = [(pl.col(c).cast(pl.Int64, strict=False).cast(pl.String) == pl.col(c)).fill_null(False).all()
                for c in text]  # fmt: skip
        canonical = lf.select(same).collect().row(0)
        lf = lf.with_columns(pl.col(c).cast(pl.Int64) for c, ok in zip(text, canonical) if ok)
    item_ids = lf.select(pl.col("item").unique().sort()).collect(engine="streaming")["item"]
    user_ids = lf.select(pl.col("user").unique().sort()).collect(engine="streaming")["user"]
    coded = (
        lf.select(
            (pl.col("user").rank("dense") - 1).cast(pl.Int64).alias("u"),
            pl.col("item").rank("dense").cast(pl.Int64).alias("i"),
            "ts",
            "row",
        )
        .sort(["u", "ts", "row"], nulls_last=True)
        .select("u", "i", "ts")
        .collect(engine="streaming")
    )
    users = coded["u"].to_numpy()
    counts = np.bincount(users, minlength=len(user_ids))
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    times = coded["ts"]
    timestamps = None if times.null_count() == len(times) else times.fill_null(-1).to_numpy()
    items = coded["i"].to_numpy()
    del coded, users
    return Sequences(
        user_ids=user_ids.to_numpy(),
        item_ids=item_ids.to_numpy(),
        offsets=offsets,
        items=items,
        timestamps=timestamps,
    )
