"""`torch.compile` on this CPU: SASRec's and HSTU's Beauty training steps eager and compiled, in one run.

    .venv/bin/python benchmarks/compile_step.py                 # both recipes, 40 timed steps each way
    .venv/bin/python benchmarks/compile_step.py --steps 20 --models sasrec

Models: the `sasrec-amazon-beauty` and `hstu-amazon-beauty` recipes on Amazon Beauty, each with its objective and
optimiser. A step is forward, loss, backward and the optimiser's update; compiled, the loss (forward and, through
AOTAutograd, its backward) is `genrec.runtime.compile_step(loss_fn)` (inductor, default mode, shapes marked
dynamic after the first recompilation as PyTorch does); the update stays eager. Both variants start from the same
weights and see the same batches of the length-bucketed epoch order; the first `--warmup` batches (compilation
and recompilations for new shapes happen there) are not timed, and the mean of the timed steps is reported.
FLOPs of the timed steps are counted with torch's flop formulas on an eager copy (`speed.DtypeFlops`) and divided
by their time, against the float32 matmul peak measured here (2048^3, best of 10: `peers.matmul_peak_flops`).
The loss after the timed steps is printed for both (it differs by dropout masks, which compiled code draws in its
own order; `tests/test_compile.py` checks equality without dropout). The table is printed and written as JSON
beside this file.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from genrec.config import load_config  # noqa: E402
from genrec.models import build_model  # noqa: E402
from genrec.objectives import build_objective  # noqa: E402
from genrec.runs import make_split, prepare_dataset  # noqa: E402
from genrec.runtime import compile_step, cpu_name  # noqa: E402
from genrec.training.trainer import build_optimizer  # noqa: E402

RECIPES = {"sasrec": "sasrec-amazon-beauty", "hstu": "hstu-amazon-beauty"}


def run_steps(model, opt, loss_fn, batches) -> tuple[list[float], float]:
    """Step times (s) and the last loss."""
    times, loss = [], None
    model.train()
    for batch in batches:
        t0 = time.perf_counter()
        loss = loss_fn(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times, float(loss.detach())


def measure(name: str, steps: int, warmup: int) -> dict:
    from speed import DtypeFlops

    cfg = load_config(RECIPES[name], [], "amazon-beauty")
    split = make_split(prepare_dataset(cfg.data), cfg.data)
    torch.manual_seed(0)
    base = build_model(cfg.model, split.n_items, split.n_users)
    batches = model_batches(base, split, cfg.train.batch_size, warmup + steps)
    out = {"model": name, "recipe": RECIPES[name], "batch_size": cfg.train.batch_size, "timed_steps": steps}
    for variant in ("flops", "eager", "compiled"):
        model = copy.deepcopy(base)
        opt = build_optimizer(model, cfg.train)
        objective = build_objective(model.objective_name(), model, split.train.items)

        def loss_fn(batch, model=model, objective=objective):
            return objective(model, batch)

        if variant == "flops":  # the timed steps' FLOPs, counted on an eager copy of the model
            with DtypeFlops() as counter:
                run_steps(model, opt, loss_fn, batches[warmup:])
            out["flops_per_step"] = sum(counter.counts.values()) / steps
            continue
        if variant == "compiled":
            loss_fn = compile_step(loss_fn)
        t0 = time.perf_counter()
        run_steps(model, opt, loss_fn, batches[:warmup])
        out[f"{variant}_warmup_s"] = round(time.perf_counter() - t0, 1)
        times, loss = run_steps(model, opt, loss_fn, batches[warmup:])
        out[f"{variant}_ms"] = round(1000 * statistics.mean(times), 1)
        out[f"{variant}_loss"] = round(loss, 5)
    out["speedup"] = round(out["eager_ms"] / out["compiled_ms"], 3)
    return out


def model_batches(model, split, batch_size: int, n: int) -> list:
    """The first n batches of one epoch's order (lengths vary: as in training, shapes change from step to step)."""
    batches = model.training_batches(split, np.random.default_rng(0), batch_size)
    return [b for b, _ in zip(batches, range(n))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--steps", type=int, default=40, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps first (compilation)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = ap.parse_args()
    import peers

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    peak = peers.matmul_peak_flops("float32", threads=args.threads)
    rows = [measure(name, args.steps, args.warmup) for name in args.models]
    head = (
        f"CPU: {cpu_name()}, {args.threads} threads, torch {torch.__version__}, float32 matmul peak "
        f"{peak / 1e9:.0f} GFLOP/s, load average before: {load:.2f}"
    )
    print(head)
    print(
        "| model | eager (ms/step) | compiled (ms/step) | speed-up | eager GFLOP/s (of fp32 peak) | "
        "compiled GFLOP/s (of fp32 peak) | warm-up eager / compiled (s) | last loss eager / compiled |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        eff = []
        for v in ("eager", "compiled"):
            achieved = r["flops_per_step"] / (r[f"{v}_ms"] / 1000)
            r[f"{v}_gflops"] = round(achieved / 1e9, 1)
            eff.append(f"{achieved / 1e9:.0f} ({achieved / peak:.0%})")
        print(
            f"| {r['model']} ({r['recipe']}, batch {r['batch_size']}) | {r['eager_ms']} | {r['compiled_ms']} | "
            f"{r['speedup']:.2f}x | {eff[0]} | {eff[1]} | {r['eager_warmup_s']} / {r['compiled_warmup_s']} | "
            f"{r['eager_loss']} / {r['compiled_loss']} |"
        )
    args.json.write_text(json.dumps({"machine": head, "peak_flops": peak, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
