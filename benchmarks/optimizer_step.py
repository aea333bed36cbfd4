"""Cost of one AdamW step for the sequence models, per implementation, and whether they agree.

    python -m benchmarks optimizer_step                     # Beauty SASRec and HSTU recipes
    python -m benchmarks optimizer_step --recipes sasrec-amazon-beauty --steps 500

Each recipe's model is built at its dataset's catalogue size and stepped with the same random gradients by the
three AdamW kernels through `genrec.training.trainer.build_optimizer`: PyTorch's per-tensor loop, the
multi-tensor kernel (what training uses) and the fused kernel. The table prints the median milliseconds per step over
`--repeats` timings of `--steps` steps (implementations alternate, so a slower spell of a shared machine hits all of
them), the speed-up over the loop and the largest weight difference from the loop after all steps (0 = the same
bits). With `--train-steps N` (default 60) it also times whole training steps (forward, backward, clipping, AdamW)
on N real batches of the recipe's data, so the optimiser's share of an epoch is visible.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks._common import Report, alternate, parser
from genrec.config import load_config
from genrec.models import build_model
from genrec.objectives import build_objective
from genrec.runs import make_split, prepare_dataset
from genrec.training.trainer import build_optimizer, training_step

KERNELS = {"loop": {"foreach": False}, "multi_tensor": {"foreach": True}, "fused": {"fused": True}}
IMPLEMENTATIONS = list(KERNELS)
COLUMNS = (
    "recipe | parameters | implementation | "
    "ms/step | speed-up vs loop | max weight diff vs loop | ms per training step"
)


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("--recipes", nargs="+", default=["sasrec-amazon-beauty", "hstu-amazon-beauty"])
    ap.add_argument("--steps", type=int, default=200, help="steps per timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=60, help="whole training steps timed (0 = skip)")
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    torch.set_num_threads(args.threads)
    report.line(
        f"AdamW step ({args.threads} threads, median of {args.repeats} timings of {args.steps} steps)\n"
    )
    rows = []
    for recipe in args.recipes:
        cfg = load_config(recipe)
        ds = prepare_dataset(cfg.data)
        stats = ds.stats()
        torch.manual_seed(0)
        models = {impl: build_model(cfg.model, stats["items"], stats["users"]) for impl in IMPLEMENTATIONS}
        for model in models.values():
            model.load_state_dict(models["loop"].state_dict())
        optimizers = {
            impl: build_optimizer(models[impl], cfg.train, **KERNELS[impl]) for impl in IMPLEMENTATIONS
        }
        gen = torch.Generator().manual_seed(1)
        grads = [torch.randn(p.shape, generator=gen) * 1e-2 for p in models["loop"].parameters()]
        for model in models.values():
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()

        def steps(optimizer):
            for _ in range(args.steps):
                optimizer.step()

        times = alternate({impl: lambda o=opt: steps(o) for impl, opt in optimizers.items()}, args.repeats, 0)
        n_params = sum(p.numel() for p in models["loop"].parameters())
        ms = {impl: t.median / args.steps * 1e3 for impl, t in times.items()}
        train_ms = train_step_ms(cfg, ds, args) if args.train_steps else {}
        for impl in IMPLEMENTATIONS:
            with torch.no_grad():
                diff = max(
                    float((p - q).abs().max())
                    for p, q in zip(models[impl].parameters(), models["loop"].parameters())
                )
            step = f"{train_ms[impl]:.1f}" if impl in train_ms else "-"
            rows.append(
                [
                    recipe,
                    f"{n_params:,}",
                    impl,
                    f"{ms[impl]:.2f}",
                    f"{ms['loop'] / ms[impl]:.2f}x",
                    f"{diff:.1e}",
                    step,
                ]
            )
            report.results.setdefault(recipe, {})[impl] = {
                "parameters": n_params,
                "ms_per_step": ms[impl],
                "max_weight_diff": diff,
                "ms_per_training_step": train_ms.get(impl),
            }
    report.table(COLUMNS, rows)
    report.save()


def train_step_ms(cfg, ds, args) -> dict[str, float]:
    """Median ms of a whole training step per implementation over the same real batches, implementations
    alternating between timings."""
    split = make_split(ds, cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, split.n_items, split.n_users)
    model.train()
    batches = list(model.training_batches(split, np.random.default_rng(0), cfg.train.batch_size))
    batches = batches[: args.train_steps]
    objective = build_objective(cfg.train.objective, model, split.train.items)

    def epoch(optimizer):
        for batch in batches:
            training_step(model, objective, optimizer, batch, cfg.train.grad_clip)

    calls = {
        impl: lambda o=build_optimizer(model, cfg.train, **KERNELS[impl]): epoch(o)
        for impl in IMPLEMENTATIONS
    }
    times = alternate(calls, args.repeats, 0)
    return {impl: t.median / len(batches) * 1e3 for impl, t in times.items()}
