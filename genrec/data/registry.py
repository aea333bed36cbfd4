"""Named datasets, where to find them, and a Parquet cache of the canonical tables.

A dataset SPEC is a registered name (`ml-100k`, `ml-1m`, `amazon-beauty`, `amazon-sports`), a folder in the P5
layout, or a CSV / Parquet file of interactions.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from genrec.data import loaders
from genrec.data.ids import id_array
from genrec.data.schema import Dataset
from genrec.errors import DataError

BUNDLED = Path(__file__).parent / "bundled"
CACHE_VERSION = 2  # 2: keyed by the resolved source path; entries store and check the data's fingerprint


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    loader: Callable[[Path], Dataset]
    marker: str  # a file whose presence identifies the folder
    url: str | None = None  # official archive, used only when files are missing
    md5: str | None = None


REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            "ml-100k",
            "MovieLens 100K ratings with timestamps, titles, genres, demographics (bundled)",
            loaders.load_movielens_100k,
            "u.data",
            "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
            "0e33842e24a9c977be4e0107933c0723",
        ),
        DatasetInfo(
            "ml-1m",
            "MovieLens 1M ratings; timestamps only for users 1-2999 in this copy",
            loaders.load_movielens_1m,
            "movies.dat",
            "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
            "c4d9eecfca2ab87c1945afe126590906",
        ),
        DatasetInfo(
            "amazon-beauty",
            "Amazon Beauty 5-core sequences (P5 layout), titles and categories",
            lambda folder: loaders.load_p5(folder, "amazon-beauty"),
            "sequential.txt",
        ),
        DatasetInfo(
            "amazon-sports",
            "Amazon Sports 5-core sequences (P5 layout), no real item text",
            lambda folder: loaders.load_p5(folder, "amazon-sports"),
            "sequential_data.txt",
        ),
    ]
}


def data_dirs(extra: str | Path | None = None) -> list[Path]:
    """Search order: --data-dir, $GENREC_DATA, ./data (in the working directory, then beside the package's repo)."""
    dirs: list[Path] = []
    if extra:
        dirs.append(Path(extra))
    if os.environ.get("GENREC_DATA"):
        dirs.extend(Path(p) for p in os.environ["GENREC_DATA"].split(os.pathsep) if p)
    repo = Path(__file__).resolve().parents[2]
    dirs += [Path("data"), repo / "data"]
    return dirs


def locate(name: str, data_dir: str | Path | None = None) -> Path | None:
    info = REGISTRY[name]
    for d in data_dirs(data_dir):
        folder = d / name
        if (folder / info.marker).exists():
            return folder
    if (BUNDLED / name / info.marker).exists():
        return BUNDLED / name
    return None


def load_dataset(
    spec: str,
    data_dir: str | Path | None = None,
    columns: dict | None = None,
    items_path: str | None = None,
    download: bool = False,
    unreadable_ratings: str = "error",
) -> Dataset:
    """Resolve a SPEC into a Dataset, using the Parquet cache when the source has not changed.

    `unreadable_ratings` ("error" or "drop") is what a CSV / Parquet file's rating values that are not numbers
    get (`loaders.read_ratings`). The dataset's notes count its exact duplicate rows (`duplicate_note`)."""
    ds = _load(spec, data_dir, columns, items_path, download, unreadable_ratings)
    note = duplicate_note(ds)
    if note:
        ds.notes.append(note)
    return ds


def _load(spec, data_dir, columns, items_path, download, unreadable_ratings) -> Dataset:
    if spec in REGISTRY:
        folder = locate(spec, data_dir)
        if folder is None:
            if download and REGISTRY[spec].url:
                folder = _download(REGISTRY[spec], Path(data_dir or "data"))
            else:
                where = ", ".join(str(d) for d in data_dirs(data_dir))
                hint = " (or --set data.download=true)" if REGISTRY[spec].url else ""
                raise DataError(
                    f"dataset {spec!r} not found in {where}; point --set data.data_dir=DIR or $GENREC_DATA at it{hint}"
                )
        return _cached(spec, [folder], lambda: REGISTRY[spec].loader(folder))
    path = Path(spec)
    if path.is_dir():
        if loaders.find_p5_sequence_file(path) is None:
            raise DataError(f"{path}: folder has no sequential.txt / sequential_data.txt (P5 layout)")
        return _cached(path.resolve().name, [path], lambda: loaders.load_p5(path.resolve()))
    if path.is_file():
        if path.stat().st_size == 0:
            raise DataError(f"{path}: file is empty")
        return loaders.load_table(path, columns, Path(items_path) if items_path else None, unreadable_ratings)
    known = ", ".join(REGISTRY)
    raise DataError(
        f"unknown dataset {spec!r}: not a registered name ({known}), a P5 folder or a CSV/Parquet file"
    )


def duplicate_note(ds: Dataset) -> str | None:
    """A note counting rows identical in user, item, time and rating to an earlier row (without times: to the
    user's previous row), or None. They are kept; `data.dedup` or `data.clean.exact_duplicates` drop them."""
    inter = ds.interactions
    if ds.has_timestamps:
        n = inter.height - inter.select(["user_id", "item_id", "timestamp", "rating"]).n_unique()
        what = "user, item, time and rating"
    else:
        order = inter.sort(["user_id", "position"])
        same = (
            (order["user_id"] == order["user_id"].shift(1))
            & (order["item_id"] == order["item_id"].shift(1))
            & order["rating"].eq_missing(order["rating"].shift(1))
        )
        n, what = int(same.fill_null(False).sum()), "user, item and rating as the user's previous row"
    if not n:
        return None
    return (
        f"{n} exact duplicate rows (same {what}), kept; data.dedup=first or data.clean.exact_duplicates=true "
        "drops them"
    )


def _source_key(paths: list[Path]) -> str:
    """Where the source is (resolved absolute paths) and the state of its files (names, sizes, mtimes): two
    folders with the same name, size and times are two keys."""
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for root in paths:
        root = Path(root).resolve()
        h.update(f"{root}\n".encode())
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("GENREC_CACHE", Path.home() / ".cache" / "genrec"))


def _cached(name: str, sources: list[Path], build: Callable[[], Dataset]) -> Dataset:
    """The dataset of `sources` from the cache when an entry for the same resolved paths and file states holds
    data with the fingerprint it recorded; else built, and stored with its paths and fingerprint. A damaged or
    mismatching entry is rebuilt (the cache is never trusted over the source)."""
    resolved = [str(Path(p).resolve()) for p in sources]
    folder = cache_root() / "datasets" / f"{name}-{_source_key(sources)}"
    cached = _read_entry(folder, resolved)
    if cached is not None:
        return cached
    ds = build()
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
        ds.interactions.write_parquet(tmp / "interactions.parquet")
        ds.items.write_parquet(tmp / "items.parquet")
        if ds.users is not None:
            ds.users.write_parquet(tmp / "users.parquet")
        meta = {
            "name": ds.name,
            "source": ds.source,
            "paths": resolved,
            "fingerprint": ds.fingerprint(),
            "notes": ds.notes,
            "unordered_users": ds.unordered_users.tolist(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        shutil.rmtree(folder, ignore_errors=True)  # a damaged entry of the same key
        os.replace(tmp, folder)  # atomic: a reader sees a whole cache entry or none
    except OSError:
        shutil.rmtree(locals().get("tmp", folder.parent / ".none"), ignore_errors=True)  # cache is optional
    return ds


def _read_entry(folder: Path, resolved: list[str]) -> Dataset | None:
    """The cache entry in `folder` if it is whole, was made from `resolved` and still has its fingerprint."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("paths") != resolved:
            return None
        users = pl.read_parquet(folder / "users.parquet") if (folder / "users.parquet").exists() else None
        ds = Dataset(
            meta["name"],
            pl.read_parquet(folder / "interactions.parquet"),
            pl.read_parquet(folder / "items.parquet"),
            users,
            unordered_users=id_array(meta["unordered_users"]),
            source=meta["source"],
            notes=meta["notes"],
        )
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError, DataError):
        return None
    return ds if ds.fingerprint() == meta.get("fingerprint") else None


def _download(info: DatasetInfo, root: Path) -> Path:
    """Fetch the official archive, check its md5, unpack to root/name -> that folder.

    Nothing is written before the archive has arrived whole and checked, and a failure while unpacking removes
    what was written (and `root`, if this call created it): a failed download leaves no empty or half folder.
    A network failure is a one-line DataError."""
    try:
        with urllib.request.urlopen(info.url, timeout=120) as r:  # noqa: S310 - fixed https address
            data = r.read()
    except (
        OSError,
        http.client.HTTPException,
    ) as e:  # URLError, timeouts and refused connections are OSErrors
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"cannot download {info.name} from {info.url} ({reason}); without a network, put its files in "
            f"{root / info.name} or point --data-dir / GENREC_DATA at a folder holding {info.name}/"
        ) from None
    if hashlib.md5(data).hexdigest() != info.md5:
        raise DataError(f"{info.url}: checksum mismatch, refusing to use it")
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{info.name}-"))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            z.extractall(tmp)
        if not (tmp / info.name / info.marker).exists():
            raise DataError(f"{info.url}: the archive has no {info.name}/{info.marker}")
        os.replace(tmp / info.name, root / info.name)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(root, ignore_errors=True)
        if isinstance(e, zipfile.BadZipFile):
            raise DataError(f"{info.url}: not a readable zip archive") from None
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return root / info.name
