"""Training speed on Amazon Beauty: our SASRec and HSTU against RecBole's and RecTools' SASRec, one machine, one run.

    .venv/bin/python benchmarks/speed.py                    # everything (peers take ~15 min)
    .venv/bin/python benchmarks/speed.py --skip-peers       # ours only
    .venv/bin/python benchmarks/speed.py --epochs 3

Matched size (see benchmarks/peers.py): hidden 64, 2 blocks, 1 head, FFN inner 64 with ReLU, length 50,
dropout 0.3, batch 256, full-softmax cross-entropy, lr 1e-3, 2 threads. Each model trains in its own process
(peak RSS is the process's); seconds per epoch exclude evaluation and data preparation. Time to best
validation comes from the leaderboard runs (runs/leaderboard, the tuned recipes), when present.

Compute efficiency: FLOPs of one epoch of our training (counted by torch's FlopCounterMode over every
matmul, the chunked softmax's recomputation included) divided by the epoch time, against this machine's
matmul peak measured here (float32 and bfloat16, 2048^3, best of 10).

Measure on a quiet machine: with 2 threads, any other busy process makes OpenMP threads spin and every
figure wrong (the load average before each run is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

MATCHED = ["model.dim=64", "model.layers=2", "model.heads=1", "model.max_len=50", "model.dropout=0.3",
           "train.batch_size=256", "train.lr=0.001"]  # fmt: skip


def worker(model: str, epochs: int, threads: int) -> dict:
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from genrec.config import load_config
    from genrec.models import build_model
    from genrec.objectives import build_objective
    from genrec.runs import make_split, prepare_dataset

    torch.set_num_threads(threads)
    extra = ["model.activation=relu"] if model == "sasrec" else []
    cfg = load_config(model, MATCHED + extra, dataset="amazon-beauty")
    split = make_split(prepare_dataset(cfg.data), cfg.data)
    torch.manual_seed(0)
    net = build_model(cfg.model, split.n_items, split.n_users)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.train.lr)
    net.train()
    objective = build_objective(net.objective_name(), net, split.train.items)

    def step(batch):
        loss = objective(net, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    flops = 0
    with FlopCounterMode(display=False) as counter:
        for batch in net.training_batches(split, np.random.default_rng(123), cfg.train.batch_size):
            step(batch)
        flops = counter.get_total_flops()
    epoch_s, sequences = [], 0
    for epoch in range(epochs):
        batches = list(net.training_batches(split, np.random.default_rng(epoch), cfg.train.batch_size))
        t0 = time.perf_counter()
        for batch in batches:
            step(batch)
        epoch_s.append(time.perf_counter() - t0)
        sequences = sum(int(b[0].shape[0]) for b in batches)
    median = sorted(epoch_s)[len(epoch_s) // 2]
    return {
        "model": f"genrec {model}",
        "s_per_epoch": round(median, 2),
        "epoch_s": [round(s, 2) for s in epoch_s],
        "sequences_per_s": round(sequences / median, 1),
        "flops_per_epoch": flops,
        "achieved_flops": flops / median,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "softmax_dtype": str(cfg.model.softmax_dtype),
    }


def run_ours(model: str, epochs: int, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", model, "--epochs", str(epochs), "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_to_best(recipe_prefix: str) -> str:
    runs = sorted((ROOT / "runs" / "leaderboard").glob(f"{recipe_prefix}*--amazon-beauty/metrics.json"))
    if not runs:
        return "-"
    tr = json.loads(runs[-1].read_text())["training"]
    return f"{tr['seconds_to_best']:.0f} (epoch {tr['best_epoch']})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--peer-epochs", type=int, default=1)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        from genrec.io import json_text

        print(json_text(worker(args.worker, args.epochs, args.threads), indent=None))
        return

    import peers

    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    peak = {dt: peers.matmul_peak_flops(dt, threads=args.threads) for dt in ("float32", "bfloat16")}
    results = [run_ours(m, args.epochs, args.threads) for m in ("sasrec", "hstu")]
    if not args.skip_peers:
        for name in ("recbole", "rectools"):
            r = peers.run_peer(name, args.peer_epochs, evaluate=False, threads=args.threads)
            r["model"] = f"{name} SASRec"
            results.append(r)
    ours = results[0]["s_per_epoch"]
    print(
        f"Machine matmul peak ({args.threads} threads): float32 {peak['float32'] / 1e9:.0f} GFLOP/s, "
        f"bfloat16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s\n"
    )
    print(
        "| model | s/epoch | sequences/s | peak RSS (MB) | epoch time vs genrec SASRec | achieved GFLOP/s "
        "| of fp32 peak | of bf16 peak | time to best valid (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        achieved = r.get("achieved_flops")
        eff = (
            [
                f"{achieved / 1e9:.0f}",
                f"{achieved / peak['float32']:.0%}",
                f"{achieved / peak['bfloat16']:.0%}",
            ]
            if achieved
            else ["-", "-", "-"]
        )
        ttb = time_to_best(r["model"].split()[-1]) if r["model"].startswith("genrec") else "-"
        print(
            f"| {r['model']} | {r['s_per_epoch']:.1f} | {r['sequences_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} | "
            f"{r['s_per_epoch'] / ours:.2f}x | {' | '.join(eff)} | {ttb} |"
        )
    print(
        "\nSequences: ours and RecTools iterate one sequence per user; RecBole one sample per prefix "
        "(131,413 per epoch), so compare seconds per epoch, not sequences/s, across libraries."
    )


if __name__ == "__main__":
    main()
