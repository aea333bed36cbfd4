"""Cold-start table: every model trained without the newest ~5% of items, test metrics for warm and cold targets.

    python -m benchmarks coldstart --dataset amazon-beauty
    python -m benchmarks coldstart --dataset amazon-beauty --models popularity,textrec --max-minutes 4

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

    python -m benchmarks coldstart --dataset amazon-beauty --max-minutes 0 --cold-share 0.1 --reuse
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import ROOT, Report, add_model_sets, item_table, model_sets, parser, recipe_for
from genrec.config import load_config
from genrec.experiments.coldstart import ColdPlaces, cold_start_split, evaluate_warm_cold
from genrec.io import write_json
from genrec.models import build_model
from genrec.models.base import Resources
from genrec.runs.retrieval import fit_retrieval, make_split, prepare_dataset
from genrec.training.checkpoint import load_weights
from genrec.training.trainer import FitContext

DEFAULT_MODELS = ["popularity", "sasrec", "hstu", "tiger", "textrec"]
COLUMNS = (
    "model | warm R@10 | warm N@10 | cold R@10 | "
    "cold N@10 | cold R@20 | cold R@20, no cold item in history | training | recipe"
)


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
    items = item_table(ds, split.sequences.item_ids)
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
        ctx = FitContext(cfg.train, cfg.eval, run_dir, progress=False, resources=Resources(items=items))
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


def table(report: Report, results: list[dict]) -> None:
    first = results[0]["cold_start"]
    report.line(
        f"**{results[0]['dataset']}, cold start** ({first['cold_items']} cold items = {first['cold_share']:.1%} of "
        f"the catalogue; test examples: {first['test_examples_warm']} warm, {first['test_examples_cold']} cold; "
        "every item ranked)\n"
    )
    rows = []
    for r in results:
        m = r["metrics"]
        w, c = m["warm_unfiltered"], m["cold_unfiltered"]
        no_cold_before = (
            f"{m['cold_first_unfiltered']['recall@20']:.4f}" if "cold_first_unfiltered" in m else "-"
        )
        rows.append(
            [
                r["model"],
                f"{w['recall@10']:.4f}",
                f"{w['ndcg@10']:.4f}",
                f"{c['recall@10']:.4f}",
                f"{c['ndcg@10']:.4f}",
                f"{c['recall@20']:.4f}",
                no_cold_before,
                f"{r['fit_seconds']:.0f} s, {r['epochs_run']} epochs ({r['stopped_by']})",
                f"`{r['recipe']}`",
            ]
        )
    report.table(COLUMNS, rows)
    report.line(f"\nProtocol: {first['protocol']}; first seen = {first['first_seen_rule']}.")


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__, threads=False)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--share", type=float, default=0.05)
    ap.add_argument("--max-minutes", type=float, default=4.0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "coldstart"))
    ap.add_argument(
        "--cold-share", type=float, default=0.0, help="places kept for cold items (TIGER's epsilon)"
    )
    ap.add_argument("--reuse", action="store_true", help="evaluate the weights already trained in --out")
    add_model_sets(ap)
    args = ap.parse_args(argv)
    sets = model_sets(ap, args.set)
    report = Report(__name__, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.models.split(","):
        print(f"training {name} ...", file=sys.stderr, flush=True)
        extra = sets.get(name, [])
        results.append(
            run_one(name, args.dataset, args.share, args.max_minutes, out, extra, args.cold_share, args.reuse)
        )
    table(report, results)
    report.results = {r["model"]: r for r in results}
    report.save()
