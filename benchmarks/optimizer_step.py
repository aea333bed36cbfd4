"""Cost of one AdamW step for the sequence models, per implementation, and whether they agree.

    .venv/bin/python benchmarks/optimizer_step.py                                 # Beauty SASRec and HSTU recipes
    .venv/bin/python benchmarks/optimizer_step.py --recipes sasrec-amazon-beauty --steps 500

Each recipe's model is built at its dataset's catalogue size and stepped with the same random gradients by the
three implementations of `genrec.training.trainer.build_optimizer` (`train.adam_kernel`): PyTorch's per-tensor loop
(the default), the multi-tensor kernel and the fused kernel. The table prints the median milliseconds per step over
`--repeats` timings (implementations alternate, so a slower spell of a shared machine hits all of them), the
speed-up over the loop and the largest weight difference from the loop after all steps (0 = the same bits).
With `--train-steps N` (default 60) it also times whole training steps (forward, backward, clipping, AdamW) on N
real batches of the recipe's data, so the optimiser's share of an epoch is visible.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec.config import load_config  # noqa: E402
from genrec.models import build_model  # noqa: E402
from genrec.objectives import build_objective  # noqa: E402
from genrec.runs import make_split, prepare_dataset  # noqa: E402
from genrec.training.trainer import build_optimizer, training_step  # noqa: E402

IMPLEMENTATIONS = ["loop", "multi_tensor", "fused"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=["sasrec-amazon-beauty", "hstu-amazon-beauty"])
    ap.add_argument("--steps", type=int, default=200, help="steps per timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=60, help="whole training steps timed (0 = skip)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"AdamW step ({args.threads} threads, median of {args.repeats} timings of {args.steps} steps)\n")
    print(
        "| recipe | parameters | implementation | ms/step | speed-up vs loop | max weight diff vs loop "
        "| ms per training step |"
    )
    print("|---|---|---|---|---|---|---|")
    for recipe in args.recipes:
        cfg = load_config(recipe)
        ds = prepare_dataset(cfg.data)
        stats = ds.stats()
        torch.manual_seed(0)
        models = {impl: build_model(cfg.model, stats["items"], stats["users"]) for impl in IMPLEMENTATIONS}
        for model in models.values():
            model.load_state_dict(models["loop"].state_dict())
        optimizers = {impl: build_optimizer(models[impl], cfg.train, impl) for impl in IMPLEMENTATIONS}
        gen = torch.Generator().manual_seed(1)
        grads = [torch.randn(p.shape, generator=gen) * 1e-2 for p in models["loop"].parameters()]
        for model in models.values():
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
        times = {impl: [] for impl in IMPLEMENTATIONS}
        for _ in range(args.repeats):
            for impl in IMPLEMENTATIONS:
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    optimizers[impl].step()
                times[impl].append((time.perf_counter() - t0) / args.steps * 1e3)
        n_params = sum(p.numel() for p in models["loop"].parameters())
        loop_ms = statistics.median(times["loop"])
        train_ms = train_step_ms(cfg, ds, args) if args.train_steps else {}
        for impl in IMPLEMENTATIONS:
            ms = statistics.median(times[impl])
            with torch.no_grad():
                diff = max(
                    float((p - q).abs().max())
                    for p, q in zip(models[impl].parameters(), models["loop"].parameters())
                )
            step = f"{train_ms[impl]:.1f}" if impl in train_ms else "-"
            print(
                f"| {recipe} | {n_params:,} | {impl} | {ms:.2f} | {loop_ms / ms:.2f}x | {diff:.1e} | {step} |"
            )


def train_step_ms(cfg, ds, args) -> dict[str, float]:
    """Median ms of a whole training step per implementation, alternating implementations between timings."""
    split = make_split(ds, cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, split.n_items, split.n_users)
    model.train()
    batches = list(model.training_batches(split, np.random.default_rng(0), cfg.train.batch_size))
    batches = batches[: args.train_steps]
    optimizers = {impl: build_optimizer(model, cfg.train, impl) for impl in IMPLEMENTATIONS}
    objective = build_objective(cfg.train.objective, model, split.train.items)
    times = {impl: [] for impl in IMPLEMENTATIONS}
    for _ in range(args.repeats):
        for impl, optimizer in optimizers.items():
            t0 = time.perf_counter()
            for batch in batches:
                training_step(model, objective, optimizer, batch, cfg.train.grad_clip)
            times[impl].append((time.perf_counter() - t0) / len(batches) * 1e3)
    return {impl: statistics.median(t) for impl, t in times.items()}


if __name__ == "__main__":
    main()
