"""Where a run's data came from, and whether it is still the same: resolved paths and content fingerprints.

A run directory (meta.json `data`), a cached dataset and a sweep point record `data_record(ds)`; resuming,
re-evaluating or reusing them on data whose fingerprint differs is a one-line DataError (`check_same_data`).
Paths in a data config are stored absolute (`resolve_data_paths`), so that a run evaluated from another folder
reads the file it was trained on.
"""

from __future__ import annotations

from pathlib import Path

from genrec.data.registry import REGISTRY
from genrec.data.schema import Dataset
from genrec.errors import DataError
from genrec.io import read_json


def absolute_path(value: str | None) -> str | None:
    """`value` made absolute when it names an existing file or folder; else unchanged (a name, a URL, None)."""
    if not value or not Path(value).exists():
        return value
    return str(Path(value).resolve())


PATH_KEYS = (
    "dataset",
    "data_dir",
    "items_path",
    "clean.model_run",
)  # the data section's keys that name paths


def resolve_data_paths(data):
    """A copy of a data config section (`DataConfig` or `RankDataConfig`) whose `dataset` (when it is not a
    registered name), `data_dir`, `items_path` and `clean.model_run` are absolute where they name an existing
    file or folder."""
    update = {}
    if getattr(data, "dataset", None) not in REGISTRY:
        update["dataset"] = absolute_path(data.dataset)
    for key in ("data_dir", "items_path"):
        if getattr(data, key, None):
            update[key] = absolute_path(getattr(data, key))
    clean = getattr(data, "clean", None)
    if clean is not None and clean.model_run:
        update["clean"] = clean.model_copy(update={"model_run": absolute_path(clean.model_run)})
    return data.model_copy(update={k: v for k, v in update.items() if v != getattr(data, k)})


def data_record(ds: Dataset) -> dict:
    """What a run stores about its data: the fingerprint (`Dataset.fingerprint`), the source it was read from
    (an absolute path for files and folders) and the number of interactions."""
    source = ds.source
    if source and Path(source).exists():
        source = str(Path(source).resolve())
    return {"fingerprint": ds.fingerprint(), "source": source, "interactions": ds.interactions.height}


def check_same_data(record: dict | None, ds: Dataset | str, where: str, fix: str) -> None:
    """Raise DataError (one line: `where`, both fingerprints, the source, `fix`) when `ds` (a Dataset or its
    fingerprint) is not the data `record` (a `data_record`) describes. A record without a fingerprint (written
    by an older genrec) passes."""
    if not record or not record.get("fingerprint"):
        return
    now = ds if isinstance(ds, str) else ds.fingerprint()
    if record["fingerprint"] != now:
        source = record.get("source") or getattr(ds, "source", "")
        raise DataError(
            f"{where}: the data is not the data it was made from ({source}: fingerprint "
            f"{record['fingerprint']} then, {now} now); {fix}"
        )


def check_resume_data(out: Path, ds: Dataset, resume: bool) -> None:
    """With `resume`, a DataError when `ds` is not the data the interrupted run in `out` started on (its
    meta.json `data` fingerprint): its weights and index belong to that data."""
    meta = Path(out) / "meta.json"
    if resume and meta.exists():
        check_same_data(
            read_json(meta).get("data"), ds, str(out), "train into a new --out, or restore the data"
        )
