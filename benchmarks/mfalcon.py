"""M-FALCON vs one-candidate-at-a-time scoring: candidates per second for one user.

    python -m benchmarks mfalcon [--model hstu_ranker] [--threads 2]

The ranker has the ML-1M recipe's size (d=64, 2 HSTU blocks, 2 heads) with max_len 200 and random weights (the
speed does not depend on them), features from ML-100K. One user: a history of L random (item, rating) events
and N random candidates. One-at-a-time runs the full model on history + one candidate, N times (its rate is
measured on the first min(N, 128) candidates; every candidate costs the same). M-FALCON encodes the history
once, caches each layer's keys/values and scores the candidates in micro-batches of 128. Each timing is the
best of 3 after a warm-up. The last line is `speedup N=128 L=200: <x>x max_abs_diff=<d>`.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from benchmarks._common import Report, parser, timed
from genrec.config import RankDataConfig
from genrec.models.ranking.mfalcon import make_batch, score_batch, score_one_at_a_time
from genrec.registry import get as model_class
from genrec.runs.ranking import prepare_feedback

COLUMNS = ["N", "history L", "one-at-a-time cand/s", "M-FALCON cand/s", "speedup", "max abs diff"]


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("--model", default="hstu_ranker", choices=["hstu_ranker", "genrank", "mtgr"])
    ap.add_argument("--micro-batch", type=int, default=128)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--lengths", default="50,200", help="history lengths L")
    ap.add_argument("--candidates", default="16,128,1024", help="candidate counts N")
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = prepare_feedback(RankDataConfig(dataset=args.dataset))[0]
    cfg = model_class(args.model).config_class(
        name=args.model, dim=64, layers=2, heads=2, max_len=200, micro_batch=args.micro_batch
    )
    model = model_class(args.model)(cfg, data).eval()
    rng = np.random.default_rng(0)
    report.line(
        f"M-FALCON benchmark: {args.model}, d=64, 2 blocks, 2 heads, micro-batch {args.micro_batch}, "
        f"{args.threads} threads, one user"
    )
    rows, final = [], None
    for length in [int(x) for x in args.lengths.split(",")]:
        for n in [int(x) for x in args.candidates.split(",")]:
            hist = rng.integers(1, data.n_items + 1, length)
            acts = rng.integers(1, 6, length)
            times = np.sort(rng.integers(9e8, 9.5e8, length))
            cands = rng.integers(1, data.n_items + 1, n)
            cross = np.zeros((n, model.n_cross), dtype=np.float32) if model.n_cross else None
            batch = make_batch(hist, acts, cands, times, np.full(n, times[-1] + 60), cross=cross)
            m = min(n, 128)
            small = make_batch(
                hist,
                acts,
                cands[:m],
                times,
                np.full(m, times[-1] + 60),
                cross=None if cross is None else cross[:m],
            )
            with torch.no_grad():
                fast = timed(lambda b=batch: score_batch(model, b, args.micro_batch), repeats=3)
                slow = timed(lambda b=small: score_one_at_a_time(model, b), repeats=1 if m > 16 else 3)
            diff = (fast.output[:, :m] - slow.output).abs().max().item()
            rate_fast, rate_slow = n / fast.best, m / slow.best
            speedup = rate_fast / rate_slow
            rows.append(
                [n, length, f"{rate_slow:,.0f}", f"{rate_fast:,.0f}", f"{speedup:.1f}x", f"{diff:.2e}"]
            )
            print(f"N={n} L={length}: {speedup:.1f}x", file=sys.stderr, flush=True)
            report.results[f"N={n} L={length}"] = {
                "one_at_a_time_per_s": rate_slow,
                "mfalcon_per_s": rate_fast,
                "speedup": speedup,
                "max_abs_diff": diff,
            }
            if n == 128 and length == 200:
                final = (speedup, diff)
    report.table(COLUMNS, rows)
    if final:
        report.line(f"speedup N=128 L=200: {final[0]:.1f}x max_abs_diff={final[1]:.2e}")
    report.save()
