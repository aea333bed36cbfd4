"""Memory of full-catalogue evaluation at catalogue scale: a SASRec scoring a synthetic 1M-item catalogue for 100k
users, items scored in chunks (`genrec.eval.chunked`), against the 3 GB target; and, on a catalogue where the
whole score matrix also fits, the chunked and the whole-matrix evaluator side by side (same metrics?).

    python -m benchmarks eval_memory                          # 1M items x 100k users, then the check
    python -m benchmarks eval_memory --items 200000 --users 20000 --check-items 50000

The model is a SASRec of the default size (d 64, 2 blocks, length 50) with random weights: memory and time do not
depend on what the weights learned, and metrics of random weights are near zero, which is all the equality check
needs. Histories: 1 to 50 items, uniform; targets uniform. Evaluation as `genrec train` runs the test split:
both conventions, K = 5, 10, 20, 50, coverage, batches of 1024 users. Each evaluation runs in its own process
(peak RSS is that process's maximum resident set, model and data included), with the malloc setting the CLI
applies (`genrec.runtime.keep_freed_memory`). The table is printed and written as JSON (`.bench/eval_memory.json`,
or `--json PATH`).
"""

from __future__ import annotations

import resource
import time

from benchmarks._common import Report, fresh_process, parser

TARGET_MB = 3 * 1024


def worker(items: int, users: int, chunk: int | None, threads: int) -> dict:
    """Evaluate a random-weight SASRec on a synthetic catalogue; peak RSS, seconds and the metrics."""
    from genrec.runtime import keep_freed_memory

    keep_freed_memory()
    import numpy as np
    import torch

    from genrec.config import EvalConfig, load_config
    from genrec.data.split import Csr, EvalSet
    from genrec.eval.evaluator import evaluate
    from genrec.models import build_model

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 51, size=users)
    history = Csr(np.r_[0, np.cumsum(lengths)], rng.integers(1, items + 1, size=int(lengths.sum())))
    examples = EvalSet(np.arange(users), history, rng.integers(1, items + 1, size=users))
    torch.manual_seed(0)
    model = build_model(load_config("sasrec").model, items, users)
    cfg = EvalConfig()
    t0 = time.perf_counter()
    metrics = evaluate(model, examples, items, cfg, chunk=chunk)
    seconds = time.perf_counter() - t0
    return {
        "items": items,
        "users": users,
        "evaluator": "whole matrix" if chunk == 0 else "chunked",
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(seconds, 1),
        "metrics": metrics,
    }


def run_worker(items: int, users: int, chunk: int | None, threads: int) -> dict:
    """`worker` in a fresh process (its own peak RSS); a failed one (e.g. killed for memory) gives an error row."""
    out = fresh_process(worker, items, users, chunk, threads, check=False)
    if "error" in out:
        return {
            "items": items,
            "users": users,
            "evaluator": "whole matrix" if chunk == 0 else "chunked",
            **out,
        }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--check-items", type=int, default=100_000, help="catalogue of the equality check")
    ap.add_argument("--check-users", type=int, default=10_000)
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    rows = [run_worker(args.items, args.users, None, args.threads)]
    check = [run_worker(args.check_items, args.check_users, chunk, args.threads) for chunk in (None, 0)]
    rows += check
    same = all("metrics" in r for r in check) and check[0]["metrics"] == check[1]["metrics"]
    cells = []
    for r in rows:
        if "error" in r:
            cells.append(
                [f"{r['items']:,}", f"{r['users']:,}", r["evaluator"], f"failed: {r['error']}", *[""] * 4]
            )
            continue
        m = r["metrics"]["filtered"]
        cells.append(
            [f"{r['items']:,}", f"{r['users']:,}", r["evaluator"], f"{r['peak_rss_mb']:,.0f}", r["seconds"],
             f"{m['ndcg@10']:.6f}", f"{m['recall@10']:.6f}", f"{m['coverage@10']:.6f}"]
        )  # fmt: skip
    report.results = {"target_mb": TARGET_MB, "equal": same, "rows": rows}
    report.table(
        "items | users | evaluator | peak RSS (MB) | seconds | test N@10 | test R@10 | coverage@10",
        cells,
        title=f"threads {args.threads}; target: peak RSS < {TARGET_MB:,} MB",
    )
    big = rows[0]
    verdict = "met" if big.get("peak_rss_mb", float("inf")) < TARGET_MB else "missed"
    report.line(
        f"{args.items:,} items: peak RSS {big.get('peak_rss_mb', '-')} MB, target < {TARGET_MB:,} MB {verdict}"
    )
    report.line(
        f"{args.check_items:,} items: chunked and whole-matrix metrics (both conventions, every key) equal: {same}"
    )
    report.save()


if __name__ == "__main__":
    main()
