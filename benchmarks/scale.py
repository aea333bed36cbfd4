"""Data at scale: load time, peak memory and SASRec training throughput at 1M, 10M and 100M interactions (ML-1M
grown by fractal expansion, `genrec expand`), and a catalogue of about 1M items trained with sampled softmax + logQ.

    .venv/bin/python benchmarks/scale.py                       # 1M, 10M and the 1M-item catalogue
    .venv/bin/python benchmarks/scale.py --sizes 100           # 100M alone (about 10 GB peak)
    .venv/bin/python benchmarks/scale.py --sizes 1,10 --items-case no

Each case runs in its own process (peak RSS = that process's `ru_maxrss`; the parent stops a child whose RSS
passes --max-rss-gb). Expanded data is cached in --work (default .bench/scale). Per case:
- load: `genrec.data.stream.scan_sequences` on the Parquet file (Polars lazy, no Python object per event), then
  the leave-one-out split; the timestamps are dropped before the split (SASRec does not read them);
- training: SASRec d=64, 2 blocks, length 50, batch 256, sampled softmax with 256 uniform negatives and logQ
  (`genrec.objectives`), AdamW, `--steps` timed steps after 3 warm-up steps (not a whole epoch on 2 cores);
- epoch time, extrapolated from the mean step: genrec's SASRec epoch is one window of the newest 51 training
  events per user (grows with users), and a pass that predicts every training interaction once
  (interactions / positions per second; grows with interactions). Both are printed with their ratio per
  interaction against the smallest case.
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
SOURCE_INTERACTIONS = 1_000_209  # ML-1M


def expanded(work: Path, factor: float, user_copies: int | None, item_copies: int | None) -> Path:
    """The expanded ML-1M folder (made once; `genrec expand` with these settings)."""
    name = f"ml-1m-x{factor:g}" + (f"-m{user_copies}-n{item_copies}" if item_copies else "")
    out = work / name
    if not (out / "meta.json").exists():
        from genrec.data.expand import expand
        from genrec.data.registry import load_dataset

        t0 = time.perf_counter()
        ds = load_dataset("ml-1m")
        expand(ds.encode(), factor, out, user_copies, item_copies, source="ml-1m")
        print(f"expanded {name} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return out


def child(path: Path, steps: int, threads: int, batch_size: int) -> dict:
    import numpy as np
    import torch

    from genrec.config import load_config
    from genrec.data.split import leave_one_out
    from genrec.data.stream import scan_sequences
    from genrec.models import build_model
    from genrec.objectives import build_objective
    from genrec.training.trainer import build_optimizer, training_step

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    seq = scan_sequences(path / "interactions.parquet")
    load_s = time.perf_counter() - t0
    seq.timestamps = None
    t1 = time.perf_counter()
    split = leave_one_out(seq)
    split_s = time.perf_counter() - t1
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    sets = ["model.dim=64", "model.layers=2", "model.max_len=50", "model.dropout=0.3",
            "train.objective.name=sampled_softmax", "train.objective.negatives=256",
            f"train.batch_size={batch_size}"]  # fmt: skip
    cfg = load_config("sasrec", sets)
    torch.manual_seed(0)
    net = build_model(cfg.model, seq.n_items, seq.n_users)
    objective = build_objective(cfg.train.objective, net, split.train.items)
    opt = build_optimizer(net, cfg.train)
    net.train()
    batches = net.training_batches(split, np.random.default_rng(0), batch_size)
    times, positions, rows = [], 0, 0
    for i, batch in enumerate(batches):
        t = time.perf_counter()
        training_step(net, objective, opt, batch, cfg.train.grad_clip)
        if i >= 3:
            times.append(time.perf_counter() - t)
            positions += int((batch[0][:, :-1] > 0).sum())
            rows += int(batch[0].shape[0])
        if len(times) >= steps:
            break
    step_s = sum(times) / len(times)
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


def run_child(path: Path, args, max_rss_gb: float) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), "--steps", str(args.steps), "--threads",
           str(args.threads), "--batch-size", str(args.batch_size)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    peak = 0.0
    while proc.poll() is None:
        try:
            rss_kb = next(
                int(line.split()[1])
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                if line.startswith("VmRSS")
            )
        except (OSError, StopIteration):
            rss_kb = 0
        peak = max(peak, rss_kb / 2**20)
        if peak > max_rss_gb:
            proc.kill()
            proc.wait()
            return {"stopped": f"RSS {peak:.1f} GB > {max_rss_gb} GB"}
        time.sleep(0.5)
    out = proc.stdout.read().strip().splitlines()
    if proc.returncode != 0 or not out:
        return {"stopped": f"exit {proc.returncode}"}
    return json.loads(out[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sizes", default="1,10", help="millions of interactions (factors of ML-1M), e.g. 1,10,100"
    )
    ap.add_argument(
        "--items-case", default="yes", help="also the ~1M-item catalogue (ML-1M x 10, 270 item copies)"
    )
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-rss-gb", type=float, default=20.0)
    ap.add_argument("--work", default=str(ROOT / ".bench" / "scale"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args.steps, args.threads, args.batch_size)))
        return
    work = Path(args.work)
    cases = [(f"ML-1M x{s}", float(s), None, None) for s in args.sizes.split(",") if s]
    if args.items_case == "yes":
        cases.append(("ML-1M x10, 1M items", 10.0, 1, 270))
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    results = []
    for name, factor, m, n in cases:
        path = expanded(work, factor, m, n)
        r = run_child(path, args, args.max_rss_gb)
        r["case"] = name
        results.append(r)
        print(json.dumps(r), file=sys.stderr)
    print("| case | interactions | users | items | load s | split s | peak RSS GB | step s | positions/s | "
          "epoch (1 window/user) s | all-events pass s | s per 1M interactions (pass) | vs smallest |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = None
    for r in results:
        if "stopped" in r:
            print(f"| {r['case']} | stopped: {r['stopped']} |")
            continue
        per_m = r["all_events_pass_s"] / (r["interactions"] / 1e6)
        base = base or per_m
        print(
            f"| {r['case']} | {r['interactions']:,} | {r['users']:,} | {r['items']:,} | {r['load_s']} | "
            f"{r['split_s']} | {r['peak_rss_gb']} | {r['step_s']:.3f} | {r['positions_per_s']:,.0f} | "
            f"{r['epoch_s']:,.0f} | {r['all_events_pass_s']:,.0f} | {per_m:.1f} | {per_m / base:.2f}x |"
        )
    print(f"\nsteps timed per case: {args.steps} (after 3 warm-up); epoch times are extrapolated from them")


if __name__ == "__main__":
    main()
