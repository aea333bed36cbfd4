"""Full-catalogue evaluation, both history conventions in one pass, plus the protocol that goes with it.

For every example the model scores all items; column 0 (padding) is never ranked. A model with item vectors is
scored one item chunk at a time (`genrec.eval.chunked`: memory O(batch x (K + chunk)), whatever the catalogue's
size), on the device the model is on. Two conventions are reported:
- `filtered` (history excluded): the items of the user's whole history are removed from the ranking, as in
  Meta's HSTU repository. Where a target repeats a history item it is removed too and counts as a miss.
- `unfiltered`: every catalogue item stays in the ranking.
Sampled-candidate metrics (target vs N sampled negatives) are computed only when asked for and are labelled so.

A target that is not ranked (removed by the convention, scored NaN or -inf, absent from a generated list) is a
miss at every K (`metrics.MISS`). A generated list counts only its real, distinct items with a score above -inf
(and, history excluded, outside the history): a list generator that returns an excluded item, a dead slot or a
repeat gains no place by it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch

from genrec.config import EvalConfig
from genrec.data.batching import history_batch, pad_left
from genrec.data.split import EvalSet, Split
from genrec.eval.chunked import CatalogueScores, ItemTable, chunkable, item_chunk, rank_catalogue
from genrec.eval.lists import LIST_K, ListAccumulator, ListContext, future_ratings
from genrec.eval.metrics import MISS, MetricAccumulator, compact_lists, ranks_from_lists, target_ranks
from genrec.eval.sessions import evaluate_sessions, session_protocol
from genrec.models.base import Recommender
from genrec.runtime import module_device, to_device
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
    lists: ListAccumulator | None = None,
    example_ranks: dict[str, np.ndarray] | None = None,
    chunk: int | None = None,
) -> dict[str, dict]:
    """Metrics of the asked conventions (both by default; sampled candidates if configured) on one evaluation set.

    `lists` (optional) accumulates the list-level metrics (`genrec.eval.lists`) of the headline convention's
    top-K lists (`cfg.exclude_history`); they join that convention's metrics. `chunk`: items scored at a time by
    a model with item vectors (default: `chunked.item_chunk` of the batch size, about 64 MB of scores; 0 = the
    whole catalogue at once through the model's `score`). Batches run on the model's device.

    `example_ranks` (optional, a dict) receives, per asked convention, every example's 0-based target rank
    ([len(examples)] float64 in `examples` order, `MISS` = not ranked): the numbers the metrics are means of, for
    breaking them down by groups of examples.

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

    list_convention = "filtered" if cfg.exclude_history else "unfiltered"
    if lists is not None and list_convention not in conventions:
        raise ValueError(f"list metrics need the {list_convention} convention")
    hist_lengths = examples.history.lengths()
    if example_ranks is not None:
        example_ranks.update({c: np.full(len(examples), MISS) for c in conventions})

    def add_ranks(rows: np.ndarray, convention: str, ranks: torch.Tensor) -> None:
        if example_ranks is not None:
            example_ranks[convention][rows] = ranks.double().cpu().numpy()

    listed_conventions = tuple(
        c for c in conventions if coverage or (lists is not None and c == list_convention)
    )

    def add_lists(rows: np.ndarray, convention: str, listed: torch.Tensor | None) -> None:
        if lists is not None and convention == list_convention:
            lists.add(rows, examples.users[rows], hist_lengths[rows], listed.cpu())

    device = module_device(model)
    if chunk is None:
        chunk = item_chunk(cfg.batch_size, n_items)
    # None: the model's own `score` matrix, whole (any scoring model, and any catalogue that fits one chunk)
    scoring = chunk if chunk and chunk <= n_items and chunkable(model) else None
    table = ItemTable(model) if scoring else None  # the item vectors, read once
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
        cand = empty = None
        if sampled is not None and "score" in model.capabilities:  # drawn on the host, in the seed's order
            cand, empty = _sample_negatives(targets, seen, cfg.sampled_negatives, n_items, rng)
            cand, empty = cand.to(device), empty.to(device)
        batch, targets, seen = to_device((batch, targets, seen), device)

        if "score" in model.capabilities:
            ranked, cand_scores = rank_catalogue(
                CatalogueScores(model, batch, scoring, table),
                targets,
                seen,
                max_k,
                conventions,
                listed_conventions,
                cand,
            )
            for name, acc in (("unfiltered", unfiltered), ("filtered", filtered)):
                if name in ranked:
                    acc.add(ranked[name].ranks, ranked[name].top if coverage else None)
                    add_ranks(rows, name, ranked[name].ranks)
                    add_lists(rows, name, ranked[name].top)
            if sampled is not None:
                cand_scores[:, 1:] = cand_scores[:, 1:].masked_fill(empty, float("-inf"))
                ranks = target_ranks(cand_scores, torch.zeros_like(targets))
                # As in the history-excluded ranking: a target that the history repeats is a miss.
                if cfg.exclude_history:
                    ranks = torch.where(_in_rows(targets[:, None], seen)[:, 0], MISS, ranks)
                sampled.add(ranks)
        else:
            if want_unfiltered:
                ids, values = model.recommend(batch, max_k, exclude=None)
                listed = compact_lists(ids, values > float("-inf"))
                ranks = ranks_from_lists(listed, targets)
                unfiltered.add(ranks, listed)
                add_ranks(rows, "unfiltered", ranks)
                add_lists(rows, "unfiltered", listed)
            if want_filtered:
                ids, values = model.recommend(batch, max_k, exclude=seen)
                listed = compact_lists(ids, (values > float("-inf")) & ~_in_rows(ids, seen))
                ranks = ranks_from_lists(listed, targets)
                ranks = torch.where(_in_rows(targets[:, None], seen)[:, 0], MISS, ranks)
                filtered.add(ranks, listed)
                add_ranks(rows, "filtered", ranks)
                add_lists(rows, "filtered", listed)
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
    if lists is not None:
        out[list_convention].update(lists.result())
    return out


def validation_score(
    model: Recommender, examples: EvalSet, n_items: int, cfg: EvalConfig, progress=None
) -> float:
    """The per-epoch checkpoint-selection score: `cfg.select_metric` in the convention `cfg.exclude_history`
    names, from one pass that computes nothing else."""
    convention = "filtered" if cfg.exclude_history else "unfiltered"
    metrics = evaluate(model, examples, n_items, cfg, progress, (convention,), coverage=False)
    return float(metrics[convention][cfg.select_metric])


def _in_rows(ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[B, L] ids, [B, M] item ids per row (0 = none) -> [B, L] whether each id (> 0) is among its row's items.
    By binary search: memory stays O(B * (L + M)) for long histories."""
    if rows.shape[1] == 0:
        return torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
    ordered = rows.sort(1).values
    pos = torch.searchsorted(ordered, ids.contiguous()).clamp(max=rows.shape[1] - 1)
    return (ordered.gather(1, pos) == ids) & (ids > 0)


def _sample_negatives(targets, seen, n_neg, n_items, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidates [B, 1 + n_neg]: the target, then n_neg items drawn uniformly (with replacement) from those not
    in the history and not the target; [B, n_neg] True where a row had no item left to draw). The target ranks
    among its candidates' scores (`MISS` where its own score is -inf or NaN), the empty places at -inf.

    Collisions are redrawn; a row still colliding after that (its history covers nearly the whole catalogue)
    draws from the items that remain, and where none remain it keeps only the target (rank 0), as the
    history-excluded full ranking would. Host tensors (the draws come from NumPy's generator)."""
    b = len(targets)
    neg = torch.from_numpy(rng.integers(1, n_items + 1, size=(b, n_neg)))

    def collisions() -> torch.Tensor:
        return (neg == targets[:, None]) | (neg[:, :, None] == seen[:, None, :]).any(-1)

    for _ in range(10):  # redraw collisions; with a large catalogue one or two rounds suffice
        bad = collisions()
        if not bad.any():
            break
        neg[bad] = torch.from_numpy(rng.integers(1, n_items + 1, size=int(bad.sum())))
    bad = collisions()
    empty = torch.zeros(b, n_neg, dtype=torch.bool)
    for row in bad.any(1).nonzero()[:, 0].tolist():
        taken = np.union1d(seen[row].numpy(), [int(targets[row])])
        left = np.setdiff1d(np.arange(1, n_items + 1), taken)
        if len(left):
            neg[row, bad[row]] = torch.from_numpy(rng.choice(left, size=int(bad[row].sum())))
        else:
            empty[row] = True
    return torch.cat([targets[:, None], neg], 1), empty


def evaluate_split(
    model: Recommender,
    split: Split,
    cfg: EvalConfig,
    which=("valid", "test"),
    progress=None,
    context: ListContext | None = None,
) -> dict:
    """The metrics.json body: `valid`/`test` (history excluded) beside `*_unfiltered` (all items ranked).

    With `exclude_history: false` the plain keys hold the unfiltered numbers and `*_filtered` the other ones.
    With a `context`, the plain keys also hold the list-level metrics (`genrec.eval.lists`) at K = 10.
    """
    out: dict = {}
    k = max([x for x in cfg.ks if x <= LIST_K] or [min(cfg.ks)])
    for name in which:
        acc = ListAccumulator(context, future_ratings(split, name), k) if context is not None else None
        res = evaluate(model, getattr(split, name), split.n_items, cfg, progress, lists=acc)
        if cfg.exclude_history:
            out[name], out[f"{name}_unfiltered"] = res["filtered"], res["unfiltered"]
        else:
            out[name], out[f"{name}_filtered"] = res["unfiltered"], res["filtered"]
        if "sampled" in res:
            out[f"{name}_sampled{cfg.sampled_negatives}"] = res["sampled"]
        if cfg.session_len and name == "test":
            reward = context.reward if context is not None else None
            out[f"{name}_sessions"] = evaluate_sessions(model, split, name, cfg, reward)
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


def protocol(split: Split, cfg: EvalConfig, model: Recommender) -> dict:
    """The evaluator's part of metrics.json's `protocol` (`genrec.runs.protocol`): candidates, conventions, ties,
    metrics, and the sessions / sampled-candidate metrics when they are computed."""
    headline = "history items excluded from the ranking" if cfg.exclude_history else "all items ranked"
    candidates = f"full catalogue: all {split.n_items} items scored, exact top-K"
    if "score" not in model.capabilities:
        candidates = (
            f"generated top-{min(max(cfg.ks), split.n_items)} list; targets outside it count as misses"
        )
    out = {
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
    }
    if cfg.session_len:
        out["sessions"] = session_protocol(cfg)
    if cfg.sampled_negatives:
        out["sampled"] = (
            f"*_sampled{cfg.sampled_negatives}: target ranked against {cfg.sampled_negatives} items sampled uniformly "
            "from those not in the history"
            + ("; a target that repeats a history item is a miss" if cfg.exclude_history else "")
            + "; NOT comparable with full-ranking numbers"
        )
    return out
