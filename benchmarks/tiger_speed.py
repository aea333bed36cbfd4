"""TIGER training throughput on Beauty: samples/s of an optimiser step per encoder input layout and batch size.

    python -m benchmarks tiger_speed --codes runs/leaderboard/tiger-amazon-beauty--amazon-beauty

One optimiser step is forward, backward and AdamW, with the `tiger` recipe's model and the RQ-KMeans codes of a
run directory (`semantic_ids.safetensors`, so no text encoding is timed); 5 warm-up steps, then `--steps` timed
ones on the same length-bucketed batches the trainer uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmarks._common import Report, parser, timed
from genrec.config import load_config
from genrec.items.semantic_ids import SemanticIds
from genrec.models import build_model
from genrec.objectives import build_objective
from genrec.runs import make_split, prepare_dataset

LAYOUTS = [("codes", 256), ("items", 256), ("items", 1024)]


def samples_per_s(model, split, batch_size: int, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    objective = build_objective(model.cfg.default_objective, model)
    batches = list(model.training_batches(split, np.random.default_rng(0), batch_size))
    steps = min(steps, len(batches) - 5)
    model.train()
    batches, sizes = iter(batches), []

    def step():
        batch = next(batches)
        loss = objective(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sizes.append(len(batch[0]))

    t = timed(step, steps, warmup=5)
    return sum(sizes[5:]) / t.total


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("--codes", default="runs/leaderboard/tiger-amazon-beauty--amazon-beauty")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    torch.set_num_threads(args.threads)
    cfg = load_config("tiger-amazon-beauty")
    item_ids = pl.read_parquet(Path(args.codes) / "items.parquet")["item_id"].to_numpy()
    split = make_split(prepare_dataset(cfg.data), cfg.data, item_ids)
    sid = SemanticIds.load(Path(args.codes))
    rows = []
    for tokens, batch_size in LAYOUTS:
        mcfg = cfg.model.model_copy(update={"history_tokens": tokens})
        torch.manual_seed(0)
        model = build_model(mcfg, split.n_items, split.n_users)
        model.set_semantic_ids(sid)
        rate = samples_per_s(model, split, batch_size, args.steps)
        rows.append([tokens, batch_size, mcfg.precision, f"{rate:,.0f}"])
        report.results[f"{tokens}, batch {batch_size}"] = rate
    report.table(["encoder input", "batch", "precision", "samples/s"], rows)
    report.save()
