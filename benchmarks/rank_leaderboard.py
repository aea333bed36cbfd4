"""Ranking leaderboard: train every ML-1M ranking recipe (or reuse finished runs) and print a Markdown table.

    .venv/bin/python benchmarks/rank_leaderboard.py [--runs-dir runs/ranking] [--recipes din-ml-1m ...]

A recipe whose run directory already holds metrics.json is not retrained. About 40 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RECIPES = ["din-ml-1m", "din-text-ml-1m", "hstu_ranker-ml-1m", "genrank-ml-1m", "mtgr-ml-1m"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/ranking"))
    ap.add_argument("--recipes", nargs="+", default=RECIPES)
    args = ap.parse_args()
    rows = []
    for recipe in args.recipes:
        out = args.runs_dir / recipe
        if not (out / "metrics.json").exists():
            cmd = [sys.executable, "-m", "genrec", "rank-train", recipe, "--out", str(out), "--no-progress"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        m = json.loads((out / "metrics.json").read_text())
        rows.append((recipe, m))
    cols = "valid AUC | valid GAUC | test AUC | test GAUC | test LogLoss | test NDCG@10 | epochs (best) | train s"
    print(f"| ranker | {cols} | recipe |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for recipe, m in rows:
        v, t, tr = m["valid"], m["test"], m["training"]
        print(
            f"| {recipe.removesuffix('-ml-1m')} | {v['auc']:.4f} | {v['gauc']:.4f} | {t['auc']:.4f} | "
            f"{t['gauc']:.4f} | {t['logloss']:.4f} | {t['ndcg@10']:.4f} | {tr['epochs_run']} ({tr['best_epoch']}) | "
            f"{tr['train_seconds']:.0f} | `genrec rank-train {recipe}` |"
        )
    p = rows[0][1]["protocol"]
    s = p["split"]
    print(
        f"\nProtocol: {p['dataset']}, {s['split']}, {s['label']}, cut-offs at quantiles {s['valid_quantile']} / "
        f"{s['test_quantile']}; impressions {s['impressions']}; {p['history']}; {p['checkpoint_selection']}; "
        f"seed {p['seed']}; single run each on this 2-core CPU machine."
    )


if __name__ == "__main__":
    main()
