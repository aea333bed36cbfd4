"""Atomic file writes and strict JSON: a reader (or a resumed run) sees the old file or the new one, never half
of one, and JSON never holds NaN or Infinity. Used by every layer that writes files.

A write that fails for a reason of the file system (a full disk, a file-size limit, a read-only place, a path
through a file) raises `StorageError` naming the file and the cause, and leaves no temporary file behind;
`check_out_dir` finds the avoidable ones before any work starts. The readers (`read_yaml`, `read_json`) turn a
damaged file into one line that names it.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

from genrec.errors import DataError, StorageError


def os_errno(error: BaseException) -> int | None:
    """The errno behind `error`: its own, that of an OSError it wraps (torch's writer raises a RuntimeError
    around the file object's OSError), or the one a Rust writer (safetensors, polars) quotes in its message."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    found = re.search(r"os error (\d+)", str(error))
    return int(found.group(1)) if found else None


def io_reason(error: BaseException) -> str:
    """The operating system's words for why `error` failed ("No space left on device", "File too large",
    "Permission denied"), else its first line."""
    code = os_errno(error)
    if code is not None:
        return os.strerror(code)
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _atomic(path: Path, write) -> None:
    """`write(tmp)` into a temporary file beside `path`, then an atomic rename. Any failure removes the temporary
    file; a failure of the file system raises StorageError (one line: the file and the cause)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, Exception) and os_errno(e) is not None:
            raise StorageError(f"cannot write {path}: {io_reason(e)}") from None
        raise


def check_out_dir(path: Path) -> None:
    """Raise StorageError (one line) when `path` cannot become or receive a directory of files: it names a file,
    a folder on its way is a file, or the nearest existing folder cannot be written. Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StorageError(f"cannot write into {path}: it is a file, not a folder")
    parent = path
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise StorageError(f"cannot create {path}: {parent} is a file, not a folder")
    try:
        probe = tempfile.TemporaryFile(dir=parent)  # os.access trusts permission bits; a read-only mount lies
    except OSError as e:
        raise StorageError(f"cannot write into {parent}: {io_reason(e)}") from None
    probe.close()


def read_text(path: Path) -> str:
    """A text file's content; DataError (one line) when it cannot be read or is not UTF-8 text."""
    try:
        return Path(path).read_text()
    except UnicodeDecodeError:
        raise DataError(f"{path} is damaged: not UTF-8 text") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {io_reason(e)}") from None


def read_yaml(path: Path):
    """A YAML file's content; DataError naming the file and the first problem when it is not valid YAML."""
    import yaml

    try:
        return yaml.safe_load(read_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DataError(f"{path} is damaged: not valid YAML{where}: {problem}") from None


def read_json(path: Path):
    """A JSON file's content; DataError naming the file and the position when it is not valid JSON."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is damaged: not valid JSON (line {e.lineno}: {e.msg})") from None


def write_text(path: Path, text: str) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    _atomic(path, w)


def write_bytes(path: Path, content: bytes) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_bytes(content))


def read_parquet(path: Path):
    """A Parquet file as a polars DataFrame; DataError (one line) when it is damaged or cannot be read."""
    import polars as pl

    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise DataError(f"{path} is damaged or unreadable ({io_reason(e)})") from None


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
