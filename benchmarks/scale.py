"""Data at scale: load time, peak memory and SASRec throughput at 1M, 10M and 100M interactions, and 1M items.

ML-1M is grown by fractal expansion (`genrec expand`); the catalogue of about 1M items is trained with sampled
softmax + logQ.

    python -m benchmarks scale                       # 1M, 10M and the 1M-item catalogue
    python -m benchmarks scale --sizes 100           # 100M alone (about 10 GB peak)
    python -m benchmarks scale --sizes 1,10 --items-case no

Each case runs in its own process (peak RSS = that process's `ru_maxrss`; the parent stops a child whose RSS
passes --max-rss-gb). Expanded data is cached in --work (default .bench/scale). Per case:
- load: `genrec.data.stream.scan_sequences` on the Parquet file (Polars lazy, no Python object per event), then
  the leave-one-out split; the timestamps are dropped before the split (SASRec does not read them);
- training: SASRec d=64, 2 blocks, length 50, batch 256, sampled softmax with 256 uniform negatives and logQ
  (`genrec.objectives`), AdamW, `--steps` timed steps (mean) after 3 warm-up steps (not a whole epoch on 2 cores);
- epoch time, extrapolated from the mean step: genrec's SASRec epoch is one window of the newest 51 training
  events per user (grows with users), and a pass that predicts every training interaction once
  (interactions / positions per second; grows with interactions). Both are printed with their ratio per
  interaction against the smallest case.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import BENCH, Report, fresh_process, parser, timed
from genrec.config import load_config
from genrec.data.expand import expand
from genrec.data.registry import load_dataset
from genrec.data.split import leave_one_out
from genrec.data.stream import scan_sequences
from genrec.models import build_model
from genrec.objectives import build_objective
from genrec.training.trainer import build_optimizer, training_step

SOURCE_INTERACTIONS = 1_000_209  # ML-1M


def expanded(work: Path, factor: float, user_copies: int | None, item_copies: int | None) -> Path:
    """The expanded ML-1M folder (made once; `genrec expand` with these settings)."""
    name = f"ml-1m-x{factor:g}" + (f"-m{user_copies}-n{item_copies}" if item_copies else "")
    out = work / name
    if not (out / "meta.json").exists():
        t0 = time.perf_counter()
        ds = load_dataset("ml-1m")
        expand(ds.encode(), factor, out, user_copies, item_copies, source="ml-1m")
        print(f"expanded {name} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return out


def child(path: str, steps: int, threads: int, batch_size: int) -> dict:
    """One case in this process (run in a fresh one): load, split, `steps` training steps."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    seq = scan_sequences(Path(path) / "interactions.parquet")
    load_s = time.perf_counter() - t0
    seq.timestamps = None
    t1 = time.perf_counter()
    split = leave_one_out(seq)
    split_s = time.perf_counter() - t1
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    sets = [
        "model.dim=64",
        "model.layers=2",
        "model.max_len=50",
        "model.dropout=0.3",
        "train.objective.name=sampled_softmax",
        "train.objective.negatives=256",
        f"train.batch_size={batch_size}",
    ]
    cfg = load_config("sasrec", sets)
    torch.manual_seed(0)
    net = build_model(cfg.model, seq.n_items, seq.n_users)
    objective = build_objective(cfg.train.objective, net, split.train.items)
    opt = build_optimizer(net, cfg.train)
    net.train()
    batches, counted = iter(net.training_batches(split, np.random.default_rng(0), batch_size)), []

    def step():
        batch = next(batches)
        training_step(net, objective, opt, batch, cfg.train.grad_clip)
        counted.append((int((batch[0][:, :-1] > 0).sum()), int(batch[0].shape[0])))

    t = timed(step, steps, warmup=3)
    times = t.seconds
    positions, rows = (sum(c) for c in zip(*counted[3:]))
    step_s = t.total / len(times)
    window = np.minimum(split.train.lengths(), cfg.model.max_len + 1)
    epoch_steps = int(np.ceil((window >= 2).sum() / batch_size))
    train_events = int(len(split.train.items))
    pos_per_s = positions / sum(times)
    return {
        "interactions": int(len(seq.items)),
        "users": int(seq.n_users),
        "items": int(seq.n_items),
        "load_s": round(load_s, 1),
        "split_s": round(split_s, 1),
        "rss_after_load_gb": round(rss_load, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "steps_timed": len(times),
        "step_s": round(step_s, 4),
        "sequences_per_s": round(rows / sum(times), 1),
        "positions_per_s": round(pos_per_s, 1),
        "epoch_steps": epoch_steps,
        "epoch_s": round(epoch_steps * step_s, 1),
        "all_events_pass_s": round(train_events / pos_per_s, 1),
        "train_events": train_events,
        "parameters": int(sum(p.numel() for p in net.parameters())),
    }


COLUMNS = (
    "case | interactions | users | items | load s | split s | "
    "peak RSS GB | step s | positions/s | epoch (1 window/user) s | all-events pass s | "
    "s per 1M interactions (pass) | vs smallest"
)


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument(
        "--sizes", default="1,10", help="millions of interactions (factors of ML-1M), e.g. 1,10,100"
    )
    ap.add_argument(
        "--items-case", default="yes", help="also the ~1M-item catalogue (ML-1M x 10, 270 item copies)"
    )
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-rss-gb", type=float, default=20.0)
    ap.add_argument("--work", default=str(BENCH / "scale"))
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    work = Path(args.work)
    cases = [(f"ML-1M x{s}", float(s), None, None) for s in args.sizes.split(",") if s]
    if args.items_case == "yes":
        cases.append(("ML-1M x10, 1M items", 10.0, 1, 270))
    results = []
    for name, factor, m, n in cases:
        path = expanded(work, factor, m, n)
        figures = (str(path), args.steps, args.threads, args.batch_size)
        r = fresh_process(child, *figures, max_rss_gb=args.max_rss_gb, check=False)
        r["case"] = name
        results.append(r)
        print(json.dumps(r), file=sys.stderr)
    rows, base = [], None
    for r in results:
        if "stopped" in r or "error" in r:
            rows.append(
                [r["case"], f"stopped: {r.get('stopped') or r['error']}", *["-"] * (len(COLUMNS) - 2)]
            )
            continue
        per_m = r["all_events_pass_s"] / (r["interactions"] / 1e6)
        base = base or per_m
        rows.append(
            [
                r["case"],
                f"{r['interactions']:,}",
                f"{r['users']:,}",
                f"{r['items']:,}",
                r["load_s"],
                r["split_s"],
                r["peak_rss_gb"],
                f"{r['step_s']:.3f}",
                f"{r['positions_per_s']:,.0f}",
                f"{r['epoch_s']:,.0f}",
                f"{r['all_events_pass_s']:,.0f}",
                f"{per_m:.1f}",
                f"{per_m / base:.2f}x",
            ]
        )
    report.table(COLUMNS, rows)
    report.line(
        f"\nsteps timed per case: {args.steps} (after 3 warm-up); epoch times are extrapolated from them"
    )
    report.results = {r["case"]: r for r in results}
    report.save()
