"""`torch.compile` on this CPU: SASRec's and HSTU's Beauty training steps eager and compiled, in one run.

    python -m benchmarks compile_step                 # both recipes, 40 timed steps each way
    python -m benchmarks compile_step --steps 20 --models sasrec

Models: the `sasrec-amazon-beauty` and `hstu-amazon-beauty` recipes on Amazon Beauty, each with its objective and
optimiser. A step is forward, loss, backward and the optimiser's update (which stays eager). Two compiled
variants, both through `genrec.runtime.compile_step` (inductor, default mode, `dynamic=True`: the length-bucketed
batches change shape from step to step):
- `encoder`: the model's sequence encoder (`model.encode`) compiled; the loss (the chunked full softmax, whose
  positions are the batch's real items: a data-dependent count) stays eager;
- `step`: the whole loss function compiled (forward, and through AOTAutograd its backward), graph breaks where
  dynamo must stop (boolean masks, the softmax's chunk loop).
All variants start from the same weights and see the same batches of the epoch order; the first `--warmup` steps
(compilation, and recompilation for shapes not yet seen) are not timed, and the mean of the timed steps is
reported. FLOPs of the timed steps are counted with torch's flop formulas on an eager copy (`speed.DtypeFlops`) and
divided by their time, against the float32 matmul peak measured here (2048^3, best of 10:
`python -m benchmarks matmul_peak`). The last loss of each variant is printed (they differ by dropout masks, which
compiled code draws in its own order; `tests/test_compile.py` checks equality without dropout). The table is
printed and written as JSON (`.bench/compile_step.json`, or `--json PATH`).
"""

from __future__ import annotations

import copy
import statistics
import time

import numpy as np
import torch

from benchmarks._common import Report, matmul_peak, parser
from benchmarks.speed import DtypeFlops
from genrec.config import load_config
from genrec.models import build_model
from genrec.objectives import build_objective
from genrec.runs import make_split, prepare_dataset
from genrec.runtime import compile_step
from genrec.training.trainer import build_optimizer

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


VARIANTS = ("eager", "encoder", "step")


def measure(name: str, steps: int, warmup: int) -> dict:
    cfg = load_config(RECIPES[name], [], "amazon-beauty")
    split = make_split(prepare_dataset(cfg.data), cfg.data)
    torch.manual_seed(0)
    base = build_model(cfg.model, split.n_items, split.n_users)
    batches = model_batches(base, split, cfg.train.batch_size, warmup + steps)
    out = {"model": name, "recipe": RECIPES[name], "batch_size": cfg.train.batch_size, "timed_steps": steps}
    for variant in ("flops", *VARIANTS):
        model = copy.deepcopy(base)
        opt = build_optimizer(model, cfg.train)
        objective = build_objective(cfg.train.objective, model, split.train.items)

        def loss_fn(batch, model=model, objective=objective):
            return objective(model, batch)

        if variant == "flops":  # the timed steps' FLOPs, counted on an eager copy of the model
            with DtypeFlops() as counter:
                run_steps(model, opt, loss_fn, batches[warmup:])
            out["flops_per_step"] = sum(counter.counts.values()) / steps
            continue
        if variant == "encoder":
            model.encode = compile_step(model.encode, dynamic=True)
        elif variant == "step":
            loss_fn = compile_step(loss_fn, dynamic=True)
        t0 = time.perf_counter()
        run_steps(model, opt, loss_fn, batches[:warmup])
        out[f"{variant}_warmup_s"] = round(time.perf_counter() - t0, 1)
        times, loss = run_steps(model, opt, loss_fn, batches[warmup:])
        out[f"{variant}_ms"] = round(1000 * statistics.mean(times), 1)
        out[f"{variant}_loss"] = round(loss, 5)
    for variant in VARIANTS[1:]:
        out[f"{variant}_speedup"] = round(out["eager_ms"] / out[f"{variant}_ms"], 3)
    return out


def model_batches(model, split, batch_size: int, n: int) -> list:
    """The first n batches of one epoch's order (lengths vary: as in training, shapes change from step to step)."""
    batches = model.training_batches(split, np.random.default_rng(0), batch_size)
    return [b for b, _ in zip(batches, range(n))]


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("--models", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--steps", type=int, default=40, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps first (compilation)")
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    torch.set_num_threads(args.threads)
    peak = matmul_peak("float32", threads=args.threads)
    rows = [measure(name, args.steps, args.warmup) for name in args.models]
    cells = []
    for r in rows:
        for v in VARIANTS:
            achieved = r["flops_per_step"] / (r[f"{v}_ms"] / 1000)
            r[f"{v}_gflops"] = round(achieved / 1e9, 1)
            speedup = f"{r[f'{v}_speedup']:.2f}x" if v != "eager" else "1.00x"
            cells.append(
                [f"{r['model']} ({r['recipe']}, batch {r['batch_size']})", v, r[f"{v}_ms"], speedup,
                 f"{achieved / 1e9:.0f}", f"{achieved / peak:.0%}", r[f"{v}_warmup_s"], r[f"{v}_loss"]]
            )  # fmt: skip
    report.results = {"peak_flops": peak, "rows": rows}
    report.table(
        "model | variant | ms/step | speed-up vs eager | GFLOP/s | of fp32 peak | warm-up (s, with compilation) "
        "| last loss",
        cells,
        title=f"{args.threads} threads, torch {torch.__version__}, float32 matmul peak {peak / 1e9:.0f} GFLOP/s",
    )
    report.save()


if __name__ == "__main__":
    main()
