"""Long sequences: softmax against linear attention (SASRec and HSTU), and KuaiFormer's compression.

    python -m benchmarks long_sequences timing                      # synthetic, lengths 50 ... 4096
    python -m benchmarks long_sequences timing --lengths 50,4096 --models sasrec
    python -m benchmarks long_sequences quality --epochs 8         # ML-1M N@10 (bounded training)
    python -m benchmarks long_sequences rankers --epochs 3         # HSTU ranker compression, ML-1M

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

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import Report, fresh_process, parser, timed
from genrec.config import load_config
from genrec.data.batching import HistoryBatch
from genrec.models import build_model
from genrec.objectives import build_objective
from genrec.runs import train_run


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timing_worker(model: str, attention: str, length: int, steps: int, batch: int) -> dict:
    """One (model, attention, length) in this process (run in a fresh one): median step and forward seconds,
    and the peak RSS the training steps added."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    over = [
        "model.dim=64",
        "model.layers=2",
        "model.heads=1",
        f"model.max_len={length}",
        "model.dropout=0.1",
        f"model.attention={attention}",
        "train.objective=bce",
    ]
    cfg = load_config(model, over)
    n_items = 3000
    net = build_model(cfg.model, n_items, 10)
    train_items = torch.randint(1, n_items + 1, (10_000,)).numpy()
    objective = build_objective(cfg.train.objective, net, train_items)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    items = torch.randint(1, n_items + 1, (batch, length + 1))
    ts = torch.arange(length + 1).expand(batch, -1) * 60 if net.uses_timestamps else None
    base = rss_mib()

    def step():
        loss = objective(net, (items, ts))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train = timed(step, steps)
    train_peak = rss_mib() - base
    net.eval()
    history = HistoryBatch(items[:, :-1], timestamps=None if ts is None else ts[:, :-1])
    with torch.no_grad():
        infer = timed(lambda: net.score(history), steps)
    return {"step_s": train.median, "infer_s": infer.median, "peak_mib": train_peak}


def timing(args, report: Report) -> list[dict]:
    rows = []
    for model in args.models.split(","):
        for length in [int(x) for x in args.lengths.split(",")]:
            got = {
                a: fresh_process(timing_worker, model, a, length, args.steps, args.batch, check=False)
                for a in ("softmax", "linear")
            }
            s, lin = got["softmax"], got["linear"]
            row = {
                "model": model,
                "length": length,
                **{f"softmax_{k}": v for k, v in s.items()},
                **{f"linear_{k}": v for k, v in lin.items()},
            }
            if "error" not in s and "error" not in lin:
                row["step_speedup"] = s["step_s"] / lin["step_s"]
                row["infer_speedup"] = s["infer_s"] / lin["infer_s"]
                row["memory_ratio"] = s["peak_mib"] / max(lin["peak_mib"], 1.0)
            rows.append(row)
            print(f"{model} L={length} done", file=sys.stderr, flush=True)
    columns = (
        "model | L | step s softmax | step s linear | step speed-up | "
        "forward s softmax | forward s linear | forward speed-up | peak MiB softmax | peak MiB linear | memory ratio"
    )
    cells = []
    for r in rows:
        if "step_speedup" not in r:
            cells.append(
                [
                    r["model"],
                    r["length"],
                    f"failed: {r.get('softmax_error') or r.get('linear_error')}",
                    *["-"] * 8,
                ]
            )
            continue
        cells.append(
            [
                r["model"],
                r["length"],
                f"{r['softmax_step_s']:.3f}",
                f"{r['linear_step_s']:.3f}",
                f"x{r['step_speedup']:.2f}",
                f"{r['softmax_infer_s']:.3f}",
                f"{r['linear_infer_s']:.3f}",
                f"x{r['infer_speedup']:.2f}",
                f"{r['softmax_peak_mib']:.0f}",
                f"{r['linear_peak_mib']:.0f}",
                f"x{r['memory_ratio']:.2f}",
            ]
        )
    report.table(columns, cells)
    return rows


def train_one(recipe: str, overrides: list[str], out: Path) -> dict:
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


QUALITY = {
    "sasrec softmax": ("sasrec-ml-1m", ["model.attention=softmax"]),
    "sasrec linear": ("sasrec-ml-1m", ["model.attention=linear"]),
    "hstu softmax": ("hstu-ml-1m", ["model.attention=softmax"]),
    "hstu linear": ("hstu-ml-1m", ["model.attention=linear"]),
    "kuaiformer compressed": ("kuaiformer-ml-1m", ["model.compress=true"]),
    "kuaiformer uncompressed": ("kuaiformer-ml-1m", ["model.compress=false"]),
}


def quality(args, report: Report) -> list[dict]:
    common = [f"model.max_len={args.max_len}", f"train.epochs={args.epochs}", "train.threads=2"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(chosen(args, QUALITY)):
            recipe, over = QUALITY[name]
            rows.append({"variant": name, **train_one(recipe, common + over, Path(tmp) / str(i))})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report.table(
        ["variant", "test N@10", "valid N@10", "evaluation s", "training s", "epochs"],
        [
            [
                r["variant"],
                f"{r['test_ndcg@10']:.4f}",
                f"{r['valid_ndcg@10']:.4f}",
                r["eval_s"],
                r["train_s"],
                r["epochs"],
            ]
            for r in rows
        ],
    )
    by = {r["variant"]: r for r in rows}
    for model in ("sasrec", "hstu"):
        if f"{model} softmax" in by and f"{model} linear" in by:
            ratio = by[f"{model} linear"]["test_ndcg@10"] / by[f"{model} softmax"]["test_ndcg@10"]
            report.line(f"{model}: linear / softmax test N@10 = {ratio:.3f}")
    if "kuaiformer compressed" in by and "kuaiformer uncompressed" in by:
        c, u = by["kuaiformer compressed"], by["kuaiformer uncompressed"]
        report.line(
            f"kuaiformer: compressed / uncompressed test N@10 = {c['test_ndcg@10'] / u['test_ndcg@10']:.3f}, "
            f"inference time uncompressed / compressed = {u['eval_s'] / c['eval_s']:.2f}x"
        )
    return rows


RANKERS = {
    "hstu_ranker": ("hstu_ranker-ml-1m", []),
    "hstu_ranker compressed": ("hstu_ranker-ml-1m", ["model.compress_history=true"]),
    "genrank (fused, 100 events)": ("genrank-ml-1m", ["model.max_len=100", "train.batch_size=64"]),
}


def rankers(args, report: Report) -> list[dict]:
    """HSTU ranker at 100 events, plain against `compress_history`, and GenRank (fused tokens) on ML-1M."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(chosen(args, RANKERS)):
            recipe, over = RANKERS[name]
            cfg = load_config(recipe, over + [f"train.epochs={args.epochs}", "train.patience=100"])
            m = train_run(cfg, Path(tmp) / str(i), progress=False)
            tr = m["training"]
            r = {
                "variant": name,
                "epochs": tr.get("epochs_run"),
                "train_s": tr.get("train_seconds"),
                "s_per_epoch": tr.get("train_seconds") / max(tr.get("epochs_run") or 1, 1),
                "valid_gauc": m["valid"]["gauc"],
                "test_gauc": m["test"]["gauc"],
                "test_auc": m["test"]["auc"],
            }
            rows.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    report.table(
        ["variant", "epochs", "s per epoch", "valid GAUC", "test GAUC", "test AUC"],
        [
            [
                r["variant"],
                r["epochs"],
                f"{r['s_per_epoch']:.1f}",
                f"{r['valid_gauc']:.4f}",
                f"{r['test_gauc']:.4f}",
                f"{r['test_auc']:.4f}",
            ]
            for r in rows
        ],
    )
    base = rows[0]
    for r in rows[1:]:
        report.line(
            f"{r['variant']}: {base['s_per_epoch'] / r['s_per_epoch']:.2f}x step speed of "
            f"{base['variant']}, test GAUC {r['test_gauc'] - base['test_gauc']:+.4f}"
        )
    return rows


def chosen(args, variants: dict) -> list[str]:
    """The variants `--variants` names (all by default); an unknown one is a usage error."""
    names = [v.strip() for v in args.variants.split(",")] if args.variants else list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise SystemExit(f"error: unknown variant {unknown[0]!r}; choose from {', '.join(variants)}")
    return names


def main(argv: list[str] | None = None) -> None:
    p = parser(__name__, __doc__, threads=False)
    p.add_argument("part", choices=["timing", "quality", "rankers"])
    p.add_argument("--models", default="sasrec,hstu")
    p.add_argument("--lengths", default="50,200,512,1024,2048,4096")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--variants", default="", help="comma-separated subset of the quality or rankers variants")
    args = p.parse_args(argv)
    report = Report(__name__, args)
    report.results = {"timing": timing, "quality": quality, "rankers": rankers}[args.part](args, report)
    report.save()
