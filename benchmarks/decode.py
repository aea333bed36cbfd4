"""Decoding speed of TIGER's constrained beam search: top-10 for 1,000 users with beam 20 (target: < 10 s).

    python -m benchmarks decode --run runs/leaderboard/tiger-amazon-beauty--amazon-beauty
    python -m benchmarks decode          # no run: an untrained recipe-size model, Beauty-size catalogue

Users are the first 1,000 test examples of the run's dataset (history excluded at the last code level, as the
evaluator's headline convention does). Without a run, the model has the `tiger` recipe's size and random codes
(3 x 256 + separation code) for 12,101 items, and random histories; the work per step is the same. The time is
one pass over all users after one warm-up pass (allocator and kernels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks._common import Report, parser, timed
from genrec.config import load_config
from genrec.data.batching import HistoryBatch, history_batch, pad_left
from genrec.items.semantic_ids import SemanticIds, separation_codes
from genrec.models import build_model
from genrec.runs import load_run, make_split, prepare_dataset


def synthetic(n_items: int, users: int, seed: int = 0):
    cfg = load_config("tiger").model
    model = build_model(cfg, n_items, users).eval()
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, cfg.tokenizer.codebook_size, size=(n_items, cfg.tokenizer.levels))
    codes = np.concatenate([raw, separation_codes(raw)[:, None]], 1)
    model.set_semantic_ids(
        SemanticIds(codes, [cfg.tokenizer.codebook_size] * 3 + [int(codes[:, -1].max()) + 1])
    )
    lengths = rng.integers(3, cfg.max_len + 1, size=users)
    items = np.zeros((users, cfg.max_len), dtype=np.int64)
    for u, n in enumerate(lengths):  # setup only, not timed
        items[u, -n:] = rng.integers(1, n_items + 1, size=n)
    batch = HistoryBatch(torch.from_numpy(items))
    return model, batch, batch.items.clone(), "untrained recipe-size model, random codes and histories"


def from_run(run_dir: str, users: int):
    run = load_run(Path(run_dir))
    split = make_split(prepare_dataset(run.cfg.data), run.cfg.data, run.items["item_id"].to_numpy())
    rows = np.arange(min(users, len(split.test)))
    hist = split.test.history
    batch = history_batch(hist.offsets, hist.items, rows, run.model.max_history)
    seen = torch.from_numpy(pad_left(hist.offsets, hist.items, rows, None)).long()
    return run.model, batch, seen, f"trained run {run_dir}"


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("--run", default=None)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--items", type=int, default=12101, help="catalogue size of the synthetic model")
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    torch.set_num_threads(args.threads)
    model, batch, seen, what = (
        from_run(args.run, args.users) if args.run else synthetic(args.items, args.users)
    )
    model.cfg = model.cfg.model_copy(update={"beam": args.beam})
    model.trie()  # built once per model, like loading a run; not part of per-request decoding
    n = len(batch.items)

    def decode_all():
        for s in range(0, n, args.batch_size):
            sub = HistoryBatch(batch.items[s : s + args.batch_size])
            items, _ = model.recommend(sub, args.k, seen[s : s + args.batch_size])
            assert (items > 0).all()

    t = timed(decode_all, repeats=1).median
    report.line(f"model: {what}; {model.n_items} items, code depth {model.depth}")
    verdict = "met" if t < 10 else "missed"
    report.table(
        ["users", "k", "beam", "batch", "threads", "seconds", "users/s", "target"],
        [
            [
                n,
                args.k,
                args.beam,
                args.batch_size,
                args.threads,
                f"{t:.2f}",
                f"{n / t:,.0f}",
                f"< 10 s: {verdict}",
            ]
        ],
    )
    report.results = {"users": n, "seconds": t, "users_per_s": n / t, "model": what, "items": model.n_items}
    report.save()
