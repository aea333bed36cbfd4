"""Search beside recommendation: query-only retrievers (BM25, MiniLM) and the search protocol.

Search protocol (leave-one-out, as recommendation): each test user's held-out item has a query (one per item,
`genrec.items.queries`); a model gets that query and the user's history and ranks the full catalogue; the rank of
the held-out item gives recall@K / NDCG@K, in both conventions of `genrec.eval.evaluator` (history excluded is
the headline). Query-only retrievers ignore the history:

- BM25: Okapi BM25 (`rank_bm25.BM25Okapi`, k1 = 1.5, b = 0.75) over each item's text (title + categories),
  lower-cased words; a query's score is the sum of its words' scores (computed once per distinct word).
- MiniLM: cosine between the all-MiniLM-L6-v2 embeddings of the query and of the item text.

`fused_view` adds BM25 to a model's search scores with one weight chosen on validation (hybrid retrieval).

A model that answers search declares the `search` capability: `search_scores(batch, query_emb) -> [B, n + 1]`
with `query_emb` [B, text_dim] the query's text embeddings.
"""

from __future__ import annotations

import numpy as np
import torch

from genrec.config import EvalConfig
from genrec.data.split import EvalSet
from genrec.eval.evaluator import evaluate
from genrec.items.queries import words
from genrec.models.base import Capable

SEARCH_PROTOCOL = (
    "search: the held-out (test) item's query, plus the user's history for models that read it, ranks the full "
    "catalogue; rank of the held-out item; leave-one-out split as recommendation"
)


class QueryScores(Capable, torch.nn.Module):
    """A scoring view for the evaluator: row u of `scores_of_user(users)` is user u's search scores."""

    capabilities = frozenset({"score"})

    def __init__(self, score_fn, max_history: int | None = None) -> None:
        super().__init__()
        self.score_fn, self.max_history = score_fn, max_history

    @torch.no_grad()
    def score(self, batch) -> torch.Tensor:
        return self.score_fn(batch)


def target_of_user(examples: EvalSet, n_users: int) -> torch.Tensor:
    """[n_users] the held-out item of each user of `examples` (0 for users without an example)."""
    out = np.zeros(n_users, dtype=np.int64)
    out[examples.users] = examples.targets
    return torch.from_numpy(out)


class BM25Index:
    """BM25 scores of every item for a query; rows aligned to internal item ids (row 0 = padding, -inf)."""

    def __init__(self, item_texts: list[str]) -> None:
        from rank_bm25 import BM25Okapi

        docs = [words(t) or ["_"] for t in item_texts]
        self.bm25 = BM25Okapi(docs)
        self._cache: dict[str, np.ndarray] = {}

    def word_scores(self, word: str) -> np.ndarray:
        if word not in self._cache:
            self._cache[word] = self.bm25.get_scores([word]).astype(np.float32)
        return self._cache[word]

    def scores(self, query: str) -> np.ndarray:
        """[n_items + 1] scores (BM25 is a sum over the query's words)."""
        n = len(self.bm25.doc_len)
        out = np.zeros(n + 1, dtype=np.float32)
        for w in words(query):
            out[1:] += self.word_scores(w)
        out[0] = -np.inf
        return out


def bm25_view(index: BM25Index, queries: list[str], targets: torch.Tensor) -> QueryScores:
    """`queries[i - 1]` is item i's query; `targets` maps a user to the item whose query they type."""

    def score(batch):
        rows = [index.scores(queries[int(t) - 1]) for t in targets[batch.users]]
        return torch.from_numpy(np.stack(rows))

    return QueryScores(score)


def cosine_view(query_emb: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor) -> QueryScores:
    """MiniLM retrieval: `query_emb` [n_items + 1, d] item i's query vector, `item_emb` [n_items + 1, d] item
    text vectors (both L2-normalised; row 0 padding)."""

    def score(batch):
        s = query_emb[targets[batch.users]] @ item_emb.t()
        s[:, 0] = float("-inf")
        return s

    return QueryScores(score)


def model_search_view(model, query_emb: torch.Tensor, targets: torch.Tensor) -> QueryScores:
    """A model with the `search` capability, asked with the held-out item's query and the user's history."""
    if not model.can("search"):
        raise ValueError(f"{type(model).__name__} does not answer search queries")

    def score(batch):
        return model.search_scores(batch, query_emb[targets[batch.users]])

    view = QueryScores(score, model.max_history)
    view.model = model  # so that evaluate()'s eval() / train() reach the model's dropout
    return view


def fused_view(model_view: QueryScores, bm25: QueryScores, weight: float) -> QueryScores:
    """Hybrid retrieval: a model's search scores plus `weight` times BM25's (a lexical match the model's dense
    text vectors cannot make exactly); `weight` is chosen on validation users, never on test."""

    def score(batch):
        return model_view.score(batch) + weight * bm25.score(batch)

    view = QueryScores(score, model_view.max_history)
    view.model = model_view
    return view


def evaluate_search(view: QueryScores, examples: EvalSet, n_items: int, cfg: EvalConfig) -> dict:
    """Both conventions' metrics of a search view over `examples` (users with held-out items)."""
    return evaluate(view, examples, n_items, cfg)
