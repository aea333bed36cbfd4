"""LLM recommenders on real data, bounded for a CPU: sid_llm's training curve, its decoding speed, and hllm.

    # sid_llm (SmolLM2-135M-Instruct, LoRA): N@10 at each checkpoint against the training tokens, CPU time per
    # 1,000 training examples, share of valid and distinct generated items
    python -m benchmarks llm_recommenders curve --dataset amazon-beauty --checkpoints 4 \\
        --examples 512 --eval-users 200
    # constrained beam-search decoding: users per second, top-10 with beam 20
    python -m benchmarks llm_recommenders decode --dataset amazon-beauty --users 200
    # hllm beside sasrec and textrec on the cold-start protocol, each within the same training time
    python -m benchmarks llm_recommenders coldstart --dataset ml-1m --models sasrec,textrec,hllm \
        --max-minutes 3

The curve trains with genrec's own training step (`genrec.training.trainer.training_step`, AdamW, the recipe's
lr) on `--examples` recommendation examples per checkpoint, drawn without replacement from every (history ->
next item) pair of the training sequences, and evaluates each checkpoint on the same `--eval-users` test users
(sampled with seed 0; leave-one-out test targets, every item ranked, both conventions). CPU time is the process's
user + system time (`time.process_time`), so it counts both cores. Prints a table and writes its JSON report
(also to --out, which is kept after every checkpoint or model, so a run stopped by a time limit leaves its rows).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import Report, add_common, item_table, parser, recipe_for, sample
from genrec.config import load_config
from genrec.data.batching import history_batch
from genrec.eval.evaluator import evaluate
from genrec.experiments.coldstart import ColdPlaces, cold_start_split, evaluate_warm_cold
from genrec.io import write_json
from genrec.models import build_model
from genrec.models.base import Resources
from genrec.objectives import build_objective
from genrec.runs import make_split, prepare_dataset
from genrec.runs.retrieval import fit_retrieval
from genrec.training.trainer import FitContext, build_optimizer, lr_lambda, training_step


def setup(args, overrides: list[str]):
    cfg = load_config(recipe_for("sid_llm", args.dataset), overrides, args.dataset)
    ds = prepare_dataset(cfg.data)
    split = make_split(ds, cfg.data)
    seq = split.sequences
    items = item_table(ds, seq.item_ids)
    t0 = time.perf_counter()
    model = build_model(cfg.model, seq.n_items, seq.n_users)
    model.prepare(split, Resources(items=items))
    return cfg, split, model, time.perf_counter() - t0


def validity(model, examples, k: int, batch_size: int) -> dict:
    """Share of generated places that are real catalogue items, distinct within the list, outside the history,
    and produced by the beams themselves (not filled), over every user of `examples`."""
    hist = examples.history
    real = distinct = beams = places = 0
    for start in range(0, len(examples), batch_size):
        rows = np.arange(start, min(start + batch_size, len(examples)))
        batch = history_batch(hist.offsets, hist.items, rows, model.max_history)
        seen = history_batch(hist.offsets, hist.items, rows, None).items
        ids, scores = model.recommend(batch, k, exclude=seen)
        for row, score, banned in zip(ids.tolist(), scores.tolist(), seen.tolist()):
            ok = [i for i in row if 1 <= i <= model.n_items and i not in set(banned)]
            real += len(ok)
            distinct += len(set(ok))
            beams += sum(s > -1e8 for s in score)
            places += k
    return {"valid": real / places, "distinct": distinct / places, "from_beams": beams / places}


def curve(args) -> dict:
    torch.set_num_threads(args.threads)
    overrides = [f"model.examples_per_epoch={args.examples}", *args.set]
    cfg, split, model, prep_s = setup(args, overrides)
    users = sample(split.test, args.eval_users)
    objective = build_objective(cfg.train.objective, model)
    optimizer = build_optimizer(model, cfg.train)
    total_steps = args.checkpoints * -(-args.examples // cfg.train.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.train.lr_schedule, cfg.train.warmup_steps, total_steps)
    )
    rows, tokens, examples, cpu, wall = [], 0, 0, 0.0, 0.0
    start = time.perf_counter()
    for point in range(1, args.checkpoints + 1):
        took = (time.perf_counter() - start) / max(1, point - 1)
        if point > 1 and args.budget_seconds and time.perf_counter() - start + took > args.budget_seconds:
            print(
                f"stopping before checkpoint {point}: --budget-seconds {args.budget_seconds}", file=sys.stderr
            )
            break
        model.train()
        rng = np.random.default_rng([cfg.train.seed, point])
        c0, w0 = time.process_time(), time.perf_counter()
        for batch in model.training_batches(split, rng, cfg.train.batch_size):
            loss = training_step(model, objective, optimizer, batch, cfg.train.grad_clip)
            schedule.step()
            tokens += int(batch.attention_mask.sum())
            examples += len(batch)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        e0 = time.perf_counter()
        metrics = evaluate(model, users, split.n_items, cfg.eval)
        row = {
            "checkpoint": point,
            "examples": examples,
            "tokens": tokens,
            "loss": round(float(loss), 4),
            "train_cpu_s": round(cpu, 1),
            "train_wall_s": round(wall, 1),
            "ndcg@10": metrics["filtered"]["ndcg@10"],
            "recall@10": metrics["filtered"]["recall@10"],
            "ndcg@10_unfiltered": metrics["unfiltered"]["ndcg@10"],
            "eval_wall_s": round(time.perf_counter() - e0, 1),
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        keep(args, {"curve": rows})
    model.eval()
    v0 = time.perf_counter()
    valid = validity(model, users, 10, cfg.eval.batch_size)
    return {
        "dataset": args.dataset,
        "model": cfg.model.model_dump(mode="json"),
        "train": cfg.train.model_dump(mode="json"),
        "eval_users": len(users),
        "prepare_seconds": round(prep_s, 1),
        "curve": rows,
        "cpu_seconds_per_1000_examples": round(1000 * cpu / max(1, examples), 1),
        "wall_seconds_per_1000_examples": round(1000 * wall / max(1, examples), 1),
        "validity@10": valid,
        "validity_seconds": round(time.perf_counter() - v0, 1),
    }


def decode(args) -> dict:
    torch.set_num_threads(args.threads)
    cfg, split, model, prep_s = setup(args, [f"model.beam={args.beam}", *args.set])
    model.eval()
    users = sample(split.test, args.users)
    hist = users.history
    out = {}
    for shared in (True, False) if args.compare_cache else (True,):
        model.share_prompt_cache = shared
        t0 = time.perf_counter()
        for start in range(0, len(users), args.batch):
            rows = np.arange(start, min(start + args.batch, len(users)))
            batch = history_batch(hist.offsets, hist.items, rows, model.max_history)
            seen = history_batch(hist.offsets, hist.items, rows, None).items
            model.recommend(batch, args.k, exclude=seen)
        seconds = time.perf_counter() - t0
        out["shared_prompt_cache" if shared else "prompt_per_beam"] = {
            "users": len(users),
            "seconds": round(seconds, 2),
            "users_per_s": round(len(users) / seconds, 2),
        }
        print(json.dumps(out), file=sys.stderr, flush=True)
    lengths = [
        len(model.history_prompt(hist.items[hist.offsets[i] : hist.offsets[i + 1]]))
        for i in range(len(users))
    ]
    return {
        "dataset": args.dataset,
        "k": args.k,
        "beam": args.beam,
        "batch": args.batch,
        "threads": args.threads,
        "prompt_tokens_mean": float(np.mean(lengths)),
        **out,
    }


def coldstart(args) -> dict:
    """Each model trained on the cold-start split (`genrec.experiments.coldstart`: the newest `--share` of the
    items held out of training) within `--max-minutes`, then test metrics for warm and cold targets, without and
    with cold places (`--cold-share`, the same policy for every full-catalogue model)."""
    torch.set_num_threads(args.threads)
    results = []
    for name in args.models.split(","):
        recipe = recipe_for(name, args.dataset)
        cfg = load_config(recipe, [f"train.max_minutes={args.max_minutes}", *args.set], args.dataset)
        ds = prepare_dataset(cfg.data)
        split, is_cold, details = cold_start_split(make_split(ds, cfg.data), args.share)
        items = item_table(ds, split.sequences.item_ids)
        torch.manual_seed(cfg.train.seed)
        np.random.seed(cfg.train.seed % 2**32)
        model = build_model(cfg.model, split.n_items, split.n_users)
        c0, t0 = time.process_time(), time.perf_counter()
        summary = fit_retrieval(
            model,
            split,
            FitContext(cfg.train, cfg.eval, None, progress=False, resources=Resources(items=items)),
        )
        fit_wall, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
        plain = evaluate_warm_cold(model, split, is_cold, cfg.eval)
        places = evaluate_warm_cold(ColdPlaces(model, is_cold, args.cold_share), split, is_cold, cfg.eval)
        row = {
            "model": name,
            "recipe": recipe,
            "warm_ndcg@10": plain["warm"]["ndcg@10"],
            "warm_recall@10": plain["warm"]["recall@10"],
            "cold_recall@20": plain["cold"]["recall@20"],
            f"cold_recall@20_cold_share_{args.cold_share:g}": places["cold"]["recall@20"],
            f"warm_ndcg@10_cold_share_{args.cold_share:g}": places["warm"]["ndcg@10"],
            "fit_wall_s": round(fit_wall, 1),
            "fit_cpu_s": round(fit_cpu, 1),
            "epochs_run": summary.get("epochs_run"),
            "stopped_by": summary.get("stopped_by"),
        }
        print(json.dumps(row), file=sys.stderr, flush=True)
        results.append({**row, "metrics": plain, "metrics_cold_places": places})
        keep(args, {"cold_start": details, "results": results})
    return {
        "dataset": args.dataset,
        "cold_start": details,
        "results": [{k: v for k, v in r.items() if not k.startswith("metrics")} for r in results],
    }


def keep(args, partial: dict) -> None:
    """The rows so far in --out (when given): a run stopped by its time limit still leaves them."""
    if args.out:
        write_json(args.out, partial)


def table(report: Report, what: str, result: dict) -> None:
    if what == "curve":
        report.table(
            ["checkpoint", "examples", "tokens", "loss", "train CPU s", "N@10", "R@10", "N@10 unfiltered"],
            [
                [
                    r["checkpoint"],
                    r["examples"],
                    f"{r['tokens']:,}",
                    r["loss"],
                    r["train_cpu_s"],
                    f"{r['ndcg@10']:.4f}",
                    f"{r['recall@10']:.4f}",
                    f"{r['ndcg@10_unfiltered']:.4f}",
                ]
                for r in result["curve"]
            ],
        )
        v = result["validity@10"]
        report.line(
            f"\nCPU s per 1,000 training examples: {result['cpu_seconds_per_1000_examples']}; generated places "
            f"at k=10: {v['valid']:.1%} valid, {v['distinct']:.1%} distinct, {v['from_beams']:.1%} from the beams"
        )
    elif what == "decode":
        modes = [m for m in ("shared_prompt_cache", "prompt_per_beam") if m in result]
        report.table(
            ["prompt", "users", "seconds", "users/s", "k", "beam", "batch", "mean prompt tokens"],
            [
                [
                    m.replace("_", " "),
                    result[m]["users"],
                    result[m]["seconds"],
                    result[m]["users_per_s"],
                    result["k"],
                    result["beam"],
                    result["batch"],
                    f"{result['prompt_tokens_mean']:.0f}",
                ]
                for m in modes
            ],
        )
    else:
        keys = [k for k in result["results"][0] if k not in ("model", "recipe")]

        def cell(v):  # metrics to 4 decimals, seconds and counts as they are
            return f"{v:.4f}" if isinstance(v, float) and v < 1 else v

        rows = [[r["model"], *(cell(r[k]) for k in keys), r["recipe"]] for r in result["results"]]
        report.table(["model", *keys, "recipe"], rows)


def main(argv: list[str] | None = None) -> None:
    parent = parser(__name__, __doc__, sub_commands=True)
    sub = parent.add_subparsers(dest="what", required=True)
    c = sub.add_parser("curve")
    c.add_argument("--checkpoints", type=int, default=4)
    c.add_argument("--examples", type=int, default=512, help="training examples per checkpoint")
    c.add_argument("--eval-users", type=int, default=200)
    c.add_argument(
        "--budget-seconds", type=float, default=0, help="no checkpoint started that would end past it"
    )
    d = sub.add_parser("decode")
    d.add_argument("--users", type=int, default=200)
    d.add_argument("--k", type=int, default=10)
    d.add_argument("--beam", type=int, default=20)
    d.add_argument("--batch", type=int, default=32)
    d.add_argument(
        "--compare-cache", action="store_true", help="also time generate encoding the prompt per beam"
    )
    h = sub.add_parser("coldstart")
    h.add_argument("--models", default="sasrec,textrec,hllm")
    h.add_argument("--max-minutes", type=float, default=3.0)
    h.add_argument("--share", type=float, default=0.05, help="share of the catalogue held out as cold items")
    h.add_argument("--cold-share", type=float, default=0.1, help="places kept for cold items (second table)")
    for p in (c, d, h):
        add_common(p)
        p.add_argument("--dataset", default="amazon-beauty")
        p.add_argument("--set", action="append", default=[], help="config override key=value")
        p.add_argument("--out", type=Path, default=None, help="also write the result here (JSON)")
    args = parent.parse_args(argv)
    report = Report(__name__, args)
    result = {"curve": curve, "decode": decode, "coldstart": coldstart}[args.what](args)
    table(report, args.what, result)
    report.results = result
    keep(args, result)
    report.save()
