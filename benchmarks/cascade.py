"""Cascade table: retrieval -> top 200 -> ranker -> top 10, against retrieval's own top 10, on the same users.

Each ranker gets two rows: candidates ordered by its like-probability alone, and by the blend of like- and
retrieval log-probabilities with the weight chosen on the validation users (genrec/eval/cascade.py).

    .venv/bin/python benchmarks/cascade.py RETRIEVAL_RUN RANKER_RUN [RANKER_RUN ...] [--k-retrieve 200]

RETRIEVAL_RUN: `genrec train sasrec --dataset ml-1m --set data.split=temporal ...`; RANKER_RUN(s):
`genrec rank-train <ranker>-ml-1m`. Protocol in genrec/eval/cascade.py (also printed under the table).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genrec.experiments.cascade import SELECT_METRIC, cascade
from genrec.io import write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("retrieval", type=Path)
    ap.add_argument("rankers", type=Path, nargs="+")
    ap.add_argument("--k-retrieve", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--json", type=Path, help="also write every result here")
    args = ap.parse_args()
    k = args.k
    cols = [f"hr@{k}", f"ndcg@{k}", f"liked_precision@{k}", f"liked_ndcg@{k}"]
    print(f"| list | {' | '.join(cols)} | users |")
    print("|---" * (len(cols) + 2) + "|")
    results = {}
    for i, ranker in enumerate(args.rankers):
        res = cascade(args.retrieval, ranker, args.k_retrieve, k)
        results[str(ranker)] = res
        rows = [("retrieval alone", res["retrieval"])] if i == 0 else []
        rows.append((f"retrieval -> top {args.k_retrieve} -> {ranker.name}", res["cascade"]))
        rows.append(
            (
                f"retrieval -> top {args.k_retrieve} -> {ranker.name}, blend w={res['blend_weight']:g}",
                res["blend"],
            )
        )
        for name, m in rows:
            print(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + f" | {m['users']} |", flush=True)
    p = next(iter(results.values()))["protocol"]
    print(
        f"\nProtocol: retrieval run {p['retrieval_run']}; {p['users']}; judged against {p['judged_against']}; "
        f"blend: {p['blend']}."
    )
    select = f"{SELECT_METRIC}@{k}"
    for ranker, res in results.items():
        weights = ", ".join(f"w={w}: {v:.4f}" for w, v in res["valid_by_weight"].items())
        print(
            f"Validation {select}, {Path(ranker).name}: retrieval alone {res['valid_retrieval_alone']:.4f}; "
            f"{weights}"
        )
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
