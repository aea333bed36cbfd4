"""Softmax attention on this CPU: PyTorch's `scaled_dot_product_attention` against the written-out form, in whole
training steps of SASRec and TIGER on Amazon Beauty (the choice `genrec.nn.attention.FUSED` records per device).

    python -m benchmarks attention                 # both models, 30 steps each way
    python -m benchmarks attention --steps 10

Models: the `sasrec-amazon-beauty` recipe (d 64, 2 blocks, 1 head, length 50, batch 128, attention dropout 0.3)
and the `tiger` recipe's native backbone on Beauty (d 128, 4 heads, 2 + 2 blocks, 20 history items = 80 encoder
tokens, batch 256; random semantic IDs of the recipe's shape, so no text encoder runs), each with its objective
and AdamW. Both paths run the same batches in alternating rounds (fused, written out, fused, ...) after two warm-up
steps each; the figure is the median step time. Forward and backward are timed (the optimiser step too).
The table is printed and written as JSON (`.bench/attention.json`, or `--json PATH`).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from benchmarks._common import Report, parser
from genrec.config import load_config
from genrec.items.semantic_ids import SemanticIds, separation_codes
from genrec.models import build_model
from genrec.nn import attention
from genrec.objectives import build_objective
from genrec.runs import make_split, prepare_dataset
from genrec.training.trainer import build_optimizer

CASES = {
    "sasrec": ("sasrec-amazon-beauty", []),
    "tiger": ("tiger", ["data.dataset=amazon-beauty"]),
}


def setup(name: str, steps: int):
    recipe, overrides = CASES[name]
    cfg = load_config(recipe, overrides, "amazon-beauty")
    split = make_split(prepare_dataset(cfg.data), cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, split.n_items, split.n_users)
    if name == "tiger":
        tk = cfg.model.tokenizer
        raw = np.random.default_rng(0).integers(0, tk.codebook_size, size=(split.n_items, tk.levels))
        codes = np.concatenate([raw, separation_codes(raw)[:, None]], 1)
        model.set_semantic_ids(
            SemanticIds(codes, [tk.codebook_size] * tk.levels + [int(codes[:, -1].max()) + 1])
        )
    objective = build_objective(cfg.train.objective, model, split.train.items)
    batches = model.training_batches(split, np.random.default_rng(0), cfg.train.batch_size)
    batches = [b for b, _ in zip(batches, range(steps + 2))]
    return cfg, model, objective, build_optimizer(model, cfg.train), batches


def time_steps(model, objective, opt, batches, fused: bool) -> list[float]:
    attention.FUSED["cpu"] = fused
    model.train()
    out = []
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        loss = objective(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:  # warm-up: allocator, kernel selection
            out.append(time.perf_counter() - t0)
    return out


def measure(name: str, steps: int, rounds: int) -> dict:
    cfg, model, objective, opt, batches = setup(name, steps)
    times = {True: [], False: []}
    for _ in range(rounds):
        for fused in (True, False):
            times[fused] += time_steps(model, objective, opt, batches, fused)
    fused_ms, written_ms = (1000 * statistics.median(times[f]) for f in (True, False))
    return {
        "model": name,
        "recipe": CASES[name][0],
        "batch_size": cfg.train.batch_size,
        "steps_each": len(times[True]),
        "fused_ms": round(fused_ms, 1),
        "written_out_ms": round(written_ms, 1),
        "faster": "fused" if fused_ms < written_ms else "written out",
        "ratio": round(fused_ms / written_ms, 3),
    }


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--steps", type=int, default=15, help="timed steps per path per round")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    torch.set_num_threads(args.threads)
    rows = [measure(name, args.steps, args.rounds) for name in args.models]
    report.results = {"rows": rows}
    report.table(
        "model | batch | steps each | fused SDPA (ms/step) | written out (ms/step) | fused / written | faster",
        [
            [
                f"{r['model']} ({r['recipe']})",
                r["batch_size"],
                r["steps_each"],
                r["fused_ms"],
                r["written_out_ms"],
                f"{r['ratio']:.2f}",
                r["faster"],
            ]
            for r in rows
        ],  # fmt: skip
        title=f"{args.threads} threads, torch {torch.__version__}",
    )
    report.save()


if __name__ == "__main__":
    main()
