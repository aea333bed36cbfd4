"""What `genrec.runtime.keep_freed_memory()` (applied by the `genrec` command) buys against glibc's malloc defaults.

    python -m benchmarks allocator                       # Beauty SASRec recipe, 3 rounds
    python -m benchmarks allocator --recipe hstu-amazon-beauty --rounds 5

Each measurement is a fresh process (malloc settings are process-wide and cannot be undone), the two settings
alternate so that a slower spell of a shared machine hits both, and each process times `--train-steps` training
steps of the recipe (forward, backward, clipping, AdamW, on real batches; mean per step after 5 warm-up steps)
and `--val-passes` full-catalogue validation passes after one warm-up pass (median). The table prints medians over
the rounds and the ratio to glibc's defaults; the last line (`speedup validation: <x>x train: <y>x`) is for quick
checks.
"""

from __future__ import annotations

import os
import statistics

import numpy as np
import torch

from benchmarks._common import Report, fresh_process, parser, timed
from genrec.config import load_config
from genrec.eval.evaluator import validation_score
from genrec.models import build_model
from genrec.objectives import build_objective
from genrec.runs import make_split, prepare_dataset
from genrec.runtime import keep_freed_memory
from genrec.training.trainer import build_optimizer, training_step

SETTINGS = {"glibc defaults": False, "keep freed memory": True}


def measure(recipe: str, keep_freed: bool, train_steps: int, val_passes: int, threads: int) -> dict:
    """One process's figures: ms per training step and seconds per validation pass."""
    applied = keep_freed_memory() if keep_freed else False
    torch.set_num_threads(threads)
    cfg = load_config(recipe)
    split = make_split(prepare_dataset(cfg.data), cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, split.n_items, split.n_users)
    model.train()
    optimizer = build_optimizer(model, cfg.train)
    objective = build_objective(cfg.train.objective, model, split.train.items)
    batches = list(model.training_batches(split, np.random.default_rng(0), cfg.train.batch_size))
    train_steps = min(train_steps, len(batches) - 5)
    batches = iter(batches)
    steps = timed(
        lambda: training_step(model, objective, optimizer, next(batches), cfg.train.grad_clip), train_steps, 5
    )
    passes = timed(lambda: validation_score(model, split.valid, split.n_items, cfg.eval), val_passes)
    return {"applied": applied, "train_ms": steps.total / train_steps * 1e3, "val_s": passes.median}


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("--recipe", default="sasrec-amazon-beauty")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--val-passes", type=int, default=2)
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    # malloc reads MALLOC_* at start-up: the children start without any, so only keep_freed_memory() differs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, keep in SETTINGS.items():
            figures = (args.recipe, keep, args.train_steps, args.val_passes, args.threads)
            results[name].append(fresh_process(measure, *figures, env=env))
    if not any(r["applied"] for r in results["keep freed memory"]):
        report.line("note: keep_freed_memory() did not apply on this platform, both rows use the same malloc")
    report.line(
        f"{args.recipe}, {args.threads} threads, medians of {args.rounds} fresh processes per setting "
        f"({args.train_steps} training steps, {args.val_passes} validation passes each)\n"
    )
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in ("train_ms", "val_s")}
        for name, runs in results.items()
    }
    base = medians["glibc defaults"]
    speedups = {name: {key: base[key] / med[key] for key in med} for name, med in medians.items()}
    rows = [
        (
            name,
            f"{med['train_ms']:.1f}",
            f"{speedups[name]['train_ms']:.2f}x",
            f"{med['val_s']:.2f}",
            f"{speedups[name]['val_s']:.2f}x",
        )
        for name, med in medians.items()
    ]
    report.table(
        ["malloc", "ms per training step", "vs defaults", "s per validation pass", "vs defaults"], rows
    )
    kept = speedups["keep freed memory"]
    report.line(f"\nspeedup validation: {kept['val_s']:.2f}x train: {kept['train_ms']:.2f}x")
    report.results = {"rounds": results, "medians": medians, "speedups": speedups}
    report.save()
