"""Where does a ranker gain? AUC / GAUC / LogLoss of ranking runs by the candidate item's training impressions.

    python -m benchmarks rank_by_item_support RUN_DIR [RUN_DIR ...] [--split test] [--bins 20 100]
    python -m benchmarks rank_by_item_support --pairs DIN_RUN TEXT_RUN [DIN_RUN TEXT_RUN ...]

Every run must be a finished `genrec rank-train` directory on the same data. Impressions of the split are put in
buckets by their item's number of training impressions (the bin edges split them as [0, 20), [20, 100),
[100, inf) by default), and each run's scores are summarised per bucket. Content features such as frozen text
vectors (`model.text_features`, LEARN / HLLM's hybrid) should matter most where an item's ID embedding has had few
labels to learn from, so the rare-item rows are where to look for their gain.

With `--pairs` the runs come as (baseline, variant) pairs, for example the same seed without and with text; the
table then prints each bucket's mean difference variant - baseline over the pairs, with its range. Reads the
split's labels: an analysis of finished runs, not a way to choose settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks._common import Report, parser
from genrec.eval.ranking import ranking_metrics
from genrec.runs import load_run

METRICS = ("auc", "gauc", "logloss")


def bucket_names(edges: list[int]) -> list[str]:
    bounds = [0, *edges, None]
    return [f"{lo}-{hi - 1}" if hi is not None else f">= {lo}" for lo, hi in zip(bounds, bounds[1:])]


def bucket_metrics(imps, logits: np.ndarray, bucket: np.ndarray, n_buckets: int) -> list[dict]:
    """The project's ranking metrics per bucket, then over all impressions (AUC / GAUC are NaN in a bucket
    without both labels; an empty bucket is all NaN)."""
    out = []
    for b in [*range(n_buckets), None]:  # None: all impressions
        keep = np.ones(len(imps), dtype=bool) if b is None else bucket == b
        if keep.any():
            out.append(ranking_metrics(imps.users[keep], imps.labels[keep], logits[keep], ks=()))
        else:
            out.append(
                {"impressions": 0, "positive_rate": float("nan"), **dict.fromkeys(METRICS, float("nan"))}
            )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__, threads=False)
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--pairs", nargs="+", type=Path, help="baseline and variant run directories, alternating")
    ap.add_argument("--split", choices=["valid", "test"], default="test")
    ap.add_argument(
        "--bins", nargs="+", type=int, default=[20, 100], help="bucket edges (training impressions)"
    )
    args = ap.parse_args(argv)
    if args.pairs and len(args.pairs) % 2:
        ap.error("--pairs takes baseline / variant run directories in pairs")
    runs = args.pairs or args.runs
    if not runs:
        ap.error("give run directories, or --pairs")
    report = Report(__name__, args)
    edges = sorted(set(args.bins))
    names = [*bucket_names(edges), "all"]

    results = {}
    for run in runs:
        loaded = load_run(run)
        model, data = loaded.model, loaded.feedback
        imps = getattr(data, args.split)
        support = np.bincount(data.train.items, minlength=data.n_items + 1)[imps.items]
        bucket = np.searchsorted(np.asarray(edges), support, side="right")
        results[run] = bucket_metrics(imps, model.predict(data, imps), bucket, len(edges) + 1)
    report.results = {str(run): dict(zip(names, buckets)) for run, buckets in results.items()}

    first = results[runs[0]]
    report.line(
        f"{args.split} impressions by the item's training impressions ({len(getattr(data, args.split))} in all)\n"
    )
    if not args.pairs:
        rows = [
            [
                run.name,
                name,
                m["impressions"],
                f"{m['positive_rate']:.3f}",
                f"{m['auc']:.4f}",
                f"{m['gauc']:.4f}",
                f"{m['logloss']:.4f}",
            ]
            for run in runs
            for name, m in zip(names, results[run])
        ]
        report.table(["run", "items with", "impressions", "like rate", "AUC", "GAUC", "LogLoss"], rows)
        report.save()
        return
    pairs = list(zip(runs[::2], runs[1::2]))
    report.line(f"variant - baseline over {len(pairs)} pairs: mean [min, max]\n")
    rows = []
    for i, name in enumerate(names):
        cells = []
        for metric in METRICS:
            diffs = np.array([results[v][i][metric] - results[b][i][metric] for b, v in pairs])
            cells.append(f"{diffs.mean():+.4f} [{diffs.min():+.4f}, {diffs.max():+.4f}]")
        rows.append([name, first[i]["impressions"], f"{first[i]['positive_rate']:.3f}", *cells])
    report.table(["items with", "impressions", "like rate", *(f"{m} diff" for m in METRICS)], rows)
    report.save()
