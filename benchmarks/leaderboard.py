"""Train and evaluate the built-in recipes, print a Markdown leaderboard with published rows beside ours.

    python -m benchmarks leaderboard                          # Beauty + Sports, all models
    python -m benchmarks leaderboard --datasets amazon-beauty --models sasrec,hstu
    python -m benchmarks leaderboard --update-readme          # also rewrite the README table
    python -m benchmarks leaderboard --datasets ml-100k,ml-1m --models popularity,itemknn,sasrec,hstu \
        --block leaderboard-movielens --update-readme         # the MovieLens table

Runs are kept in --runs-dir (default runs/leaderboard) and reused when finished, so a table can be rebuilt
without training again. `--set MODEL:key=value` overrides one model's recipe (e.g. `--set tiger:train.epochs=10`);
each row prints the command that reproduces its run, with every setting in which the run's saved config differs
from the recipe as a `--set`. Our rows use the TIGER protocol columns (leave-one-out, full catalogue, every item
ranked = `test_unfiltered`) and add NDCG@10 with history items excluded (`test`), time to the best validation
epoch and the run's recipe.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from benchmarks._common import ROOT, Report, add_model_sets, markdown_table, model_sets, parser, recipe_for

# Rajput et al. 2023, "Recommender Systems with Generative Retrieval" (TIGER), Table: Amazon 5-core,
# leave-one-out, full ranking. Columns: R@5, N@5, R@10, N@10.
PUBLISHED = {
    "amazon-beauty": [
        ("SASRec (published)", (0.0387, 0.0249, 0.0605, 0.0318)),
        ("TIGER (published)", (0.0454, 0.0321, 0.0648, 0.0384)),
    ],
    "amazon-sports": [
        ("SASRec (published)", (0.0233, 0.0154, 0.0350, 0.0192)),
        ("TIGER (published)", (0.0264, 0.0181, 0.0400, 0.0225)),
    ],
}
SOURCE = "TIGER paper (Rajput et al. 2023), leave-one-out, full ranking"
# tiger-amazon-sports builds its codes from the sasrec run, so sasrec comes first.
DEFAULT_MODELS = ["popularity", "itemknn", "mf", "sasrec", "hstu", "tiger", "textrec"]
# Models that need real item text are left out where there is none.
NO_TEXT = {"amazon-sports"}
TEXT_MODELS = {"textrec"}


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run_overrides(out: Path, recipe: str, dataset: str) -> list[str]:
    """`key=value` for every setting in which the run's saved config differs from the recipe now.

    Keys the run does not have (added to the library after it) are skipped: their defaults keep the old behaviour.
    """
    import yaml

    from genrec.config import load_config

    saved = flatten(yaml.safe_load((out / "config.yaml").read_text()))
    now = flatten(load_config(recipe, [], dataset).model_dump(mode="json"))
    return [f"{key}={as_override(value)}" for key, value in saved.items() if key in now and now[key] != value]


def as_override(value) -> str:
    """A value as `--set` reads it back (YAML; JSON without spaces is YAML and needs no shell quoting)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def train(model: str, dataset: str, runs_dir: Path, overrides: list[str]) -> dict:
    recipe = recipe_for(model, dataset)
    out = runs_dir / f"{recipe}--{dataset}"
    if not (out / "metrics.json").exists():
        cmd = [
            sys.executable,
            "-m",
            "genrec",
            "train",
            recipe,
            "--dataset",
            dataset,
            "--out",
            str(out),
            "--examples",
            "0",
            "--no-progress",
            *(arg for o in overrides for arg in ("--set", o)),
        ]
        if (out / "checkpoint.pt").exists():
            cmd.append("--resume")
        print("running:", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=sys.stderr)  # stdout stays the Markdown table
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["recipe"] = recipe
    metrics["overrides"] = run_overrides(out, recipe, dataset)
    return metrics


COLUMNS = "model | R@5 | N@5 | R@10 | N@10 | N@10 history excluded | time to best (s) | source / recipe"
PROTOCOL = (
    "Protocol (ours): leave-one-out (last item test, second-to-last validation), full catalogue, exact "
    "top-K, ties counted against the target, checkpoint = best validation NDCG@10 (history excluded); "
    "single run, seed 42, this 2-core CPU machine."
)


def row(name: str, source: str, m4: tuple, extra: list[str]) -> list[str]:
    return [name, *(f"{v:.4f}" for v in m4), *extra, source]


def dataset_rows(
    dataset: str, models: list[str], runs_dir: Path, sets: dict[str, list[str]]
) -> list[list[str]]:
    """The published rows, then one row per model (trained now unless its run is finished)."""
    rows = [row(name, SOURCE, values, ["-", "-"]) for name, values in PUBLISHED.get(dataset, [])]
    for model in models:
        if model in TEXT_MODELS and dataset in NO_TEXT:
            continue
        m = train(model, dataset, runs_dir, sets.get(model, []))
        u, f = m["test_unfiltered"], m["test"]
        tr = m.get("training", {})
        t = tr.get("seconds_to_best", tr.get("fit_seconds", "-"))
        vals = (u["recall@5"], u["ndcg@5"], u["recall@10"], u["ndcg@10"])
        command_sets = "".join(f" --set {o}" for o in m["overrides"])
        command = f"`genrec train {m['recipe']} --dataset {dataset}{command_sets}`"
        rows.append(row(f"{model} (genrec)", command, vals, [f"{f['ndcg@10']:.4f}", str(t)]))
    return rows


def title(dataset: str) -> str:
    return f"**{dataset}** (test split; R/N = Recall/NDCG; TIGER columns rank every item)"


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__, threads=False)
    ap.add_argument("--datasets", default="amazon-beauty,amazon-sports")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "leaderboard")
    ap.add_argument("--update-readme", action="store_true")
    ap.add_argument(
        "--block", default="leaderboard", help="README block to rewrite: between <!-- BLOCK:begin/end -->"
    )
    add_model_sets(ap, "override one model's recipe, e.g. --set tiger:train.epochs=10 (repeatable)")
    args = ap.parse_args(argv)
    sets = model_sets(ap, args.set)
    report = Report(__name__, args)
    parts = []
    for dataset in args.datasets.split(","):
        rows = dataset_rows(dataset, args.models.split(","), args.runs_dir, sets)
        report.table(COLUMNS, rows, title=title(dataset))
        report.line()
        parts += [title(dataset), "", markdown_table(COLUMNS, rows), ""]
    report.line(PROTOCOL)
    report.save()
    if args.update_readme:
        md = "\n".join([*parts, PROTOCOL])
        readme = ROOT / "README.md"
        text = readme.read_text()
        begin, end = f"<!-- {args.block}:begin -->", f"<!-- {args.block}:end -->"
        block = f"{begin}\n{md}\n{end}"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        readme.write_text(
            pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block + "\n"
        )
