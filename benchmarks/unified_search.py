"""Search and recommendation in one model on Amazon Beauty: `unified` against SASRec and BM25 / MiniLM.

The `unified` model against the recommendation-only SASRec (recommendation) and query-only BM25 / MiniLM (search).

    python -m benchmarks unified_search --dataset amazon-beauty
    python -m benchmarks unified_search --models unified --llm-queries 300

Protocols (docs/llm.md): recommendation = leave-one-out test, every item ranked; search = the held-out item's
query (template of genrec.items.queries) + the user's history -> rank of the held-out item among every item.
`--llm-queries N`: N test users drawn with a fixed seed get a query written by the LLM for their held-out item
(cached by prompt); search is measured again on them with those queries (and with the template ones, for the same
users). Results are kept in --out as JSON and reused; a model's run directory there holds its weights.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import (
    ROOT,
    Report,
    add_model_sets,
    fit_or_reuse,
    item_table,
    model_sets,
    parser,
    take,
    text_vectors,
)
from genrec.config import load_config
from genrec.eval.evaluator import evaluate
from genrec.experiments.llm_items import generate_queries
from genrec.experiments.search import (
    SEARCH_PROTOCOL,
    BM25Index,
    bm25_view,
    cosine_view,
    evaluate_search,
    fused_view,
    model_search_view,
    target_of_user,
)
from genrec.io import write_json
from genrec.items.queries import template_queries
from genrec.items.text import item_texts
from genrec.llm import LLMConfig, build_llm
from genrec.runs.retrieval import make_split, prepare_dataset

RECIPES = {"sasrec": "sasrec-amazon-beauty", "unified": "unified-amazon-beauty"}


def train_or_load(name: str, dataset: str, out: Path, overrides: list[str], split, items):
    cfg = load_config(RECIPES[name], overrides, dataset)
    model, facts = fit_or_reuse(cfg, split, items, out / name, out / f"{name}-training.json", overrides)
    return cfg, model, facts


def row(name: str, rec: dict | None, search: dict | None, note: str) -> list[str]:
    def f(d, key):
        return "-" if d is None else f"{d[key]:.4f}"

    cells = [f(rec, "recall@10"), f(rec, "ndcg@10"), f(search, "recall@10"), f(search, "ndcg@10")]
    return [name, *cells, f(search, "recall@20"), note]


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__, threads=False)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--models", default="sasrec,unified")
    ap.add_argument("--out", default=str(ROOT / "runs" / "unified-search"))
    ap.add_argument("--max-minutes", type=float, default=0.0, help="cap each model's training (0 = recipe's)")
    ap.add_argument("--llm-queries", type=int, default=0, help="test users whose query the LLM writes")
    add_model_sets(ap)
    ap.add_argument(
        "--fuse",
        action="store_true",
        help="also rank with the unified model's search scores + w * BM25, w chosen on validation users",
    )
    args = ap.parse_args(argv)
    sets = model_sets(ap, args.set)
    report = Report(__name__, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    cfg = load_config(RECIPES["unified"], [], args.dataset)
    ds = prepare_dataset(cfg.data)
    split = make_split(ds, cfg.data)
    items = item_table(ds, split.sequences.item_ids)
    queries = template_queries(items)
    texts = item_texts(items)
    query_emb, text_emb = text_vectors(queries), text_vectors(texts)
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
        extra = list(sets.get(name, []))
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
        vsub = take(valid, vrows)
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
        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(len(test), size=min(args.llm_queries, len(test)), replace=False))
        sub = take(test, rows)
        wanted = np.unique(sub.targets)

        llm_q, cost = generate_queries(items, wanted, build_llm(LLMConfig(threads=2, batch_size=16)))
        llm_all = list(queries)
        for item, q in llm_q.items():
            llm_all[item - 1] = q
        llm_emb = text_vectors(llm_all)
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

    report.results = results
    report.line(
        f"**{args.dataset}, search and recommendation** (test: {len(test)} users, leave-one-out, every item "
        "ranked, history excluded; search query of the held-out item: its most specific category + parent "
        f"category + 2 title words; {in_title:.1%} of queries are a substring of the title)\n"
    )
    rows = [
        row(name, None, results[name]["search"]["filtered"], "query only, no training")
        for name in ("bm25", "minilm")
    ]
    for name in models:
        r = results[name]
        t = r["training"]
        note = (
            f"{t['fit_seconds']:.0f} s, {t['epochs_run']} epochs (best {t['best_epoch']}, {t['stopped_by']})"
        )
        rows.append(row(name, r["rec"]["filtered"], r.get("search", {}).get("filtered"), note))
    if "unified_bm25" in results:
        f = results["unified_bm25"]
        note = f"hybrid: w = {f['weight']} chosen on {f['valid_users']} validation users"
        rows.append(row("unified + w * BM25", None, f["search"]["filtered"], note))
    report.table(
        ["model", "rec R@10", "rec N@10", "search R@10", "search N@10", "search R@20", "training"], rows
    )
    if "llm_queries" in results:
        p = results["llm_queries"]
        cells = []
        for name in ("bm25", "minilm", "unified"):
            if f"{name}_template" in p:
                a, b = p[f"{name}_template"]["filtered"], p[f"{name}_llm"]["filtered"]
                cells.append(
                    [
                        name,
                        f"{a['ndcg@10']:.4f}",
                        f"{b['ndcg@10']:.4f}",
                        f"{a['recall@20']:.4f}",
                        f"{b['recall@20']:.4f}",
                    ]
                )
        columns = (
            "retriever | search N@10, template query | search N@10, LLM query | R@20 template | R@20 LLM"
        )
        title = f"\n**LLM-written queries** ({p['users']} test users, seed 0; generation: {p['cost']})"
        report.table(columns, cells, title=title)
    report.line(f"\nProtocol: {SEARCH_PROTOCOL}; recommendation: leave-one-out test, full catalogue.")
    report.save()
