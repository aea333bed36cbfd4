"""Cost of the per-epoch validation pass: the full evaluation against the pass the trainer runs every epoch.

    .venv/bin/python benchmarks/validation_speed.py                      # SASRec and TIGER Beauty leaderboard runs
    .venv/bin/python benchmarks/validation_speed.py --runs DIR [DIR ...] --repeats 3

The full evaluation computes both conventions (history excluded and unfiltered) and the top-K lists for
coverage; the trainer's pass computes only the convention it selects on and no lists. Both run on the validation
split of each run's dataset with the run's weights, alternately, and the table prints the median seconds of each,
their ratio and whether the selected score is identical (it must be).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec.eval.evaluator import evaluate, validation_score  # noqa: E402
from genrec.runs import load_run, make_split, prepare_dataset  # noqa: E402

DEFAULT_RUNS = [
    ROOT / "runs" / "leaderboard" / "sasrec-amazon-beauty--amazon-beauty",
    ROOT / "runs" / "leaderboard" / "tiger-amazon-beauty--amazon-beauty",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", type=Path, default=DEFAULT_RUNS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"validation pass per epoch vs full evaluation ({args.threads} threads, median of {args.repeats})\n"
    )
    print("| run | model | users | full evaluation (s) | per-epoch pass (s) | ratio | same score |")
    print("|---|---|---|---|---|---|---|")
    for run_dir in args.runs:
        run = load_run(run_dir)
        ds = prepare_dataset(run.cfg.data)
        split = make_split(ds, run.cfg.data, run.items["item_id"].to_numpy(), run.users["user_id"].to_numpy())
        cfg = run.cfg.eval
        convention = "filtered" if cfg.exclude_history else "unfiltered"  # how the full result is keyed
        full_s, fast_s = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            full = evaluate(run.model, split.valid, split.n_items, cfg)
            t1 = time.perf_counter()
            score = validation_score(run.model, split.valid, split.n_items, cfg)
            t2 = time.perf_counter()
            full_s.append(t1 - t0)
            fast_s.append(t2 - t1)
        metric = cfg.select_metric
        same = full[convention][metric] == score
        f, p = statistics.median(full_s), statistics.median(fast_s)
        print(
            f"| {run_dir.name} | {run.cfg.model.name} | {len(split.valid.targets):,} | {f:.2f} | {p:.2f} | "
            f"{f / p:.2f}x | {same} ({metric} {score:.4f}) |"
        )


if __name__ == "__main__":
    main()
