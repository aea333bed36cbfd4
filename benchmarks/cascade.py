"""Cascade table: retrieval -> top 200 -> ranker -> top 10, against retrieval's own top 10, on the same users.

    python -m benchmarks cascade RETRIEVAL_RUN RANKER_RUN [RANKER_RUN ...] [--k-retrieve 200]

Each ranker gets two rows: candidates ordered by its like-probability alone, and by the blend of like- and
retrieval log-probabilities with the weight chosen on the validation users (genrec/experiments/cascade.py).

RETRIEVAL_RUN: `genrec train sasrec --dataset ml-1m --set data.split=temporal ...`; RANKER_RUN(s):
`genrec rank-train <ranker>-ml-1m`. Protocol in genrec/experiments/cascade.py (also printed under the table).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import Report, parser
from genrec.experiments.cascade import SELECT_METRIC, cascade


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__, threads=False)
    ap.add_argument("retrieval", type=Path)
    ap.add_argument("rankers", type=Path, nargs="+")
    ap.add_argument("--k-retrieve", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    k = args.k
    cols = [f"hr@{k}", f"ndcg@{k}", f"liked_precision@{k}", f"liked_ndcg@{k}"]
    rows = []
    for i, ranker in enumerate(args.rankers):
        res = cascade(args.retrieval, ranker, args.k_retrieve, k)
        report.results[str(ranker)] = res
        lists = [("retrieval alone", res["retrieval"])] if i == 0 else []
        lists.append((f"retrieval -> top {args.k_retrieve} -> {ranker.name}", res["cascade"]))
        lists.append(
            (
                f"retrieval -> top {args.k_retrieve} -> {ranker.name}, blend w={res['blend_weight']:g}",
                res["blend"],
            )
        )
        rows += [[name, *(f"{m[c]:.4f}" for c in cols), m["users"]] for name, m in lists]
    report.table(["list", *cols, "users"], rows)
    p = next(iter(report.results.values()))["protocol"]
    report.line(
        f"\nProtocol: retrieval run {p['retrieval_run']}; {p['users']}; judged against {p['judged_against']}; "
        f"blend: {p['blend']}."
    )
    select = f"{SELECT_METRIC}@{k}"
    for ranker, res in report.results.items():
        weights = ", ".join(f"w={w}: {v:.4f}" for w, v in res["valid_by_weight"].items())
        report.line(
            f"Validation {select}, {Path(ranker).name}: retrieval alone {res['valid_retrieval_alone']:.4f}; "
            f"{weights}"
        )
    report.save()
