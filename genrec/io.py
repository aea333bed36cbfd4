"""Atomic file writes and strict JSON: a reader (or a resumed run) sees the old file or the new one, never half
of one, and JSON never holds NaN or Infinity. Used by every layer that writes files."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    _atomic(path, w)


def write_bytes(path: Path, content: bytes) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_bytes(content))


def finite(obj):
    """`obj` with every non-finite float (NaN, +-inf) replaced by None, numpy scalars made Python ones, tuples
    made lists: JSON has no NaN or Infinity, and a metric that is undefined (the AUC of a user with one class)
    or broken (a diverged model) must read as null, not as a number or an unparseable token."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(obj, indent: int | None = 2) -> str:
    """Strict JSON (`finite` first, then NaN / Infinity refused): what every JSON writer of the project uses."""
    return json.dumps(finite(obj), indent=indent, allow_nan=False)


def write_json(path: Path, obj) -> None:
    write_text(path, json_text(obj) + "\n")


def write_parquet(path: Path, table) -> None:
    """A polars DataFrame as Parquet, atomically."""
    _atomic(path, lambda tmp: table.write_parquet(tmp))
