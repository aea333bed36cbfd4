"""Content fingerprints of data: a short hash that changes when any event or id changes, and only then.

A run, a cached dataset and a sweep point store the fingerprint of the data they were made from, so that a run
resumed, re-evaluated or reused on changed data is an error rather than a silent mix (see docs/data.md). The hash
reads each column's memory as numpy arrays (no Python object per row): blake2b over the column's name, dtype, null
mask and values; strings as their byte lengths and their bytes joined; list columns as their lengths and their
flattened values. Row order counts (it is the order of events within equal times).
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

VERSION = 1  # bump when the hashing rule changes: older fingerprints then no longer match


def _update(h, series: pl.Series) -> None:
    h.update(f"{series.name}:{series.dtype}:{len(series)}".encode())
    nulls = series.is_null()
    if nulls.any():
        h.update(np.packbits(nulls.to_numpy()).tobytes())
    dtype = series.dtype
    if dtype.is_numeric() or dtype == pl.Boolean:
        values = series.fill_null(0) if nulls.any() else series
        h.update(np.ascontiguousarray(values.to_numpy()).tobytes())
    elif dtype in (pl.Utf8, pl.Categorical) or isinstance(dtype, pl.Enum):
        text = series.cast(pl.Utf8).fill_null("")
        h.update(text.str.len_bytes().to_numpy().tobytes())
        h.update(text.str.join("").item().encode())
    elif isinstance(dtype, pl.List):
        h.update(series.list.len().fill_null(0).to_numpy().tobytes())
        _update(h, series.explode().drop_nulls().alias(f"{series.name}[]"))
    else:  # dates, structs and other rare types: their text form
        _update(h, series.cast(pl.Utf8, strict=False).alias(series.name))


def frames_fingerprint(*frames: pl.DataFrame | None) -> str:
    """16 hex digits identifying the content of `frames` (None counts as an absent table)."""
    h = hashlib.blake2b(f"genrec-data-v{VERSION}".encode(), digest_size=8)
    for frame in frames:
        if frame is None:
            h.update(b"<none>")
            continue
        h.update(f"<table {frame.width}>".encode())
        for column in frame.get_columns():
            _update(h, column)
    return h.hexdigest()


def arrays_fingerprint(**arrays: np.ndarray | None) -> str:
    """16 hex digits identifying named numpy arrays (object arrays of str are hashed as text)."""
    h = hashlib.blake2b(f"genrec-arrays-v{VERSION}".encode(), digest_size=8)
    for name, values in arrays.items():
        if values is None:
            h.update(f"{name}:<none>".encode())
        elif values.dtype == object:
            _update(h, pl.Series(name, values.astype(str)))
        else:
            h.update(f"{name}:{values.dtype}:{values.shape}".encode())
            h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()
