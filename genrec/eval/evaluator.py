"""Full-catalogue evaluation, both history conventions in one pass, plus the protocol that goes with it.

For every example the model scores all items; column 0 (padding) is never ranked. Two conventions are reported:
- `filtered` (history excluded): the items of the user's whole history are removed from the ranking, as in
  Meta's HSTU repository. Where a target repeats a history item it is removed too and counts as a miss.
- `unfiltered`: every catalogue item stays in the ranking.
Sampled-candidate metrics (target vs N sampled negatives) are computed only when asked for and are labelled so.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch

from genrec.config import EvalConfig
from genrec.data.batching import history_batch, pad_left
from genrec.data.split import EvalSet, Split
from genrec.eval.metrics import MetricAccumulator, ranks_from_lists, target_ranks
from genrec.models.base import Recommender, candidate_scores
from genrec.version import __version__

TIE_RULE = "ties counted against the target (pessimistic rank)"


@torch.no_grad()
def evaluate(
    model: Recommender,
    examples: EvalSet,
    n_items: int,
    cfg: EvalConfig,
    progress=None,
    conventions: tuple[str, ...] = ("filtered", "unfiltered"),
    coverage: bool = True,
) -> dict[str, dict]:
    """Metrics of the asked conventions (both by default; sampled candidates if configured) on one evaluation set.

    Per-epoch validation asks for the one convention it selects on and no coverage (no top-K lists): for a
    generating model (TIGER) that halves the decoding, for a scoring one it skips a ranking and two top-K sorts.
    """
    was_training = model.training
    model.eval()
    ks = cfg.ks
    max_k = min(max(ks), n_items)
    if not conventions or set(conventions) - {"filtered", "unfiltered"}:
        raise ValueError(f"conventions must be 'filtered' and/or 'unfiltered', got {conventions!r}")
    want_filtered, want_unfiltered = "filtered" in conventions, "unfiltered" in conventions
    filtered, unfiltered = MetricAccumulator(ks, n_items), MetricAccumulator(ks, n_items)
    sampled = MetricAccumulator(ks, cfg.sampled_negatives + 1) if cfg.sampled_negatives else None

    def top(scores: torch.Tensor) -> torch.Tensor | None:
        return torch.topk(scores, max_k, dim=1).indices if coverage else None

    rng = np.random.default_rng(cfg.seed)
    hist = examples.history
    order = np.argsort(hist.lengths(), kind="stable")  # similar lengths together: less padding per batch
    task = progress.add_task("evaluating", total=len(order), info="") if progress else None
    for start in range(0, len(order), cfg.batch_size):
        rows = order[start : start + cfg.batch_size]
        batch = history_batch(
            hist.offsets,
            hist.items,
            rows,
            model.max_history,
            examples.users[rows],
            hist.timestamps,
        )
        targets = torch.from_numpy(examples.targets[rows]).long()
        seen = torch.from_numpy(pad_left(hist.offsets, hist.items, rows, None)).long()
        if "score" in model.capabilities:
            scores = candidate_scores(model, batch)
            if want_unfiltered:
                unfiltered.add(target_ranks(scores, targets), top(scores))
            if sampled is not None:
                sampled.add(_sampled_ranks(scores, targets, seen, cfg.sampled_negatives, n_items, rng))
            if want_filtered:
                scores.scatter_(1, seen, float("-inf"))
                filtered.add(target_ranks(scores, targets), top(scores))
        else:
            if want_unfiltered:
                top_all, _ = model.recommend(batch, max_k, exclude=None)
                unfiltered.add(ranks_from_lists(top_all, targets, n_items), top_all)
            if want_filtered:
                top_new, _ = model.recommend(batch, max_k, exclude=seen)
                filtered.add(ranks_from_lists(top_new, targets, n_items), top_new)
        if progress:
            progress.advance(task, len(rows))
    if progress:
        progress.remove_task(task)
    model.train(was_training)
    out = {}
    if want_filtered:
        out["filtered"] = filtered.result()
    if want_unfiltered:
        out["unfiltered"] = unfiltered.result()
    if sampled is not None:
        out["sampled"] = sampled.result()
    return out


def validation_score(
    model: Recommender, examples: EvalSet, n_items: int, cfg: EvalConfig, progress=None
) -> float:
    """The per-epoch checkpoint-selection score: `cfg.select_metric` in the convention `cfg.exclude_history`
    names, from one pass that computes nothing else."""
    convention = "filtered" if cfg.exclude_history else "unfiltered"
    metrics = evaluate(model, examples, n_items, cfg, progress, (convention,), coverage=False)
    return float(metrics[convention][cfg.select_metric])


def _sampled_ranks(scores, targets, seen, n_neg, n_items, rng) -> torch.Tensor:
    """Rank of the target among n_neg items drawn uniformly from those not in the history and not the target."""
    b = len(targets)
    neg = torch.from_numpy(rng.integers(1, n_items + 1, size=(b, n_neg)))
    for _ in range(10):  # redraw collisions; with a large catalogue one or two rounds suffice
        bad = (neg == targets[:, None]) | (neg[:, :, None] == seen[:, None, :]).any(-1)
        if not bad.any():
            break
        neg[bad] = torch.from_numpy(rng.integers(1, n_items + 1, size=int(bad.sum())))
    cand = torch.cat([targets[:, None], neg], 1)
    return target_ranks(scores.gather(1, cand), torch.zeros(b, dtype=torch.long))


def evaluate_split(
    model: Recommender,
    split: Split,
    cfg: EvalConfig,
    which=("valid", "test"),
    progress=None,
) -> dict:
    """The metrics.json body: `valid`/`test` (history excluded) beside `*_unfiltered` (all items ranked).

    With `exclude_history: false` the plain keys hold the unfiltered numbers and `*_filtered` the other ones.
    """
    out: dict = {}
    for name in which:
        res = evaluate(model, getattr(split, name), split.n_items, cfg, progress)
        if cfg.exclude_history:
            out[name], out[f"{name}_unfiltered"] = res["filtered"], res["unfiltered"]
        else:
            out[name], out[f"{name}_filtered"] = res["unfiltered"], res["filtered"]
        if "sampled" in res:
            out[f"{name}_sampled{cfg.sampled_negatives}"] = res["sampled"]
    return out


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"genrec {__version__}" + (f" ({sha})" if sha else "")


def protocol(
    split: Split,
    cfg: EvalConfig,
    dataset_name: str,
    dataset_stats: dict,
    notes: list[str],
    checkpoint_selection: str,
    seed: int,
    model: Recommender,
) -> dict:
    headline = "history items excluded from the ranking" if cfg.exclude_history else "all items ranked"
    candidates = f"full catalogue: all {split.n_items} items scored, exact top-K"
    if "score" not in model.capabilities:
        candidates = (
            f"generated top-{min(max(cfg.ks), split.n_items)} list; targets outside it count as misses"
        )
    out = {
        "dataset": dataset_name,
        "dataset_stats": dataset_stats,
        "preprocessing": notes,
        "split": split.details,
        "candidates": candidates,
        "headline_convention": headline,
        "keys": {
            "valid/test": headline,
            "*_unfiltered" if cfg.exclude_history else "*_filtered": (
                "every item ranked, history included" if cfg.exclude_history else "history items excluded"
            ),
        },
        "ties": TIE_RULE,
        "metrics": "recall@K = hr@K (one target per example), ndcg@K, mrr (full ranking), coverage@K (share of "
        "the catalogue appearing in any top-K list)",
        "checkpoint_selection": checkpoint_selection,
        "seed": seed,
        "code_version": code_version(),
    }
    if cfg.sampled_negatives:
        out["sampled"] = (
            f"*_sampled{cfg.sampled_negatives}: target ranked against {cfg.sampled_negatives} items sampled uniformly "
            "from those not in the history; NOT comparable with full-ranking numbers"
        )
    return out
