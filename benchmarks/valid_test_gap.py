"""Why a model's test figure is below its validation figure: per-epoch validation and test NDCG@10 of one training
run, and the two splits compared within groups of examples.

    python -m benchmarks valid_test_gap --recipe sasrec-amazon-beauty
    python -m benchmarks valid_test_gap --recipe tiger-amazon-beauty --set train.epochs=6 \\
        --set train.eval_every=1 --beams 50 --out runs/gap/tiger-t5-6.json

The recipe trains as `genrec train` would (same seed, same batches: validation never changes the training), with
no run directory. At every validation the test split is evaluated too, for this diagnosis only: the checkpoint is
still the best validation epoch, and the trainer never sees a test figure. Both splits use the recipe's headline
convention (history excluded unless `eval.exclude_history=false`).

Families of groups of examples, from the split alone (leave-one-out: a user's validation history is their training
sequence, their test history that and the validation item):
- target warm / cold: whether the target occurs anywhere in the training sequences;
- training transition to the target: from the newest history item (newest item -> target occurs as two
  consecutive items of some user's training sequence), from an older history item only, or none;
- newest history item trained / untrained: whether it occurs in the training sequences (a validation history is
  the user's own training sequence, so only test examples can have an untrained one);
- history within the model's max_len / truncated.
For each group: its share of each split, NDCG@10 on each split and the ratio; per family, the test figure with the
groups weighted by their validation shares (how much of the ratio the groups' shares explain).

The selected weights are also evaluated on the test targets with the validation item left out of the history
(the validation history, i.e. the training sequence; the validation item is then taken out of each ranking, so
both rankings hold the same candidates): does reading the validation item help the model or hurt it? `--beams
W ...` evaluates the selected weights again with other beam widths (generating models). Prints Markdown tables and
writes the figures to --out as JSON, and every example's rank per validated epoch beside it (`.npz`, keys
`valid_E` / `test_E`, and `test_without_validation_item_-1` for the selected weights). Two such runs compare with
`--compare A.json B.json` (no training): both ratios and a bootstrap interval of their difference, at each run's
selected epoch or at the epochs given by `--epochs EA EB` (e.g. two runs at the same validation figure).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks._common import parser
from genrec.config import load_config
from genrec.data.split import EvalSet
from genrec.eval.evaluator import evaluate
from genrec.io import write_json
from genrec.runs.pipeline import fit
from genrec.runs.retrieval import RetrievalTask, make_split, prepare_dataset
from genrec.runs.store import seed_everything
from genrec.runs.task import Tables, item_table
from genrec.training.trainer import FitContext

K = 10


def gains(ranks: np.ndarray) -> np.ndarray:
    """Per-example NDCG@K of 0-based ranks (inf = miss)."""
    hit = ranks < K
    return np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 0) + 2), 0.0)


def ndcg(ranks: np.ndarray) -> float:
    """Mean NDCG@K; NaN for no examples."""
    return float(gains(ranks).mean()) if len(ranks) else float("nan")


def ratio_interval(
    valid: np.ndarray, test: np.ndarray, paired: bool, rounds: int = 1000
) -> tuple[float, float]:
    """95% bootstrap interval of test NDCG@K / validation NDCG@K over examples (resampled as pairs when both
    splits hold the same users in the same order, as leave-one-out does)."""
    rng = np.random.default_rng(0)
    gain = [gains(r) for r in (valid, test)]
    out = []
    for _ in range(rounds):
        pick_v = rng.integers(0, len(valid), len(valid))
        pick_t = pick_v if paired else rng.integers(0, len(test), len(test))
        out.append(gain[1][pick_t].mean() / gain[0][pick_v].mean())
    low, high = np.percentile(out, [2.5, 97.5])
    return float(low), float(high)


def groups(split, max_len: int | None) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Per split, families of disjoint groups that cover it: split -> family -> group -> mask over its examples
    (see the module docstring)."""
    train = split.train
    trained = np.bincount(train.items, minlength=split.n_items + 1) > 0
    rows = np.repeat(np.arange(len(train)), train.lengths())
    follows = rows[1:] == rows[:-1]  # consecutive items of one training sequence
    stride = split.n_items + 1
    pairs = np.unique(train.items[:-1][follows] * stride + train.items[1:][follows])

    def seen(before: np.ndarray, after: np.ndarray) -> np.ndarray:
        key = before * stride + after
        return pairs[np.clip(np.searchsorted(pairs, key), 0, len(pairs) - 1)] == key

    out = {}
    for name in ("valid", "test"):
        ex = getattr(split, name)
        lengths = ex.history.lengths()
        last = ex.history.offsets[1:] - 1
        newest = ex.history.items[last]
        owner = np.repeat(np.arange(len(ex)), lengths)
        older = np.ones(len(ex.history.items), dtype=bool)
        older[last] = False
        by_older = (
            np.bincount(owner[seen(ex.history.items, ex.targets[owner]) & older], minlength=len(ex)) > 0
        )
        by_newest = seen(newest, ex.targets)
        family = {
            "target": {"warm": trained[ex.targets], "cold": ~trained[ex.targets]},
            "training transition to the target": {
                "from the newest history item": by_newest,
                "from an older history item only": ~by_newest & by_older,
                "none": ~by_newest & ~by_older,
            },
            "newest history item": {"trained": trained[newest], "untrained": ~trained[newest]},
        }
        if max_len:
            family["history length"] = {
                f"<= {max_len}": lengths <= max_len,
                f"> {max_len}": lengths > max_len,
            }
        out[name] = family
    return out


def group_table(ranks: dict[str, np.ndarray], masks: dict) -> list[dict]:
    """Per group: its share of each split, NDCG@K on each and their ratio; after each family, the test figure
    with the family's groups weighted by their validation shares."""
    rows = []
    for family, members in masks["valid"].items():
        at_valid_shares = 0.0
        for name, v in members.items():
            t = masks["test"][family][name]
            nv, nt = ndcg(ranks["valid"][v]), ndcg(ranks["test"][t])
            if t.any():
                at_valid_shares += v.mean() * nt
            rows.append(
                {
                    "family": family,
                    "group": name,
                    "valid_share": float(v.mean()),
                    "test_share": float(t.mean()),
                    "valid_ndcg": nv,
                    "test_ndcg": nt,
                    "ratio": nt / nv if nv > 0 else float("nan"),
                }
            )
        rows.append(
            {"family": family, "group": "test at the validation shares", "test_ndcg": at_valid_shares}
        )
    return rows


def compare(first: Path, second: Path, epochs: list[int] | None = None, rounds: int = 1000) -> dict:
    """Two runs written by --out on the same leave-one-out split: each one's test/validation ratio at its selected
    epoch (or at `epochs`, one per run), a 95% bootstrap interval of their difference (users resampled once for
    both runs), and both runs' NDCG@K on each split and ratios per group of examples."""
    runs, ranks = [], []
    for i, path in enumerate((first, second)):
        res = json.loads(path.read_text())
        z = np.load(path.with_suffix(".npz"))
        epoch = epochs[i] if epochs else res["selected_epoch"]
        if f"valid_{epoch}" not in z:
            raise SystemExit(f"error: {path.name} has no validated epoch {epoch}")
        ranks.append({"valid": z[f"valid_{epoch}"], "test": z[f"test_{epoch}"]})
        runs.append((gains(ranks[-1]["valid"]), gains(ranks[-1]["test"])))
    if len(runs[0][0]) != len(runs[1][0]):
        raise SystemExit("error: the two runs were not evaluated on the same examples")
    cfg = load_config(res["recipe"], res["overrides"], res.get("dataset"))
    masks = groups(make_split(prepare_dataset(cfg.data), cfg.data), None)
    tables = [group_table(r, masks) for r in ranks]
    rng = np.random.default_rng(0)
    ratio = [t.mean() / v.mean() for v, t in runs]
    diffs = []
    for _ in range(rounds):
        pick = rng.integers(0, len(runs[0][0]), len(runs[0][0]))
        a, b = ((t[pick].mean() / v[pick].mean()) for v, t in runs)
        diffs.append(a - b)
    low, high = np.percentile(diffs, [2.5, 97.5])
    out = {"ratios": ratio, "difference": ratio[0] - ratio[1], "interval": [float(low), float(high)]}
    at = "selected epochs" if not epochs else f"epochs {epochs[0]} and {epochs[1]}"
    print(
        f"{at}: {first.stem} valid {runs[0][0].mean():.4f} test {runs[0][1].mean():.4f}; {second.stem} valid "
        f"{runs[1][0].mean():.4f} test {runs[1][1].mean():.4f}"
    )
    print(
        f"{first.stem}: ratio {ratio[0]:.3f}; {second.stem}: ratio {ratio[1]:.3f}; difference "
        f"{ratio[0] - ratio[1]:+.3f} (95% bootstrap interval {low:+.3f} to {high:+.3f})"
    )
    print(
        f"\n| family | group | valid share | test share | {first.stem} valid -> test N@{K} (ratio) | "
        f"{second.stem} valid -> test N@{K} (ratio) |"
    )
    print("|---|---|---|---|---|---|")
    for a, b in zip(*tables):
        if "valid_ndcg" in a:
            shares = f"{a['valid_share']:.4f} | {a['test_share']:.4f}"
            cells = [f"{r['valid_ndcg']:.4f} -> {r['test_ndcg']:.4f} ({r['ratio']:.3f})" for r in (a, b)]
        else:  # the family's groups at their validation shares
            shares = " | "
            cells = [
                f"test {t['test_ndcg']:.4f} ({t['test_ndcg'] / v.mean():.3f})"
                for t, (v, _) in ((a, runs[0]), (b, runs[1]))
            ]
        print(f"| {a['family']} | {a['group']} | {shares} | {cells[0]} | {cells[1]} |")
    out["groups"] = tables
    return out


class BothSplits(RetrievalTask):
    """The retrieval task whose validation also evaluates test (`on_validation(model) -> score`): for this
    diagnosis only; the checkpoint is still chosen on the validation score it returns."""

    on_validation = None

    def validate(self, model, split, progress) -> float:
        return self.on_validation(model)


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument(
        "--compare", type=Path, nargs=2, metavar="JSON", help="compare two runs' ratios; no training"
    )
    ap.add_argument(
        "--epochs",
        type=int,
        nargs=2,
        metavar="E",
        help="with --compare: the epoch of each run (default: selected)",
    )
    ap.add_argument("--recipe")
    ap.add_argument("--dataset", default=None, help="default: the recipe's")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument(
        "--beams", type=int, nargs="*", default=[], help="other beam widths for the selected weights"
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = ap.parse_args(argv)
    if args.compare:
        compare(*args.compare, args.epochs)
        return
    if not args.recipe:
        ap.error("--recipe is required (or --compare)")

    cfg = load_config(args.recipe, args.set, args.dataset)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"threads": args.threads})})
    task = BothSplits(cfg)
    split = task.load_data()
    items = item_table(split.sequences.item_ids, task.dataset)
    seed_everything(cfg)
    model = task.build_model(split)
    convention = "filtered" if cfg.eval.exclude_history else "unfiltered"
    metric = cfg.eval.select_metric
    epochs: list[dict] = []
    ranks_at: dict[int, dict[str, np.ndarray]] = {}

    def both(m) -> tuple[dict, dict]:
        figures, ranks = {}, {}
        for name in ("valid", "test"):
            got: dict = {}
            res = evaluate(
                m, getattr(split, name), split.n_items, cfg.eval, None, (convention,), False, None, got
            )
            figures[name], ranks[name] = res[convention], got[convention]
        return figures, ranks

    def validate(m) -> float:
        figures, ranks = both(m)
        epochs.append({"valid": figures["valid"][metric], "test": figures["test"][metric], "ranks": ranks})
        return float(figures["valid"][metric])

    task.on_validation = validate
    # No run directory; `prepare` is offered the item table (semantic IDs are built from it).
    resources = task.resources(split, Tables(items, None, {}))
    ctx = FitContext(cfg.train, cfg.eval, None, progress=False, resources=resources)
    t0 = time.perf_counter()
    summary = fit(task, model, split, ctx)
    seconds = time.perf_counter() - t0
    validated = [h["epoch"] for h in summary.get("history", []) if f"valid_{metric}" in h] or [0]
    for epoch, record in zip(validated, epochs):
        record["epoch"] = epoch
        ranks_at[epoch] = record.pop("ranks")
    best = summary.get("best_epoch", validated[-1])
    ranks = ranks_at[best]
    masks = groups(split, getattr(cfg.model, "max_len", None))
    table = group_table(ranks, masks)
    valid_n, test_n = ndcg(ranks["valid"]), ndcg(ranks["test"])
    paired = np.array_equal(split.valid.users, split.test.users)
    interval = ratio_interval(ranks["valid"], ranks["test"], paired)

    print(
        f"{args.recipe} {' '.join(args.set)}: {seconds:.0f} s; {convention} {metric}, test evaluated for diagnosis"
    )
    print("\n| epoch | valid | test | test / valid |\n|---|---|---|---|")
    for r in epochs:
        mark = " (selected)" if r["epoch"] == best else ""
        print(f"| {r['epoch']}{mark} | {r['valid']:.4f} | {r['test']:.4f} | {r['test'] / r['valid']:.3f} |")
    print(
        f"\nselected epoch {best}: valid {valid_n:.4f}, test {test_n:.4f}, ratio {test_n / valid_n:.3f} "
        f"(95% bootstrap interval {interval[0]:.3f}-{interval[1]:.3f})"
    )
    print("\n| family | group | valid share | test share | valid N@10 | test N@10 | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        if "valid_ndcg" not in r:
            at = r["test_ndcg"]
            print(f"| {r['family']} | {r['group']} | | | | {at:.4f} | {at / valid_n:.3f} |")
            continue
        print(
            f"| {r['family']} | {r['group']} | {r['valid_share']:.4f} | {r['test_share']:.4f} | "
            f"{r['valid_ndcg']:.4f} | {r['test_ndcg']:.4f} | {r['ratio']:.3f} |"
        )
    skipped = None
    if paired:
        # Test targets read from the training sequence alone; the validation item, not in that history, is taken
        # out of the ranking by hand: a target ranked below it moves up one place (both come from one ranking).
        got: dict = {}
        skip_set = EvalSet(split.test.users, split.valid.history, split.test.targets)
        evaluate(model, skip_set, split.n_items, cfg.eval, None, (convention,), False, None, got)
        skip = got[convention]
        skip = np.where(ranks["valid"] < skip, skip - 1, skip)
        skipped = ndcg(skip)
        ranks_at[-1] = {"test_without_validation_item": skip}
        print(
            f"test targets, validation item left out of the history: N@10 {skipped:.4f} "
            f"({skipped / test_n:.3f} x the test figure)"
        )
    beams = []
    if args.beams and hasattr(model.cfg, "beam"):
        print("\n| beam | valid | test | test / valid |\n|---|---|---|---|")
        for width in [model.cfg.beam, *args.beams]:
            model.cfg = model.cfg.model_copy(update={"beam": width})
            figures, _ = both(model)
            v, t = figures["valid"][metric], figures["test"][metric]
            beams.append({"beam": width, "valid": v, "test": t})
            print(f"| {width} | {v:.4f} | {t:.4f} | {t / v:.3f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # Every example's rank per validated epoch, for comparisons between runs (same split, same order).
        np.savez_compressed(
            args.out.with_suffix(".npz"),
            **{
                f"{name}_{epoch}": r
                for epoch, split_ranks in ranks_at.items()
                for name, r in split_ranks.items()
            },
        )
        write_json(
            args.out,
            {
                "recipe": args.recipe,
                "overrides": args.set,
                "dataset": cfg.data.dataset,
                "seconds": round(seconds, 1),
                "train_seconds": summary.get("train_seconds"),
                "convention": convention,
                "epochs": epochs,
                "selected_epoch": best,
                "ratio_interval": interval,
                "groups": table,
                "test_without_validation_item": skipped,
                "beams": beams,
            },
        )


if __name__ == "__main__":
    main()
