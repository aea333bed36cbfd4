"""Raw user and item ids: how a column's id dtype is decided, and the one raw <-> internal index map.

Ids are kept as the source gives them, as Int64 or String:
- a text source (CSV, TSV, JSON lines, P5 `sequential.txt`) is read as strings; a column becomes Int64 only when
  every value is a canonical integer (`str(int(v)) == v`), so `007`, `+7`, ` 7` and `7.0` keep the whole column
  as strings and `007` and `7` stay two ids;
- a typed source (Parquet, a DataFrame) keeps its integer or string dtype; any other dtype is a `DataError`.

Integers sort numerically and strings lexicographically (by code point), so every ordering is deterministic.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from genrec.errors import DataError

_SHOWN = 5  # unknown ids listed in an error message


def _canonical_ints(col: pl.Series) -> pl.Series:
    """Int64 for the strings that are canonical integers (`str(int(v)) == v`), null for the others."""
    ints = col.cast(pl.Int64, strict=False)
    same = (ints.cast(pl.String) == col).fill_null(False)
    return pl.select(pl.when(same).then(ints)).to_series().alias(col.name)


def ids_from_text(col: pl.Series) -> pl.Series:
    """A String column of ids read from text: Int64 if every non-null value is a canonical integer, else as is."""
    col = col.cast(pl.String)
    ints = _canonical_ints(col)
    return ints if ints.null_count() == col.null_count() else col


def ids_from_typed(col: pl.Series, where: str) -> pl.Series:
    """A typed column of ids: any integer dtype -> Int64, String (or Categorical/Enum) -> String.

    Raises DataError for any other dtype (floats, dates, ...) and for unsigned values beyond Int64.
    """
    dtype, name = col.dtype, col.name or "ids"
    if dtype.is_integer():
        try:
            return col.cast(pl.Int64)
        except pl.exceptions.InvalidOperationError:
            raise DataError(f"{where}: {name} has integers beyond the Int64 range") from None
    if dtype == pl.String:
        return col
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return col.cast(pl.String)  # category labels are the ids, verbatim
    if dtype == pl.Null:
        return col.cast(pl.String)  # all null: reported as missing ids by the caller
    raise DataError(f"{where}: {name} must hold integers or strings, not {dtype}")


def check_ids(col: pl.Series, where: str, source_name: str | None = None) -> None:
    """Raise DataError naming the column when any id is missing (null)."""
    nulls = col.null_count()
    if nulls:
        name = f" (column {source_name!r})" if source_name and source_name != col.name else ""
        rows = "1 row" if nulls == 1 else f"{nulls} rows"
        raise DataError(f"{where}: {col.name or 'id'}{name} missing in {rows}")


def match_dtype(col: pl.Series, dtype: pl.DataType) -> pl.Series:
    """`col` in `dtype` (Int64 or String) where its text is identical, null where it cannot match.

    Int64 -> String writes the canonical text; String -> Int64 keeps only canonical integers, so `"007"` never
    matches the integer 7.
    """
    if col.dtype == dtype:
        return col
    if dtype == pl.String:
        return col.cast(pl.String)
    return _canonical_ints(col.cast(pl.String))


def id_array(values) -> np.ndarray:
    """Raw ids as numpy: int64 for integers, object (Python str) for strings; empty -> int64."""
    col = _as_series(values, "ids")
    return col.to_numpy() if col.dtype == pl.String else col.to_numpy().astype(np.int64, copy=False)


def _as_series(values, where: str) -> pl.Series:
    """Raw ids (Series, numpy array, list; ints and strings may mix) as an Int64 or String Series."""
    if isinstance(values, pl.Series):
        col = values
    elif isinstance(values, np.ndarray) and values.dtype.kind != "O":
        col = pl.Series(values)
    else:
        items = _listed(values)
        try:
            col = pl.Series(items)
        except (TypeError, pl.exceptions.PolarsError):
            col = pl.Series([_text(v, where) for v in items], dtype=pl.String)
    if col.dtype == pl.Null and len(col) == 0:
        return col.cast(pl.Int64)
    if col.dtype == pl.Boolean:
        raise DataError(f"{where}: ids must be integers or strings, not booleans")
    return ids_from_typed(col, where)


def _listed(values) -> list:
    if isinstance(values, pl.Series):
        return values.to_list()
    if isinstance(values, np.ndarray):
        return values.tolist()
    if isinstance(values, str | int | np.integer):
        raise DataError(f"expected a list of ids, got the single id {values!r}")
    return list(values)


def _text(value, where: str) -> str:
    """One id of a list that mixes integers and strings, as its text."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return str(int(value))
    raise DataError(f"{where}: id {value!r} is neither an integer nor a string")


class IdMap:
    """Raw ids <-> internal indices: `ids[k]` has index `start + k` (items start at 1, users at 0).

    `ids` is the raw id of each index in order: numpy int64 for integer ids, object (Python str) for string ids.
    Built from a given order (a stored run's table) with `IdMap(ids)`, or as `Dataset.encode` orders ids with
    `IdMap.sorted(values)` (unique, ascending). Raises DataError on null, duplicate or non-int/str ids.
    """

    def __init__(self, ids, start: int = 0, kind: str = "item") -> None:
        self.kind = kind
        self.start = start
        col = _as_series(ids, f"{kind} ids").alias(f"{kind}_id")
        check_ids(col, f"{kind} id map")
        if col.n_unique() != len(col):
            dup = col.filter(col.is_duplicated()).unique(maintain_order=True).head(_SHOWN).to_list()
            raise DataError(f"{kind} id map: repeated ids {dup}")
        self._col = col
        self.ids = col.to_numpy() if col.dtype == pl.String else col.to_numpy().astype(np.int64, copy=False)

    @classmethod
    def sorted(cls, values, start: int = 0, kind: str = "item") -> IdMap:
        """The distinct values in ascending order (numeric for integers, lexicographic for strings)."""
        col = _as_series(values, f"{kind} ids")
        return cls(col.unique().sort(), start, kind)

    @classmethod
    def from_series(cls, col: pl.Series, start: int = 0, kind: str = "item") -> IdMap:
        """The map stored as a column (e.g. `item_id` of a run's items.parquet), row k = index start + k."""
        return cls(col, start, kind)

    def to_series(self, name: str | None = None) -> pl.Series:
        """The raw ids in index order as an Int64 or String column (what `from_series` reads back)."""
        return self._col.alias(name or f"{self.kind}_id")

    @property
    def dtype(self) -> pl.DataType:
        """pl.Int64 or pl.String."""
        return self._col.dtype

    def __len__(self) -> int:
        return len(self._col)

    def __repr__(self) -> str:
        return f"IdMap({len(self)} {self.kind} ids, {self.dtype}, from {self.start})"

    def lookup(self, values) -> pl.Series:
        """Internal index of each value (Int64, null where unknown); values are matched as `match_dtype` does."""
        col = match_dtype(_as_series(values, f"{self.kind} ids"), self.dtype)
        index = pl.Series(np.arange(self.start, self.start + len(self), dtype=np.int64))
        return col.replace_strict(self._col, index, default=None, return_dtype=pl.Int64)

    def index(self, values, missing: int | None = None) -> np.ndarray:
        """int64 [len(values)] internal indices of raw ids.

        Integer ids given as canonical text (`"7"`) and string ids given as integers (7 -> `"7"`) are matched,
        as `coerce` does. Unknown ids raise one-line DataError listing the first few, unless `missing` is given:
        then they get that index (e.g. 0, the padding item).
        """
        found = self.lookup(values)
        unknown = found.is_null()
        if unknown.any():
            if missing is None:
                bad = [v for v, u in zip(_listed(values), unknown.to_list()) if u]
                shown = ", ".join(repr(v) for v in bad[:_SHOWN]) + (", ..." if len(bad) > _SHOWN else "")
                raise DataError(
                    f"unknown {self.kind} id(s) {shown} ({len(bad)} of {len(found)}; "
                    + (
                        f"the catalogue has {len(self)} items)"
                        if self.kind == "item"
                        else f"the run knows {len(self)} {self.kind}s)"
                    )
                )
            found = found.fill_null(missing)
        return found.to_numpy().astype(np.int64, copy=False)

    def contains(self, values) -> np.ndarray:
        """bool [len(values)]: which raw ids have an index."""
        return self.lookup(values).is_not_null().to_numpy()

    def raw(self, indices) -> list:
        """The raw ids (Python int or str, as given) of internal indices; IndexError outside the map."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1) - self.start
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            bad = (idx[(idx < 0) | (idx >= len(self))] + self.start)[:_SHOWN].tolist()
            raise IndexError(f"{self.kind} indices {bad} outside {self.start}..{self.start + len(self) - 1}")
        return self.ids[idx].tolist()

    def coerce(self, value: int | str) -> int | str:
        """One id as a caller sends it (CLI text, JSON int or string) in this map's dtype.

        Integer map: 7 and "7" -> 7; "007", "+7", "7.0", "abc" cannot be an integer id and raise DataError
        (unknown id) rather than silently becoming another id. String map: "007" -> "007", 7 -> "7".
        Membership is not checked here (`index` does that). Booleans, floats and other types raise DataError.
        """
        if isinstance(value, bool) or not isinstance(value, int | str | np.integer | np.str_):
            raise DataError(f"{self.kind} id {value!r} must be an integer or a string")
        if self.dtype == pl.String:
            return str(value) if isinstance(value, str) else str(int(value))
        if not isinstance(value, str):
            return int(value)
        try:
            if str(int(value)) == value:
                return int(value)
        except ValueError:
            pass
        raise DataError(
            f"unknown {self.kind} id {value!r} ({self.kind} ids are integers written canonically: 7, not 007 or +7)"
        )
