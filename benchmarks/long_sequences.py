"""Long sequences: softmax against linear attention (SASRec and HSTU), and KuaiFormer's compression.

    .venv/bin/python benchmarks/long_sequences.py timing                      # synthetic, lengths 50 ... 4096
    .venv/bin/python benchmarks/long_sequences.py timing --lengths 50,4096 --models sasrec
    .venv/bin/python benchmarks/long_sequences.py quality --epochs 8         # ML-1M N@10 (bounded training)
    .venv/bin/python benchmarks/long_sequences.py rankers --epochs 3         # HSTU ranker compression, ML-1M

timing: synthetic sequences (every position a real item, 3,000 items, d = 64, 2 blocks, 1 head, batch 4, the
BCE loss with one negative per position, so that neither the catalogue nor in-batch negatives (whose logits grow
as (B L)^2) hide the encoder's cost). Each (model,
attention, length) runs in its own process: step time is the median of `--steps` training steps after one
warm-up, inference the median forward pass (score of the batch) under no_grad, peak memory the process's peak
RSS above what it held before the first step (so the item table and the interpreter are not counted).

quality: ML-1M (users 1-2999, leave-one-out, full-catalogue N@10, history excluded) at history length
`--max-len`: SASRec and HSTU with softmax and with linear attention, and KuaiFormer with and without its
compression, each trained `--epochs` epochs (best validation epoch, evaluated once on test); KuaiFormer's
inference time is the test evaluation's seconds. The printed table gives the ratios the targets name.

rankers: the HSTU ranker at 100 events (`hstu_ranker-ml-1m`) against the same with `model.compress_history`
(older 50 events fused and pooled by 5: 110 tokens instead of 200) and GenRank at 100 events, each trained
`--epochs` epochs without early stopping; step speed = seconds per training epoch (same windows, same batches).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timing_worker(model: str, attention: str, length: int, steps: int, batch: int, queue) -> None:
    import torch

    from genrec.config import load_config
    from genrec.data.batching import HistoryBatch
    from genrec.models import build_model
    from genrec.objectives import build_objective

    torch.set_num_threads(2)
    torch.manual_seed(0)
    over = ["model.dim=64", "model.layers=2", "model.heads=1", f"model.max_len={length}", "model.dropout=0.1",
            f"model.attention={attention}", "train.objective=bce"]  # fmt: skip
    cfg = load_config(model, over)
    n_items = 3000
    net = build_model(cfg.model, n_items, 10)
    train_items = torch.randint(1, n_items + 1, (10_000,)).numpy()
    objective = build_objective(cfg.train.objective, net, train_items)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    items = torch.randint(1, n_items + 1, (batch, length + 1))
    ts = torch.arange(length + 1).expand(batch, -1) * 60 if net.uses_timestamps else None
    base = rss_mib()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = objective(net, (items, ts))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    train_peak = rss_mib() - base
    net.eval()
    infer = []
    with torch.no_grad():
        for i in range(steps + 1):
            t0 = time.perf_counter()
            net.score(HistoryBatch(items[:, :-1], timestamps=None if ts is None else ts[:, :-1]))
            if i:
                infer.append(time.perf_counter() - t0)
    queue.put(
        {"step_s": statistics.median(times), "infer_s": statistics.median(infer), "peak_mib": train_peak}
    )


def run_isolated(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    proc.join()
    if proc.exitcode:
        return {"error": f"exit {proc.exitcode}"}
    return queue.get()


def timing(args) -> list[dict]:
    rows = []
    for model in args.models.split(","):
        for length in [int(x) for x in args.lengths.split(",")]:
            got = {
                a: run_isolated(timing_worker, model, a, length, args.steps, args.batch)
                for a in ("softmax", "linear")
            }
            s, lin = got["softmax"], got["linear"]
            row = {"model": model, "length": length, **{f"softmax_{k}": v for k, v in s.items()},
                   **{f"linear_{k}": v for k, v in lin.items()}}  # fmt: skip
            if "error" not in s and "error" not in lin:
                row["step_speedup"] = s["step_s"] / lin["step_s"]
                row["infer_speedup"] = s["infer_s"] / lin["infer_s"]
                row["memory_ratio"] = s["peak_mib"] / max(lin["peak_mib"], 1.0)
            rows.append(row)
            print(format_timing(row), flush=True)
    return rows


def format_timing(r: dict) -> str:
    if "step_speedup" not in r:
        return f"{r['model']:7s} {r['length']:5d}  failed: {r}"
    return (
        f"{r['model']:7s} L={r['length']:5d}  step {r['softmax_step_s']:.3f}s / {r['linear_step_s']:.3f}s "
        f"(x{r['step_speedup']:.2f})  infer {r['softmax_infer_s']:.3f}s / {r['linear_infer_s']:.3f}s "
        f"(x{r['infer_speedup']:.2f})  peak {r['softmax_peak_mib']:.0f} / {r['linear_peak_mib']:.0f} MiB "
        f"(x{r['memory_ratio']:.2f})"
    )


def train_one(recipe: str, overrides: list[str], out: Path) -> dict:
    from genrec.config import load_config
    from genrec.runs import train_run

    cfg = load_config(recipe, overrides, "ml-1m")
    t0 = time.perf_counter()
    m = train_run(cfg, out, progress=False)
    return {
        "test_ndcg@10": m["test"]["ndcg@10"],
        "valid_ndcg@10": m["valid"]["ndcg@10"],
        "eval_s": m["eval_seconds"],
        "train_s": round(time.perf_counter() - t0, 1),
        "epochs": m["training"].get("epochs_run"),
    }


def quality(args) -> list[dict]:
    common = [f"model.max_len={args.max_len}", f"train.epochs={args.epochs}", "train.threads=2"]
    variants = {
        "sasrec softmax": ("sasrec-ml-1m", ["model.attention=softmax"]),
        "sasrec linear": ("sasrec-ml-1m", ["model.attention=linear"]),
        "hstu softmax": ("hstu-ml-1m", ["model.attention=softmax"]),
        "hstu linear": ("hstu-ml-1m", ["model.attention=linear"]),
        "kuaiformer compressed": ("kuaiformer-ml-1m", ["model.compress=true"]),
        "kuaiformer uncompressed": ("kuaiformer-ml-1m", ["model.compress=false"]),
    }
    chosen = args.variants.split(",") if args.variants else list(variants)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(chosen):
            recipe, over = variants[name]
            r = {"variant": name, **train_one(recipe, common + over, Path(tmp) / str(i))}
            rows.append(r)
            print(json.dumps(r), flush=True)
    by = {r["variant"]: r for r in rows}
    for model in ("sasrec", "hstu"):
        if f"{model} softmax" in by and f"{model} linear" in by:
            ratio = by[f"{model} linear"]["test_ndcg@10"] / by[f"{model} softmax"]["test_ndcg@10"]
            print(f"{model}: linear / softmax test N@10 = {ratio:.3f}")
    if "kuaiformer compressed" in by and "kuaiformer uncompressed" in by:
        c, u = by["kuaiformer compressed"], by["kuaiformer uncompressed"]
        print(
            f"kuaiformer: compressed / uncompressed test N@10 = {c['test_ndcg@10'] / u['test_ndcg@10']:.3f}, "
            f"inference time uncompressed / compressed = {u['eval_s'] / c['eval_s']:.2f}x"
        )
    return rows


def rankers(args) -> list[dict]:
    """HSTU ranker at 100 events, plain against `compress_history`, and GenRank (fused tokens) on ML-1M."""
    from genrec.config import load_config
    from genrec.runs import train_run

    variants = {
        "hstu_ranker": ("hstu_ranker-ml-1m", []),
        "hstu_ranker compressed": ("hstu_ranker-ml-1m", ["model.compress_history=true"]),
        "genrank (fused, 100 events)": ("genrank-ml-1m", ["model.max_len=100", "train.batch_size=64"]),
    }
    chosen = args.variants.split(",") if args.variants else list(variants)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(chosen):
            recipe, over = variants[name]
            cfg = load_config(recipe, over + [f"train.epochs={args.epochs}", "train.patience=100"])
            m = train_run(cfg, Path(tmp) / str(i), progress=False)
            tr = m["training"]
            r = {"variant": name, "epochs": tr.get("epochs_run"), "train_s": tr.get("train_seconds"),
                 "s_per_epoch": tr.get("train_seconds") / max(tr.get("epochs_run") or 1, 1),
                 "valid_gauc": m["valid"]["gauc"], "test_gauc": m["test"]["gauc"],
                 "test_auc": m["test"]["auc"]}  # fmt: skip
            rows.append(r)
            print(json.dumps(r), flush=True)
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['variant']}: {base['s_per_epoch'] / r['s_per_epoch']:.2f}x step speed of {base['variant']}, "
              f"test GAUC {r['test_gauc'] - base['test_gauc']:+.4f}")  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["timing", "quality", "rankers"])
    p.add_argument("--models", default="sasrec,hstu")
    p.add_argument("--lengths", default="50,200,512,1024,2048,4096")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--variants", default="", help="comma-separated subset of the quality variants")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    rows = {"timing": timing, "quality": quality, "rankers": rankers}[args.part](args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
