"""What `genrec.runtime.keep_freed_memory()` (applied by the `genrec` command) buys: glibc malloc as it comes
against malloc keeping freed memory for reuse.

    .venv/bin/python benchmarks/allocator.py                       # Beauty SASRec recipe, 3 rounds
    .venv/bin/python benchmarks/allocator.py --recipe hstu-amazon-beauty --rounds 5

Each measurement is a fresh process (malloc settings are process-wide and cannot be undone), the two settings
alternate so that a slower spell of a shared machine hits both, and each process times `--train-steps` training
steps of the recipe (forward, backward, clipping, AdamW, on real batches) and `--val-passes` full-catalogue
validation passes after one warm-up pass. The table prints medians over the rounds and the ratio to glibc's
defaults; the last line (`speedup validation: <x>x train: <y>x`) is for quick checks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {"glibc defaults": "0", "keep freed memory": "1"}


def child(args) -> None:
    import numpy as np
    import torch

    from genrec.config import load_config
    from genrec.eval.evaluator import validation_score
    from genrec.io import json_text
    from genrec.models import build_model
    from genrec.objectives import build_objective
    from genrec.runs import make_split, prepare_dataset
    from genrec.runtime import keep_freed_memory
    from genrec.training.trainer import build_optimizer, training_step

    applied = keep_freed_memory() if args.child == "1" else False
    torch.set_num_threads(args.threads)
    cfg = load_config(args.recipe)
    split = make_split(prepare_dataset(cfg.data), cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, split.n_items, split.n_users)
    model.train()
    optimizer = build_optimizer(model, cfg.train, cfg.train.adam_kernel)
    objective = build_objective(cfg.train.objective, model, split.train.items)
    batches = list(model.training_batches(split, np.random.default_rng(0), cfg.train.batch_size))
    batches = batches[: args.train_steps + 5]
    for batch in batches[:5]:  # warm-up
        training_step(model, objective, optimizer, batch, cfg.train.grad_clip)
    t0 = time.perf_counter()
    for batch in batches[5:]:
        training_step(model, objective, optimizer, batch, cfg.train.grad_clip)
    train_ms = (time.perf_counter() - t0) / len(batches[5:]) * 1e3
    validation_score(model, split.valid, split.n_items, cfg.eval)  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.val_passes):
        validation_score(model, split.valid, split.n_items, cfg.eval)
    val_s = (time.perf_counter() - t0) / args.val_passes
    print(json_text({"applied": applied, "train_ms": train_ms, "val_s": val_s}, indent=None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="sasrec-amazon-beauty")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--val-passes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=["0", "1"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args)
        return
    results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, flag in SETTINGS.items():
            cmd = [sys.executable, __file__, "--child", flag, "--recipe", args.recipe]
            cmd += ["--train-steps", str(args.train_steps), "--val-passes", str(args.val_passes)]
            cmd += ["--threads", str(args.threads)]
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            results[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
    if not any(r["applied"] for r in results["keep freed memory"]):
        print("note: keep_freed_memory() did not apply on this platform, both rows use the same malloc")
    print(
        f"{args.recipe}, {args.threads} threads, medians of {args.rounds} fresh processes per setting "
        f"({args.train_steps} training steps, {args.val_passes} validation passes each)\n"
    )
    print("| malloc | ms per training step | vs defaults | s per validation pass | vs defaults |")
    print("|---|---|---|---|---|")
    base = {
        key: statistics.median(r[key] for r in results["glibc defaults"]) for key in ("train_ms", "val_s")
    }
    speedups = {}
    for name in SETTINGS:
        med = {key: statistics.median(r[key] for r in results[name]) for key in ("train_ms", "val_s")}
        speedups = {key: base[key] / med[key] for key in med}
        print(
            f"| {name} | {med['train_ms']:.1f} | {speedups['train_ms']:.2f}x | {med['val_s']:.2f} "
            f"| {speedups['val_s']:.2f}x |"
        )
    print(f"\nspeedup validation: {speedups['val_s']:.2f}x train: {speedups['train_ms']:.2f}x")


if __name__ == "__main__":
    main()
