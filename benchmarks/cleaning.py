"""Data cleaning: inject known noise into real data, detect it, and train on clean / noisy / filtered data.

    python -m benchmarks cleaning                                   # Beauty and ML-1M
    python -m benchmarks cleaning --datasets amazon-beauty --users 6000 --epochs 10

Noise (seeded): into each real user's sequence, before its two newest events (the leave-one-out targets), a
random catalogue item is inserted at `--noise` (15%) of the positions; bot users (`--bots`, 5% of the real users)
are added, half crawling uniformly random items, half repeating the 50 most popular items in minutes-long bursts.

Detection: AUC of `data.quality`'s event noise score against "injected event" (model-free, then with a SASRec
trained on the noisy data scoring each event's log-likelihood), and of the user bot score against "bot user".
Recovery: SASRec trained on the clean data, on the noisy data, and on the noisy data filtered with
`data.clean.drop_users` = the bots' share of users and `data.clean.drop_events` = the inserted items' share of the
real users' events (the rates assumed known; the filter does not see the labels), with the model-based score;
all three evaluated on the same clean leave-one-out test examples of the real users (full catalogue, history
excluded). recovered = (filtered - noisy) / (clean - noisy).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks._common import Report, parser
from genrec.config import load_config
from genrec.data import quality
from genrec.eval.ranking import auc as ranking_auc
from genrec.runs import evaluate_run, load_run, prepare_dataset, train_run
from genrec.runs.retrieval import implausibility


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties half)."""
    return ranking_auc(label, score)


def real_sequences(dataset: str, users: int, seed: int) -> pl.DataFrame:
    """user_id, item_id, timestamp (or null), in order, of up to `users` random users with >= 5 events."""
    cfg = load_config("sasrec", [], dataset)
    ds = prepare_dataset(cfg.data)
    ev = quality.event_table(ds).select("user_id", "item_id", "timestamp")
    ev = ev.with_columns(pl.col("user_id").cast(pl.Int64), pl.col("item_id").cast(pl.Int64))
    lengths = ev.group_by("user_id").len().filter(pl.col("len") >= 5)
    keep = lengths["user_id"].sample(min(users, lengths.height), seed=seed)
    return ev.filter(pl.col("user_id").is_in(keep.implode()))


def inject(clean: pl.DataFrame, noise: float, bots: float, seed: int) -> pl.DataFrame:
    """Noisy interactions with a `label` column (1 = injected) and `bot` (1 = bot user's event)."""
    rng = np.random.default_rng(seed)
    catalogue = clean["item_id"].unique().to_numpy()
    popular = clean.group_by("item_id").len().sort("len", descending=True).head(50)["item_id"].to_numpy()
    has_time = clean["timestamp"].null_count() == 0
    rows = []
    for (user,), part in clean.group_by("user_id", maintain_order=True):
        items, times = part["item_id"].to_numpy(), part["timestamp"].to_numpy()
        out_i, out_t, out_l = [], [], []
        for t in range(len(items)):
            if t < len(items) - 2 and rng.random() < noise:
                out_i.append(int(rng.choice(catalogue)))
                out_t.append(times[t] if has_time else None)
                out_l.append(1)
            out_i.append(int(items[t]))
            out_t.append(times[t] if has_time else None)
            out_l.append(0)
        rows.append(
            pl.DataFrame({"user_id": user, "item_id": out_i, "timestamp": out_t, "label": out_l, "bot": 0})
        )
    n_bots = int(round(bots * clean["user_id"].n_unique()))
    first_bot = int(clean["user_id"].max()) + 1
    t0 = int(clean["timestamp"].min()) if has_time else 0
    span = int(clean["timestamp"].max()) - t0 if has_time else 1
    for b in range(n_bots):
        n = int(rng.integers(30, 150))
        if b % 2:
            items = rng.choice(catalogue, n)
            times = np.sort(t0 + rng.integers(0, span, n)) if has_time else None
        else:  # popularity spammer in bursts of a few minutes
            items = rng.choice(popular, n)
            start = t0 + int(rng.integers(0, span))
            times = start + np.sort(rng.integers(0, 300, n)) if has_time else None
        rows.append(
            pl.DataFrame(
                {
                    "user_id": first_bot + b,
                    "item_id": items.astype(np.int64),
                    "timestamp": times.tolist() if has_time else [None] * n,
                    "label": 1,
                    "bot": 1,
                }
            )
        )
    cast = [pl.col(c).cast(pl.Int64) for c in ("user_id", "item_id", "timestamp", "label", "bot")]
    return pl.concat([r.with_columns(cast) for r in rows])


def write(frame: pl.DataFrame, path: Path) -> str:
    cols = ["user_id", "item_id"] + (["timestamp"] if frame["timestamp"].null_count() == 0 else [])
    frame.select(cols).write_parquet(path)
    return str(path)


def train(data: str, out: Path, over: list[str]) -> Path:
    cfg = load_config("sasrec", over, data)
    train_run(cfg, out, progress=False)
    return out


def test_ndcg(run_dir: Path, clean_file: str) -> float:
    return evaluate_run(load_run(run_dir), clean_file)["test"]["ndcg@10"]


def bench(dataset: str, args, tmp: Path) -> dict:
    t0 = time.perf_counter()
    clean = real_sequences(dataset, args.users, args.seed)
    noisy = inject(clean, args.noise, args.bots, args.seed)
    clean_file = write(clean, tmp / f"{dataset}-clean.parquet")
    noisy_file = write(noisy, tmp / f"{dataset}-noisy.parquet")
    over = [
        f"model.max_len={args.max_len}",
        f"train.epochs={args.epochs}",
        "train.threads=2",
        "model.dropout=0.2",
        "train.lr=0.003",
        "train.batch_size=128",
    ]
    bots = noisy.filter(pl.col("bot") == 1)["user_id"].unique()
    r = {
        "dataset": dataset,
        "users": clean["user_id"].n_unique(),
        "events": clean.height,
        "injected_events": int(noisy["label"].sum()),
        "bots": bots.len(),
    }

    noisy_ds = prepare_dataset(load_config("sasrec", [], noisy_file).data)
    events = quality.event_table(noisy_ds)
    # The noisy frame's rows in event_table's order: (user, time, file position) orders both the same way.
    labels = (
        noisy.with_row_index("position")
        .join(
            events.select("user_id", "position", pl.int_range(pl.len()).alias("row")),
            on=["user_id", "position"],
        )
        .sort("row")
    )
    truth = labels["label"].to_numpy()
    free = quality.event_scores(noisy_ds)
    real = labels["bot"].to_numpy() == 0
    r["event_auc_model_free"] = auc(free["noise"].to_numpy(), truth)
    r["inserted_auc_model_free"] = auc(free["noise"].to_numpy()[real], truth[real])
    users = quality.user_scores(free)
    bot_truth = (
        users["user_id"].is_in(noisy.filter(pl.col("bot") == 1)["user_id"].unique().implode()).to_numpy()
    )
    r["bot_auc"] = auc(users["bot"].to_numpy(), bot_truth)

    runs = {}
    runs["clean"] = train(clean_file, tmp / f"{dataset}-clean", over)
    runs["noisy"] = train(noisy_file, tmp / f"{dataset}-noisy", over)
    imp = implausibility(noisy_ds, str(runs["noisy"]))
    with_model = quality.event_scores(noisy_ds, implausibility=imp)
    r["event_auc_with_model"] = auc(with_model["noise"].to_numpy(), truth)
    r["inserted_auc_with_model"] = auc(with_model["noise"].to_numpy()[real], truth[real])
    r["event_auc_model_only"] = auc(np.nan_to_num(imp, nan=np.nanmean(imp)), truth)
    share_bots = r["bots"] / (r["users"] + r["bots"]) if args.drop_users is None else args.drop_users
    r["drop_users"] = round(share_bots, 4)
    # The event filter runs after the user filter: its share is the inserted items' among the real users' events.
    inserted = int(noisy.filter((pl.col("bot") == 0) & (pl.col("label") == 1)).height)
    share_events = inserted / noisy.filter(pl.col("bot") == 0).height
    filt = over + [
        f"data.clean.drop_users={share_bots:.4f}",
        f"data.clean.drop_events={share_events:.4f}",
        f"data.clean.model_run={runs['noisy']}",
    ]
    runs["filtered"] = train(noisy_file, tmp / f"{dataset}-filtered", filt)
    for name, run_dir in runs.items():
        r[f"ndcg@10_{name}"] = test_ndcg(run_dir, clean_file)
    cost = r["ndcg@10_clean"] - r["ndcg@10_noisy"]
    r["recovered"] = (r["ndcg@10_filtered"] - r["ndcg@10_noisy"]) / cost if cost > 0 else None
    r["seconds"] = round(time.perf_counter() - t0, 1)
    return r


COLUMNS = "dataset | AUC free | AUC model | inserted | bot AUC | N@10 clean | noisy | filtered | recovered"


def main(argv: list[str] | None = None) -> None:
    p = parser(__name__, __doc__, threads=False)
    p.add_argument("--datasets", default="amazon-beauty,ml-1m")
    p.add_argument("--users", type=int, default=6000, help="real users sampled per dataset")
    p.add_argument("--noise", type=float, default=0.15)
    p.add_argument("--bots", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--drop-users",
        type=float,
        default=None,
        help="share of users the filter drops (default: the injected bots' share; 0 = events only)",
    )
    args = p.parse_args(argv)
    report = Report(__name__, args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets.split(","):
            rows.append(bench(dataset, args, Path(tmp)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report.line(
        "event AUC: all injected events (inserted + bots'); inserted: real users' inserted items only\n"
    )
    report.table(
        COLUMNS,
        [
            [
                r["dataset"],
                f"{r['event_auc_model_free']:.3f}",
                f"{r['event_auc_with_model']:.3f}",
                f"{r['inserted_auc_with_model']:.3f}",
                f"{r['bot_auc']:.3f}",
                f"{r['ndcg@10_clean']:.4f}",
                f"{r['ndcg@10_noisy']:.4f}",
                f"{r['ndcg@10_filtered']:.4f}",
                "-" if r["recovered"] is None else f"{r['recovered']:.2f}",
            ]
            for r in rows
        ],
    )
    report.results = {r["dataset"]: r for r in rows}
    report.save()
