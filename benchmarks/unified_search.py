"""Search and recommendation in one model on Amazon Beauty: the `unified` model against the recommendation-only
SASRec (recommendation) and query-only BM25 / MiniLM (search).

    .venv/bin/python benchmarks/unified_search.py --dataset amazon-beauty
    .venv/bin/python benchmarks/unified_search.py --models unified --llm-queries 300

Protocols (docs/llm.md): recommendation = leave-one-out test, every item ranked; search = the held-out item's
query (template of genrec.items.queries) + the user's history -> rank of the held-out item among every item.
`--llm-queries N`: N test users drawn with a fixed seed get a query written by the LLM for their held-out item
(cached by prompt); search is measured again on them with those queries (and with the template ones, for the same
users). Results are kept in --out as JSON and reused; a model's run directory there holds its weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec.config import load_config  # noqa: E402
from genrec.eval.evaluator import evaluate  # noqa: E402
from genrec.experiments.coldstart import _subset  # noqa: E402
from genrec.experiments.search import (  # noqa: E402
    SEARCH_PROTOCOL,
    BM25Index,
    bm25_view,
    cosine_view,
    evaluate_search,
    fused_view,
    model_search_view,
    target_of_user,
)
from genrec.io import write_json  # noqa: E402
from genrec.items.queries import template_queries  # noqa: E402
from genrec.items.text import encode_texts, item_texts  # noqa: E402
from genrec.models import build_model  # noqa: E402
from genrec.runs.retrieval import fit_retrieval, make_split, prepare_dataset  # noqa: E402
from genrec.runs.store import seed_everything  # noqa: E402
from genrec.training.checkpoint import load_weights  # noqa: E402
from genrec.training.trainer import FitContext  # noqa: E402

RECIPES = {"sasrec": "sasrec-amazon-beauty", "unified": "unified-amazon-beauty"}


def with_padding_row(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([np.zeros((1, x.shape[1]), np.float32), x]))


def train_or_load(name: str, dataset: str, out: Path, overrides: list[str], split, items):
    cfg = load_config(RECIPES[name], overrides, dataset)
    seed_everything(cfg)
    model = build_model(cfg.model, split.n_items, split.n_users)
    run_dir = out / name
    facts = out / f"{name}-training.json"
    if (run_dir / "best.safetensors").exists() and facts.exists():
        model.prepare(split, {"items": items})
        model.load_state_dict(load_weights(run_dir / "best.safetensors"))
        return cfg, model, json.loads(facts.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = FitContext(cfg.train, cfg.eval, run_dir, progress=False, extra={"items": items})
    t0 = time.perf_counter()
    summary = fit_retrieval(model, split, ctx)
    summary = {
        "fit_seconds": round(time.perf_counter() - t0, 1),
        "epochs_run": summary.get("epochs_run"),
        "best_epoch": summary.get("best_epoch"),
        "stopped_by": summary.get("stopped_by"),
        "overrides": overrides,
    }
    write_json(facts, summary)
    return cfg, model, summary


def row(name: str, rec: dict | None, search: dict | None, note: str) -> str:
    def f(d, key):
        return "-" if d is None else f"{d[key]:.4f}"

    return (
        f"| {name} | {f(rec, 'recall@10')} | {f(rec, 'ndcg@10')} | {f(search, 'recall@10')} | "
        f"{f(search, 'ndcg@10')} | {f(search, 'recall@20')} | {note} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--models", default="sasrec,unified")
    ap.add_argument("--out", default=str(ROOT / "runs" / "unified-search"))
    ap.add_argument("--max-minutes", type=float, default=0.0, help="cap each model's training (0 = recipe's)")
    ap.add_argument("--llm-queries", type=int, default=0, help="test users whose query the LLM writes")
    ap.add_argument("--set", action="append", default=[], metavar="MODEL:KEY=VALUE")
    ap.add_argument(
        "--fuse",
        action="store_true",
        help="also rank with the unified model's search scores + w * BM25, w chosen on validation users",
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    cfg = load_config(RECIPES["unified"], [], args.dataset)
    ds = prepare_dataset(cfg.data)
    split = make_split(ds, cfg.data)
    items = pl.DataFrame({"item_id": split.sequences.item_ids}).join(
        ds.items.select(["item_id", "title", "categories"]), on="item_id", how="left", maintain_order="left"
    )
    queries = template_queries(items)
    texts = item_texts(items)
    query_emb, text_emb = with_padding_row(encode_texts(queries)), with_padding_row(encode_texts(texts))
    test = split.test
    targets = target_of_user(test, split.n_users)
    in_title = np.mean(
        [q in (t or "").lower() for q, t in zip(queries, items["title"].to_list(), strict=True) if q]
    )

    results: dict = {}
    cache = out / "results.json"
    if cache.exists():
        results = json.loads(cache.read_text())
    t0 = time.perf_counter()
    if "bm25" not in results:
        results["bm25"] = {
            "search": evaluate_search(
                bm25_view(BM25Index(texts), queries, targets), test, split.n_items, cfg.eval
            )
        }
        results["bm25"]["seconds"] = round(time.perf_counter() - t0, 1)
    if "minilm" not in results:
        results["minilm"] = {
            "search": evaluate_search(
                cosine_view(query_emb, text_emb, targets), test, split.n_items, cfg.eval
            )
        }
    write_json(cache, results)
    models = {}
    for name in args.models.split(","):
        extra = [o.split(":", 1)[1] for o in args.set if o.split(":", 1)[0] == name]
        if args.max_minutes:
            extra.append(f"train.max_minutes={args.max_minutes}")
        mcfg, model, facts = train_or_load(name, args.dataset, out, extra, split, items)
        models[name] = model
        if name not in results or results[name].get("training") != facts:
            res = {"training": facts, "rec": evaluate(model, test, split.n_items, mcfg.eval)}
            if model.can("search"):
                res["search"] = evaluate_search(
                    model_search_view(model, query_emb, targets), test, split.n_items, mcfg.eval
                )
            results[name] = res
            write_json(cache, results)

    if args.fuse and "unified" in models:
        valid = split.valid
        rng = np.random.default_rng(0)
        vrows = np.sort(rng.choice(len(valid), size=min(3000, len(valid)), replace=False))
        vsub = _subset(valid, vrows)
        vtargets = target_of_user(vsub, split.n_users)
        index = BM25Index(texts)
        grid = {}
        for w in (0.1, 0.25, 0.5, 1.0, 2.0):
            view = fused_view(
                model_search_view(models["unified"], query_emb, vtargets),
                bm25_view(index, queries, vtargets),
                w,
            )
            grid[w] = evaluate_search(view, vsub, split.n_items, cfg.eval)["filtered"]["ndcg@10"]
        best = max(grid, key=grid.get)
        view = fused_view(
            model_search_view(models["unified"], query_emb, targets), bm25_view(index, queries, targets), best
        )
        results["unified_bm25"] = {
            "weight": best,
            "valid_ndcg@10_by_weight": grid,
            "valid_users": len(vrows),
            "search": evaluate_search(view, test, split.n_items, cfg.eval),
        }
        write_json(cache, results)

    if args.llm_queries:
        from genrec.experiments.llm_items import generate_queries

        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(len(test), size=min(args.llm_queries, len(test)), replace=False))
        sub = _subset(test, rows)
        wanted = np.unique(sub.targets)
        from genrec.llm import LLMConfig, build_llm

        llm_q, cost = generate_queries(items, wanted, build_llm(LLMConfig(threads=2, batch_size=16)))
        llm_all = list(queries)
        for item, q in llm_q.items():
            llm_all[item - 1] = q
        llm_emb = with_padding_row(encode_texts(llm_all))
        part = {"users": len(rows), "cost": cost, "examples": {int(i): llm_q[int(i)] for i in wanted[:5]}}
        for label, qs, qe in (("template", queries, query_emb), ("llm", llm_all, llm_emb)):
            part[f"bm25_{label}"] = evaluate_search(
                bm25_view(BM25Index(texts), qs, targets), sub, split.n_items, cfg.eval
            )
            part[f"minilm_{label}"] = evaluate_search(
                cosine_view(qe, text_emb, targets), sub, split.n_items, cfg.eval
            )
            if "unified" in models:
                part[f"unified_{label}"] = evaluate_search(
                    model_search_view(models["unified"], qe, targets), sub, split.n_items, cfg.eval
                )
        results["llm_queries"] = part
        write_json(cache, results)

    n_test = len(test)
    print(
        f"**{args.dataset}, search and recommendation** (test: {n_test} users, leave-one-out, every item "
        "ranked, history excluded; search query of the held-out item: its most specific category + parent "
        f"category + 2 title words; {in_title:.1%} of queries are a substring of the title)\n"
    )
    print("| model | rec R@10 | rec N@10 | search R@10 | search N@10 | search R@20 | training |")
    print("|---|---|---|---|---|---|---|")
    for name in ("bm25", "minilm"):
        print(row(name, None, results[name]["search"]["filtered"], "query only, no training"))
    for name in models:
        r = results[name]
        t = r["training"]
        note = (
            f"{t['fit_seconds']:.0f} s, {t['epochs_run']} epochs (best {t['best_epoch']}, {t['stopped_by']})"
        )
        search = r.get("search", {}).get("filtered")
        print(row(name, r["rec"]["filtered"], search, note))
    if "unified_bm25" in results:
        f = results["unified_bm25"]
        print(
            row(
                "unified + w * BM25",
                None,
                f["search"]["filtered"],
                f"hybrid: w = {f['weight']} chosen on {f['valid_users']} validation users",
            )
        )
    if "llm_queries" in results:
        p = results["llm_queries"]
        print(
            f"\n**LLM-written queries** ({p['users']} test users, seed 0; generation: {p['cost']})\n\n"
            "| retriever | search N@10, template query | search N@10, LLM query | R@20 template | R@20 LLM |\n"
            "|---|---|---|---|---|"
        )
        for name in ("bm25", "minilm", "unified"):
            if f"{name}_template" in p:
                a, b = p[f"{name}_template"]["filtered"], p[f"{name}_llm"]["filtered"]
                print(
                    f"| {name} | {a['ndcg@10']:.4f} | {b['ndcg@10']:.4f} | {a['recall@20']:.4f} | "
                    f"{b['recall@20']:.4f} |"
                )
    print(f"\nProtocol: {SEARCH_PROTOCOL}; recommendation: leave-one-out test, full catalogue.")


if __name__ == "__main__":
    main()
