"""The GPU check, as one script: on a CUDA machine it runs the `-m gpu` tests, trains SASRec and TIGER on Amazon
Beauty for a bounded time, trains SASRec on ML-100K on the CPU and on the GPU, and prints one table last.

    python -m benchmarks gpu                  # about 7 minutes on one H100
    python -m benchmarks gpu --skip-tests

On a machine without CUDA it prints one line saying so (`error: ...`) and exits with status 1.

Rows: sequences/s (training examples per second over the training epochs), achieved TFLOP/s (FLOPs of a training
step counted by torch's flop formulas on one batch, per example, times examples/s) and its share of this card's
bfloat16 matmul peak (8192^3, best of 10, measured here), peak GPU memory (torch's allocator, per training),
time to the best validation epoch, and test N@10 / R@10 (history excluded). The ML-100K rows compare the same
recipe and epoch count on the CPU and on the GPU: they should agree within run-to-run noise (seeds are the
same; GPU kernels sum in other orders). The table is written as JSON too (`.bench/gpu.json`, or `--json PATH`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import ROOT, Report, parser

NO_CUDA = "error: no CUDA device is available on this machine (python -m benchmarks gpu needs one)"

# (label, recipe, dataset, minutes of training): bounded so that the whole check stays under 8 minutes.
BEAUTY = [
    ("SASRec", "sasrec-amazon-beauty", 1.5),
    ("TIGER", "tiger-amazon-beauty", 3.0),
]
ML100K_EPOCHS = 40


def gpu_tests() -> str:
    """Runs `pytest -m gpu`; its summary line (`N passed in S s`)."""
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(ROOT / "tests")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    lines = [line for line in res.stdout.strip().splitlines() if line.strip()]
    return lines[-1].strip("= ") if lines else f"pytest exited with status {res.returncode}"


def bf16_peak_flops(n: int = 8192, reps: int = 10) -> float:
    """Best achieved FLOP/s of an n x n @ n x n bfloat16 matmul on the current CUDA device."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    torch.matmul(a, b)  # warm-up: kernel selection
    best = float("inf")
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b)
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1000)
    return 2 * n**3 / best


def flops_per_example(run, overrides: dict) -> float:
    """FLOPs of one training step (forward, loss, backward) on the GPU, per example of the batch."""
    import numpy as np
    from torch.utils.flop_counter import FlopCounterMode

    from genrec.objectives import build_objective
    from genrec.runs import make_split, prepare_dataset
    from genrec.runtime import resolve_precision, to_device

    split = make_split(prepare_dataset(run.cfg.data), run.cfg.data, run.items["item_id"].to_numpy())
    model = run.model.to("cuda").train()
    objective = build_objective(run.cfg.train.objective, model, split.train.items)
    batch = next(iter(model.training_batches(split, np.random.default_rng(0), run.cfg.train.batch_size)))
    rows = len(batch[0]) if isinstance(batch, (tuple, list)) else len(batch)
    counter = FlopCounterMode(display=False)
    with counter, resolve_precision(overrides["train.precision"], "cuda").autocast():
        objective(model, to_device(batch, "cuda")).backward()
    return counter.get_total_flops() / rows


def train_row(label: str, recipe: str, dataset: str, overrides: dict, out: Path) -> dict:
    import torch

    import genrec

    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run = genrec.train(recipe, dataset=dataset, overrides=overrides, out=out)
    wall = time.perf_counter() - t0
    training = run.metrics["training"]
    epochs = training.get("history", [])
    per_s = sum(e.get("samples_per_s", 0.0) for e in epochs) / max(1, len(epochs))
    return {
        "model": label,
        "recipe": recipe,
        "dataset": dataset,
        "device": overrides["train.device"],
        "epochs": len(epochs),
        "sequences_per_s": per_s,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20
        if overrides["train.device"] != "cpu"
        else None,
        "seconds_to_best": training.get("seconds_to_best"),
        "wall_s": wall,
        "ndcg@10": run.metrics["test"]["ndcg@10"],
        "recall@10": run.metrics["test"]["recall@10"],
        "run": run,
    }


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__, threads=False)
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        raise SystemExit(1)
    from genrec.runtime import device_name

    report = Report(__name__, args)
    t_start = time.perf_counter()
    card = device_name("cuda")
    tests = "skipped" if args.skip_tests else gpu_tests()
    peak = bf16_peak_flops()
    gpu = {"train.device": "cuda", "train.precision": "bf16"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="genrec-gpu-") as tmp:
        for label, recipe, minutes in BEAUTY:
            overrides = {**gpu, "train.max_minutes": minutes}
            row = train_row(label, recipe, "amazon-beauty", overrides, Path(tmp) / recipe)
            row["tflops"] = flops_per_example(row.pop("run"), overrides) * row["sequences_per_s"] / 1e12
            rows.append(row)
        for device in ("cpu", "cuda"):
            overrides = {"train.device": device, "train.epochs": ML100K_EPOCHS, "train.precision": "fp32"}
            row = train_row("SASRec", "sasrec", "ml-100k", overrides, Path(tmp) / f"ml100k-{device}")
            row.pop("run")
            rows.append(row)
    total = time.perf_counter() - t_start
    cells = []
    for r in rows:
        flops = f"{r['tflops']:.1f} ({r['tflops'] * 1e12 / peak:.0%})" if "tflops" in r else "-"
        memory = f"{r['peak_gpu_mb']:,.0f}" if r["peak_gpu_mb"] is not None else "-"
        cells.append(
            [f"{r['model']} ({r['recipe']})", r["dataset"], r["device"], r["epochs"], f"{r['sequences_per_s']:,.0f}",
             flops, memory, r["seconds_to_best"], f"{r['ndcg@10']:.4f}", f"{r['recall@10']:.4f}"]
        )  # fmt: skip
    report.results = {"card": card, "bf16_peak": peak, "tests": tests, "rows": rows}
    report.table(
        "model | data | device | epochs | sequences/s | TFLOP/s (of bf16 peak) | peak GPU memory (MB) | "
        "time to best valid (s) | test N@10 | test R@10",
        cells,
        title=f"GPU: {card}; bf16 matmul peak {peak / 1e12:.0f} TFLOP/s; gpu tests: {tests}; "
        f"total {total / 60:.1f} min",
    )
    report.save()


if __name__ == "__main__":
    main()
