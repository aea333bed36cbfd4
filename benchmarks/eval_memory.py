"""Memory of full-catalogue evaluation at catalogue scale: a SASRec scoring a synthetic 1M-item catalogue for 100k
users, items scored in chunks (`genrec.eval.chunked`), against the 3 GB target; and, on a catalogue where the
whole score matrix also fits, the chunked and the whole-matrix evaluator side by side (same metrics?).

    .venv/bin/python benchmarks/eval_memory.py                          # 1M items x 100k users, then the check
    .venv/bin/python benchmarks/eval_memory.py --items 200000 --users 20000 --check-items 50000

The model is a SASRec of the default size (d 64, 2 blocks, length 50) with random weights: memory and time do not
depend on what the weights learned, and metrics of random weights are near zero, which is all the equality check
needs. Histories: 1 to 50 items, uniform; targets uniform. Evaluation as `genrec train` runs the test split:
both conventions, K = 5, 10, 20, 50, coverage, batches of 1024 users. Each evaluation runs in its own process
(peak RSS is that process's maximum resident set, model and data included), with the malloc setting the CLI
applies (`genrec.runtime.keep_freed_memory`). The table is printed and written as JSON beside this file.
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
    code = (
        f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
        f"from eval_memory import worker; print(json.dumps(worker({items}, {users}, {chunk!r}, {threads})))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if res.returncode:  # e.g. killed for memory
        last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit status {res.returncode}"
        evaluator = "whole matrix" if chunk == 0 else "chunked"
        return {"items": items, "users": users, "evaluator": evaluator, "error": last}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--check-items", type=int, default=100_000, help="catalogue of the equality check")
    ap.add_argument("--check-users", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = ap.parse_args()
    load = os.getloadavg()[0]
    rows = [run_worker(args.items, args.users, None, args.threads)]
    check = [run_worker(args.check_items, args.check_users, chunk, args.threads) for chunk in (None, 0)]
    rows += check
    same = all("metrics" in r for r in check) and check[0]["metrics"] == check[1]["metrics"]
    print(f"threads {args.threads}, load average before: {load:.2f}; target: peak RSS < {TARGET_MB:,} MB")
    print("| items | users | evaluator | peak RSS (MB) | seconds | test N@10 | test R@10 | coverage@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['items']:,} | {r['users']:,} | {r['evaluator']} | failed: {r['error']} | | | | |")
            continue
        m = r["metrics"]["filtered"]
        print(
            f"| {r['items']:,} | {r['users']:,} | {r['evaluator']} | {r['peak_rss_mb']:,.0f} | {r['seconds']} | "
            f"{m['ndcg@10']:.6f} | {m['recall@10']:.6f} | {m['coverage@10']:.6f} |"
        )
    big = rows[0]
    verdict = "met" if big.get("peak_rss_mb", float("inf")) < TARGET_MB else "missed"
    print(
        f"{args.items:,} items: peak RSS {big.get('peak_rss_mb', '-')} MB, target < {TARGET_MB:,} MB {verdict}"
    )
    print(
        f"{args.check_items:,} items: chunked and whole-matrix metrics (both conventions, every key) equal: {same}"
    )
    args.json.write_text(
        json.dumps({"load": load, "target_mb": TARGET_MB, "equal": same, "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
