"""TIGER training throughput on Beauty: samples/s of one optimiser step (forward, backward, AdamW) per encoder
input layout and batch size, with the `tiger` recipe's model and RQ-KMeans codes from a run directory.

    .venv/bin/python benchmarks/tiger_speed.py --codes runs/leaderboard/tiger-amazon-beauty--amazon-beauty

The codes are read from the run (`semantic_ids.safetensors`), so no text encoding is timed; 5 warm-up steps,
then `--steps` timed ones on the same length-bucketed batches the trainer uses.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec.config import load_config  # noqa: E402
from genrec.items.semantic_ids import SemanticIds  # noqa: E402
from genrec.models import build_model  # noqa: E402
from genrec.objectives import build_objective  # noqa: E402
from genrec.runs import make_split, prepare_dataset  # noqa: E402


def samples_per_s(model, split, batch_size: int, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    objective = build_objective(model.cfg.default_objective, model)
    batches = list(model.training_batches(split, np.random.default_rng(0), batch_size))
    model.train()
    seen, t0 = 0, 0.0
    for i, batch in enumerate(batches[: 5 + steps]):
        if i == 5:
            t0 = time.perf_counter()
        loss = objective(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(batch[0]) if i >= 5 else 0
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codes", default="runs/leaderboard/tiger-amazon-beauty--amazon-beauty")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config("tiger-amazon-beauty")
    item_ids = pl.read_parquet(Path(args.codes) / "items.parquet")["item_id"].to_numpy()
    split = make_split(prepare_dataset(cfg.data), cfg.data, item_ids)
    sid = SemanticIds.load(Path(args.codes))
    print("| encoder input | batch | precision | samples/s |")
    print("|---|---|---|---|")
    for tokens, batch_size in [("codes", 256), ("items", 256), ("items", 1024)]:
        mcfg = cfg.model.model_copy(update={"history_tokens": tokens})
        torch.manual_seed(0)
        model = build_model(mcfg, split.n_items, split.n_users)
        model.set_semantic_ids(sid)
        rate = samples_per_s(model, split, batch_size, args.steps)
        print(f"| {tokens} | {batch_size} | {mcfg.precision} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
