"""Full-catalogue evaluation in item chunks equals the evaluator's whole-matrix ranking: the same ranks, top-K
lists and metrics (every K, both conventions, MRR, coverage, sampled negatives, list metrics), with ties, NaN
and infinite scores, history offsets and chunk sizes that do not divide the catalogue.

The vectors hold small integers, so every score is exact whatever order a matmul sums in: the test checks the
chunking, not BLAS rounding (which for small matrices may differ in the last bit between a chunk and the whole
matrix). Exact ties: ranks count them against the target either way; which of several equally scored items
fills the K-th place of a list is PyTorch's topk's choice in both, and may differ, so lists are compared on
vectors without them."""

import numpy as np
import pytest
import torch

from genrec.config import EvalConfig
from genrec.data.batching import HistoryBatch
from genrec.data.split import Csr, EvalSet
from genrec.eval.chunked import CatalogueScores, rank_catalogue, top_k
from genrec.eval.evaluator import evaluate
from genrec.eval.lists import ListAccumulator, ListContext
from genrec.eval.metrics import MetricAccumulator, target_ranks
from genrec.models.base import candidate_scores

N_ITEMS, N_USERS, DIM = 61, 40, 6


class VectorModel(torch.nn.Module):
    """score = query @ item row (+ an offset on the items of the input window), as the next-item models compute
    it; item 5's vector is NaN, items 7 and 8 are the same vector (exact ties), item 9 scores +inf or -inf (the
    sign of the query's first coordinate)."""

    capabilities = frozenset({"score", "item_vectors"})

    def __init__(
        self, offset: float | None = None, window: int | None = None, seed: int = 0, ties: bool = True
    ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.items = torch.randint(-1000, 1001, (N_ITEMS + 1, DIM), generator=gen).float()
        self.items[5] = float("nan")
        if ties:
            self.items[8] = self.items[7]
        self.items[9] = 0.0
        self.items[9, 0] = float("inf")
        self.users = torch.randint(-1000, 1001, (N_USERS, DIM), generator=gen).float()
        self.n_items, self.offset, self.max_history = N_ITEMS, offset, window

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def item_vectors(self) -> torch.Tensor:
        return self.items

    def query_vectors(self, batch: HistoryBatch) -> torch.Tensor:
        return self.users[batch.users]

    def history_offset(self) -> float | None:
        return self.offset

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        scores = self.query_vectors(batch) @ self.item_vectors().t()
        if self.offset is not None:
            rows = torch.arange(len(scores))[:, None].expand_as(batch.items)
            scores[rows, batch.items] = scores[rows, batch.items] + self.offset
        return scores


def random_examples(seed: int = 0, n: int = N_USERS) -> EvalSet:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 9, size=n)
    items = rng.integers(1, N_ITEMS + 1, size=int(lengths.sum()))
    targets = rng.integers(1, N_ITEMS + 1, size=n)
    targets[:4] = [5, 7, 8, 9]  # NaN, tied and -inf targets
    offsets = np.r_[0, np.cumsum(lengths)]
    if lengths[4]:
        targets[4] = items[offsets[4]]  # a target the history repeats
    return EvalSet(np.arange(n), Csr(offsets, items), targets)


def reference(model, examples: EvalSet, cfg: EvalConfig) -> dict:
    """The whole-matrix evaluation as the evaluator did it before chunks: every item scored at once, the target's
    pessimistic rank in the matrix, top-K lists by one topk."""
    from genrec.data.batching import history_batch, pad_left

    ks, max_k = cfg.ks, min(max(cfg.ks), N_ITEMS)
    acc = {c: MetricAccumulator(ks, N_ITEMS) for c in ("filtered", "unfiltered")}
    hist = examples.history
    order = np.argsort(hist.lengths(), kind="stable")
    for start in range(0, len(order), cfg.batch_size):
        rows = order[start : start + cfg.batch_size]
        batch = history_batch(hist.offsets, hist.items, rows, model.max_history, examples.users[rows])
        targets = torch.from_numpy(examples.targets[rows]).long()
        seen = torch.from_numpy(pad_left(hist.offsets, hist.items, rows, None)).long()
        scores = candidate_scores(model, batch)
        for name in ("unfiltered", "filtered"):
            if name == "filtered":
                scores.scatter_(1, seen, float("-inf"))
            best = torch.topk(scores, max_k, dim=1)
            listed = torch.where(best.values > float("-inf"), best.indices, 0)
            acc[name].add(target_ranks(scores, targets), listed)
    return {name: a.result() for name, a in acc.items()}


def without_coverage(metrics: dict) -> dict:
    return {c: {k: v for k, v in m.items() if not k.startswith("coverage")} for c, m in metrics.items()}


@pytest.mark.parametrize("chunk", [0, 1024, 7, 13, 60])
@pytest.mark.parametrize("offset", [None, 2.5])
@pytest.mark.parametrize("batch_size", [1, 9, 64])
def test_chunked_evaluation_equals_the_whole_matrix(chunk, offset, batch_size):
    examples = random_examples()
    cfg = EvalConfig(ks=[1, 2, 3, 5, 10, 20, 61, 100], batch_size=batch_size, select_metric="mrr")
    for ties in (True, False):
        model = VectorModel(offset, window=3, ties=ties)
        expected = reference(model, examples, cfg)
        got = evaluate(model, examples, N_ITEMS, cfg, chunk=chunk)
        assert (got if not ties else without_coverage(got)) == (
            expected if not ties else without_coverage(expected)
        )
    assert got["filtered"]["recall@100"] < 1 and got["unfiltered"]["mrr"] > 0  # misses and hits both present


def test_ranks_and_lists_of_every_chunking_agree():
    """Batch-level: the same ranks, the same top-K lists and scores, and the same sampled-candidate scores."""
    model = VectorModel(1.0, window=4, seed=3, ties=False)
    examples = random_examples(3, 24)
    rows = np.arange(24)
    from genrec.data.batching import history_batch, pad_left

    hist = examples.history
    batch = history_batch(hist.offsets, hist.items, rows, model.max_history, examples.users)
    targets = torch.from_numpy(examples.targets).long()
    seen = torch.from_numpy(pad_left(hist.offsets, hist.items, rows, None)).long()
    extra = torch.randint(1, N_ITEMS + 1, (24, 5), generator=torch.Generator().manual_seed(0))
    results = []
    for chunk in (None, 5, 11, 62):
        ranked, extra_scores = rank_catalogue(
            CatalogueScores(model, batch, chunk),
            targets,
            seen,
            10,
            lists=("filtered", "unfiltered"),
            extra=extra,
        )
        results.append((ranked, extra_scores))
    (whole, whole_extra), *others = results
    for ranked, extra_scores in others:
        torch.testing.assert_close(extra_scores, whole_extra, rtol=0, atol=0)
        for name in ("filtered", "unfiltered"):
            assert torch.equal(ranked[name].ranks, whole[name].ranks)
            assert torch.equal(ranked[name].top, whole[name].top)
            torch.testing.assert_close(ranked[name].top_scores, whole[name].top_scores, rtol=0, atol=0)
    # top_k: what recommend returns, history excluded
    ids, values = top_k(CatalogueScores(model, batch, 7), 10, seen)
    full = candidate_scores(model, batch, seen)
    best = torch.topk(full, 10, dim=1)
    assert torch.equal(ids, best.indices) and torch.equal(values, best.values)


def test_sampled_negatives_and_list_metrics_are_unchanged():
    model = VectorModel(None, seed=5, ties=False)
    examples = random_examples(5)
    cfg = EvalConfig(ks=[1, 5, 10], batch_size=16, sampled_negatives=20, select_metric="mrr")
    genres = [{i % 3} for i in range(N_ITEMS + 1)]
    popular = np.zeros(N_ITEMS + 1, dtype=bool)
    popular[:6] = True

    def run(chunk):
        lists = ListAccumulator(ListContext(genres, popular), None, 5)
        return evaluate(model, examples, N_ITEMS, cfg, chunk=chunk, lists=lists)

    whole = run(0)
    assert "sampled" in whole and "ild@5" in whole["filtered"]
    for chunk in (4, 17):
        assert run(chunk) == whole


def test_a_target_scored_otherwise_than_in_its_chunk_is_counted_again(monkeypatch):
    """Where the target's score from the targets' matmul differs from its own cell (a last-bit difference between
    BLAS kernels), the rank is counted against the cell's value: the same as the whole matrix gives."""
    model = VectorModel(None, seed=2, ties=False)
    examples = random_examples(2)
    cfg = EvalConfig(ks=[1, 5, 10], batch_size=16, select_metric="mrr")
    expected = evaluate(model, examples, N_ITEMS, cfg, chunk=0)
    of = CatalogueScores.of
    monkeypatch.setattr(CatalogueScores, "of", lambda self, items: of(self, items) + 0.5)  # between integers
    assert evaluate(model, examples, N_ITEMS, cfg, chunk=9) == expected
