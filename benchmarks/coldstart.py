"""Cold-start table: every model trained without the newest ~5% of items, test metrics for warm and cold targets.

    .venv/bin/python benchmarks/coldstart.py --dataset amazon-beauty
    .venv/bin/python benchmarks/coldstart.py --dataset amazon-beauty --models popularity,textrec --max-minutes 4

The protocol (genrec/eval/coldstart.py): leave-one-out split; the items first seen last are removed from the
training sequences and from validation targets; the full catalogue (cold items included) is ranked for every test
example, and metrics are reported for warm-target and cold-target examples separately. Each model uses its
tuned `MODEL-DATASET` recipe when there is one, with `train.max_minutes` capped (`--max-minutes 0`: the
recipe's own budget). Results are kept in --out as JSON and reused, so the table can be rebuilt without training
again.

`--cold-share E` keeps places for cold items in every model's list, TIGER's cold-start retrieval: the j-th best
cold item by the model's own score at position ceil(j / E) (`model.cold_share` for TIGER, the same policy around
the scores of full-catalogue models). With `--reuse` the weights already trained in --out are evaluated again
(metrics recomputed, training facts kept) instead of training anew:

    .venv/bin/python benchmarks/coldstart.py --dataset amazon-beauty --max-minutes 0 --cold-share 0.1 --reuse
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
from genrec.experiments.coldstart import ColdPlaces, cold_start_split, evaluate_warm_cold  # noqa: E402
from genrec.io import write_json  # noqa: E402
from genrec.models import build_model  # noqa: E402
from genrec.runs.retrieval import fit_retrieval, make_split, prepare_dataset  # noqa: E402
from genrec.training.checkpoint import load_weights  # noqa: E402
from genrec.training.trainer import FitContext  # noqa: E402

DEFAULT_MODELS = ["popularity", "sasrec", "hstu", "tiger", "textrec"]


def recipe_for(model: str, dataset: str) -> str:
    tuned = ROOT / "genrec" / "recipes" / f"{model}-{dataset}.yaml"
    return tuned.stem if tuned.exists() else model


def run_one(
    model_name: str,
    dataset: str,
    share: float,
    max_minutes: float,
    out: Path,
    extra: list[str] = (),
    cold_share: float = 0.0,
    reuse: bool = False,
) -> dict:
    tag = f"--cold{cold_share:g}" if cold_share else ""
    path = out / f"{model_name}--{dataset}{tag}.json"
    if path.exists() and not reuse:
        return json.loads(path.read_text())
    recipe = recipe_for(model_name, dataset)
    overrides = [f"train.max_minutes={max_minutes}"] if max_minutes else []
    if cold_share and model_name == "tiger":
        overrides.append(f"model.cold_share={cold_share}")
    overrides += list(extra)
    cfg = load_config(recipe, overrides, dataset)
    ds = prepare_dataset(cfg.data)
    split, is_cold, details = cold_start_split(make_split(ds, cfg.data), share)
    items = pl.DataFrame({"item_id": split.sequences.item_ids}).join(
        ds.items.select(["item_id", "title", "categories"]), on="item_id", how="left", maintain_order="left"
    )
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)
    model = build_model(cfg.model, split.n_items, split.n_users)
    run_dir = out / f"{model_name}--{dataset}"  # the weights trained without cold places
    weights = run_dir / "best.safetensors"
    trained = out / f"{model_name}--{dataset}.json"  # its training facts are kept when the weights are reused
    if reuse and model.trainable and weights.exists() and trained.exists():
        model.load_state_dict(load_weights(weights))
        if hasattr(model, "set_trained_items"):  # runs saved before TIGER recorded which items it trained on
            model.set_trained_items(split.train.items)
        summary, fit_s = json.loads(trained.read_text()), None
    else:
        run_dir = out / f"{model_name}--{dataset}{tag}"
        run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        ctx = FitContext(cfg.train, cfg.eval, run_dir, progress=False, extra={"items": items})
        summary = fit_retrieval(model, split, ctx)
        fit_s = round(time.perf_counter() - t0, 1)
    scored = ColdPlaces(model, is_cold, cold_share) if cold_share and model.can("score") else model
    result = {
        "model": model_name + (f", cold share {cold_share:g}" if cold_share else ""),
        "recipe": recipe,
        "dataset": dataset,
        "cold_start": details,
        "metrics": evaluate_warm_cold(scored, split, is_cold, cfg.eval),
        "fit_seconds": summary["fit_seconds"] if fit_s is None else fit_s,
        "stopped_by": summary.get("stopped_by", "-"),
        "epochs_run": summary.get("epochs_run", 0),
        "weights": f"reused from {run_dir}" if fit_s is None else "trained in this run",
    }
    write_json(path, result)
    return result


def table(results: list[dict]) -> str:
    first = results[0]["cold_start"]
    lines = [
        f"**{results[0]['dataset']}, cold start** ({first['cold_items']} cold items = {first['cold_share']:.1%} of "
        f"the catalogue; test examples: {first['test_examples_warm']} warm, {first['test_examples_cold']} cold; "
        "every item ranked)",
        "",
        "| model | warm R@10 | warm N@10 | cold R@10 | cold N@10 | cold R@20 | cold R@20, no cold item in "
        "history | training | recipe |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["metrics"]
        w, c = m["warm_unfiltered"], m["cold_unfiltered"]
        no_cold_before = (
            f"{m['cold_first_unfiltered']['recall@20']:.4f}" if "cold_first_unfiltered" in m else "-"
        )
        lines.append(
            f"| {r['model']} | {w['recall@10']:.4f} | {w['ndcg@10']:.4f} | {c['recall@10']:.4f} | "
            f"{c['ndcg@10']:.4f} | {c['recall@20']:.4f} | {no_cold_before} | {r['fit_seconds']:.0f} s, "
            f"{r['epochs_run']} epochs ({r['stopped_by']}) | `{r['recipe']}` |"
        )
    lines += ["", f"Protocol: {first['protocol']}; first seen = {first['first_seen_rule']}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--share", type=float, default=0.05)
    ap.add_argument("--max-minutes", type=float, default=4.0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "coldstart"))
    ap.add_argument(
        "--cold-share", type=float, default=0.0, help="places kept for cold items (TIGER's epsilon)"
    )
    ap.add_argument("--reuse", action="store_true", help="evaluate the weights already trained in --out")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MODEL:KEY=VALUE",
        help="override for one model's config",
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.models.split(","):
        print(f"training {name} ...", file=sys.stderr, flush=True)
        extra = [o.split(":", 1)[1] for o in args.set if o.split(":", 1)[0] == name]
        results.append(
            run_one(name, args.dataset, args.share, args.max_minutes, out, extra, args.cold_share, args.reuse)
        )
    print(table(results))


if __name__ == "__main__":
    main()
