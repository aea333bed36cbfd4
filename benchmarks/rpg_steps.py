"""RPG learning curve by optimiser steps: training loss and validation N@10 every `--every` steps, from saved codes.

    python -m benchmarks rpg_steps --codes RUN_DIR --steps 600 --every 200 --set model.dropout=0.5

`--codes`: a folder holding semantic_ids.safetensors (any `rpg` run directory on the same dataset), so settings
compare on the same codes without rebuilding them. The schedule is the recipe's warm-up, then a constant learning
rate (no decay: the curve shows how fast a setting learns, not where a full run ends); AdamW, gradients clipped
as the trainer does; validation ranks every item with the history excluded, as checkpoint selection does.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks._common import Report, parser
from genrec.config import load_config
from genrec.data.registry import load_dataset
from genrec.data.split import leave_one_out
from genrec.eval.evaluator import validation_score
from genrec.items.semantic_ids import SemanticIds
from genrec.models import build_model
from genrec.objectives.base import CodeCrossEntropy


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("--recipe", default="rpg")
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--codes", required=True, help="folder with semantic_ids.safetensors")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="KEY=VALUE")
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.recipe, args.overrides, args.dataset)
    split = leave_one_out(load_dataset(args.dataset).encode())
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, split.n_items, split.n_users)
    model.set_semantic_ids(SemanticIds.load(args.codes))
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.train.lr,
        betas=(0.9, cfg.train.adam_beta2),
        weight_decay=cfg.train.weight_decay,
    )
    warm = max(cfg.train.warmup_steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    objective, rng = CodeCrossEntropy(), np.random.default_rng(cfg.train.seed)
    step, losses, start, rows = 0, [], time.perf_counter(), []
    while step < args.steps:
        for batch in model.training_batches(split, rng, cfg.train.batch_size):
            model.train()
            loss = objective(model, batch)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or float("inf"))
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            if step % args.every == 0 or step == args.steps:
                score = validation_score(model.eval(), split.valid, split.n_items, cfg.eval)
                mean = np.mean(losses[-args.every :])
                rows.append([step, f"{mean:.4f}", f"{score:.4f}", f"{time.perf_counter() - start:.0f}"])
                print(" ".join(map(str, rows[-1])), flush=True)
            if step >= args.steps:
                break
    report.table(
        ["step", "loss", "valid N@10", "seconds"], rows, title=f"{args.recipe} {' '.join(args.overrides)}"
    )
    report.save()


if __name__ == "__main__":
    main()
