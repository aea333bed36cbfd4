"""Top-K recommendations for every user of a retrieval run, streamed to a Parquet file (`genrec recommend RUN
--all-users --out recs.parquet`).

Users are taken in batches; a model with item vectors scores the catalogue one item chunk at a time
(`genrec.eval.chunked`), so memory stays O(batch x (K + chunk)) whatever the catalogue's size, and every batch's
rows are written before the next is scored. Each user gets what `genrec recommend RUN --user ID` gives: the
model reads the user's stored history (with its timestamps), items already in it are left out unless
`include_seen`, and a list holds only items with a finite score. Rows: user_id, rank (1 = best), item_id, score,
with ids as the source has them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from genrec.data.batching import history_batch, pad_left
from genrec.errors import DataError
from genrec.eval.chunked import CatalogueScores, ItemTable, chunkable, item_chunk, top_k
from genrec.runtime import module_device, to_device


@torch.no_grad()
def recommend_all_users(
    run, out: Path, k: int = 10, include_seen: bool = False, batch_size: int = 1024, chunk: int | None = None
) -> int:
    """Write every user's top-k of `run` (a loaded retrieval `Run`) to the Parquet file `out`, batch by batch;
    returns the number of rows written. `chunk`: items scored at a time (default: `item_chunk` of the batch).
    Raises DataError for a ranking run."""
    if not run.task.can("recommend"):
        raise DataError(
            f"{run.dir} is a {run.task.name} run: it scores given candidates, it does not retrieve"
        )
    import pyarrow.parquet as pq

    model = run.model.eval()
    device = module_device(model)
    users = run.users
    lengths = users["history"].list.len().to_numpy()
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    items = users["history"].explode().drop_nulls().to_numpy().astype(np.int64)
    times = None
    if "timestamps" in users.columns:
        times = users["timestamps"].explode().drop_nulls().to_numpy().astype(np.int64)
    index = users["user"].to_numpy()
    k = min(k, model.n_items)
    chunk = chunk or item_chunk(batch_size, model.n_items)
    table = ItemTable(model) if chunk <= model.n_items and chunkable(model) else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    written, writer = 0, None
    try:
        for start in range(0, len(users), batch_size):
            rows = np.arange(start, min(len(users), start + batch_size))
            batch = history_batch(offsets, items, rows, model.max_history, index[rows], times)
            seen = None if include_seen else torch.from_numpy(pad_left(offsets, items, rows, None))
            batch, seen = to_device((batch, seen), device)
            if table is not None:
                ids, scores = top_k(CatalogueScores(model, batch, chunk, table), k, seen)
            else:
                ids, scores = model.recommend(batch, k, seen)
            part = _rows(run, rows, ids.cpu(), scores.float().cpu())
            if writer is None:
                writer = pq.ParquetWriter(tmp, part.schema)
            writer.write_table(part)
            written += part.num_rows
        if writer is None:  # a run without users: an empty file with the columns
            writer = pq.ParquetWriter(tmp, _rows(run, np.zeros(0, dtype=np.int64), *_empty(k)).schema)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(out)
    return written


def _empty(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k)


def _rows(run, rows: np.ndarray, ids: torch.Tensor, scores: torch.Tensor):
    """The Arrow table of one batch: a row per listed item (id > 0, finite score), best first per user."""
    keep = (ids > 0) & torch.isfinite(scores)
    user_row, place = (np.asarray(t) for t in torch.nonzero(keep, as_tuple=True))
    item = ids[keep].numpy()
    table = pl.DataFrame(
        {
            "user_id": run.users["user_id"].gather(rows[user_row]),
            "rank": (place + 1).astype(np.int32),
            "item_id": run.items["item_id"].gather(item - 1),
            "score": scores[keep].numpy().astype(np.float32),
        }
    )
    return table.to_arrow()
