"""Ranking leaderboard: train every ML-1M ranking recipe (or reuse finished runs) and print a Markdown table.

    python -m benchmarks rank_leaderboard [--runs-dir runs/ranking] [--recipes din-ml-1m ...]

A recipe whose run directory already holds metrics.json is not retrained. About 40 minutes on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks._common import Report, parser

RECIPES = ["din-ml-1m", "din-text-ml-1m", "hstu_ranker-ml-1m", "genrank-ml-1m", "mtgr-ml-1m"]
COLUMNS = (
    "ranker | valid AUC | valid GAUC | test AUC | test GAUC | "
    "test LogLoss | test NDCG@10 | epochs (best) | train s | recipe"
)


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__, threads=False)
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/ranking"))
    ap.add_argument("--recipes", nargs="+", default=RECIPES)
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    rows = []
    for recipe in args.recipes:
        out = args.runs_dir / recipe
        if not (out / "metrics.json").exists():
            cmd = [sys.executable, "-m", "genrec", "rank-train", recipe, "--out", str(out), "--no-progress"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        m = json.loads((out / "metrics.json").read_text())
        report.results[recipe] = m
        v, t, tr = m["valid"], m["test"], m["training"]
        rows.append(
            [
                recipe.removesuffix("-ml-1m"),
                f"{v['auc']:.4f}",
                f"{v['gauc']:.4f}",
                f"{t['auc']:.4f}",
                f"{t['gauc']:.4f}",
                f"{t['logloss']:.4f}",
                f"{t['ndcg@10']:.4f}",
                f"{tr['epochs_run']} ({tr['best_epoch']})",
                f"{tr['train_seconds']:.0f}",
                f"`genrec rank-train {recipe}`",
            ]
        )
    report.table(COLUMNS, rows)
    p = report.results[args.recipes[0]]["protocol"]
    s = p["split"]
    report.line(
        f"\nProtocol: {p['dataset']}, {s['split']}, {s['label']}, cut-offs at quantiles {s['valid_quantile']} / "
        f"{s['test_quantile']}; impressions {s['impressions']}; {p['history']}; {p['checkpoint_selection']}; "
        f"seed {p['seed']}; single run each on this 2-core CPU machine."
    )
    report.save()
