"""Cost of the per-epoch validation pass: the full evaluation against the pass the trainer runs every epoch.

    python -m benchmarks validation_speed                  # SASRec and TIGER Beauty leaderboard runs
    python -m benchmarks validation_speed --runs DIR [DIR ...] --repeats 3

The full evaluation computes both conventions (history excluded and unfiltered) and the top-K lists for
coverage; the trainer's pass computes only the convention it selects on and no lists. Both run on the validation
split of each run's dataset with the run's weights, alternately, and the table prints the median seconds of each,
their ratio and whether the selected score is identical (it must be).
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks._common import ROOT, Report, alternate, parser
from genrec.eval.evaluator import evaluate, validation_score
from genrec.runs import load_run, make_split, prepare_dataset

DEFAULT_RUNS = [
    ROOT / "runs" / "leaderboard" / "sasrec-amazon-beauty--amazon-beauty",
    ROOT / "runs" / "leaderboard" / "tiger-amazon-beauty--amazon-beauty",
]
COLUMNS = ["run", "model", "users", "full evaluation (s)", "per-epoch pass (s)", "ratio", "same score"]


def both_passes(model, split, cfg, repeats: int) -> dict:
    """The full evaluation and the trainer's pass, alternating, on the validation split."""
    full = lambda: evaluate(model, split.valid, split.n_items, cfg)  # noqa: E731
    fast = lambda: validation_score(model, split.valid, split.n_items, cfg)  # noqa: E731
    return alternate({"full": full, "pass": fast}, repeats, warmup=0)


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("--runs", nargs="+", type=Path, default=DEFAULT_RUNS)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    torch.set_num_threads(args.threads)
    report.line(
        f"validation pass per epoch vs full evaluation ({args.threads} threads, median of {args.repeats})\n"
    )
    rows = []
    for run_dir in args.runs:
        run = load_run(run_dir)
        ds = prepare_dataset(run.cfg.data)
        split = make_split(ds, run.cfg.data, run.items["item_id"].to_numpy(), run.users["user_id"].to_numpy())
        cfg = run.cfg.eval
        convention = "filtered" if cfg.exclude_history else "unfiltered"  # how the full result is keyed
        t = both_passes(run.model, split, cfg, args.repeats)
        metric = cfg.select_metric
        score = t["pass"].output
        same = t["full"].output[convention][metric] == score
        f, p = t["full"].median, t["pass"].median
        rows.append(
            [
                run_dir.name,
                run.cfg.model.name,
                f"{len(split.valid.targets):,}",
                f"{f:.2f}",
                f"{p:.2f}",
                f"{f / p:.2f}x",
                f"{same} ({metric} {score:.4f})",
            ]
        )
        report.results[run_dir.name] = {
            "full_s": t["full"].seconds,
            "pass_s": t["pass"].seconds,
            "same": same,
            metric: score,
        }
    report.table(COLUMNS, rows)
    report.save()
