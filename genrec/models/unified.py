"""One SASRec for search and recommendation: the task is a learned token added to the sequence representation,
and a search query's text embedding is added beside it.

- Recommendation: `score(batch)` = (h + t_rec) @ E^T, with h the SASRec state after the newest history item and
  E the (tied) item table: exactly SASRec plus a per-task offset.
- Search: `search_scores(batch, q)` = (h + t_search + P q) @ E^T + a * cos(q, x_i), with q the query's text
  embedding (all-MiniLM-L6-v2 by default), P a learned d x text_dim projection, x_i item i's text embedding
  (title + categories) and a a learned scale: the first term lets the history pick among the items the query
  describes, the second is query-item text matching, weighted as training finds best (`query_match: false`
  drops it). The cosine is taken in the top `match_dim` singular directions of the item text vectors, which
  keeps the search half of training cheap (full 384-dim vectors made an epoch 4x as long as SASRec's).
- Training: every position of a training window is used twice in one encoder pass, once to predict the next
  item (recommendation) and once to predict it from the same state plus that item's query (search); both
  are full-softmax cross-entropy over the catalogue, averaged (`search_weight` scales the search half by
  sampling a share of its positions). Queries come from `genrec.items.queries.template_query`, so the model
  never sees a user's typed text; any query string (LLM-written, a user's) is encoded the same way at inference.

Unified generative search and recommendation (one model switched by its input between a typed query and the
history) is a direction of the generative-recommendation surveys; this is its smallest form on SASRec (Kang &
McAuley 2018, https://arxiv.org/abs/1808.09781): ID items, a task embedding instead of a prompt.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from genrec.config.models.unified import UnifiedConfig
from genrec.data.batching import HistoryBatch
from genrec.data.split import Split
from genrec.errors import ConfigError, DataError
from genrec.models.base import Resources, register
from genrec.models.next_item import NextItemModel, NextItemOutputs, distinct_prefix_items, make_item_tables
from genrec.models.sasrec import SASRecTower


@register
class Unified(NextItemModel):
    config_class = UnifiedConfig
    capabilities = NextItemModel.capabilities | {"search"}

    def __init__(self, cfg: UnifiedConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        if cfg.l2_normalize:
            raise ConfigError(
                "unified: l2_normalize is not supported (the text-match term is added to logits)"
            )
        make_item_tables(self, n_items, cfg.dim)
        self.tower = SASRecTower(cfg).composed_into(self)
        self.task_emb = nn.Embedding(2, cfg.dim)  # 0 = recommendation, 1 = search
        nn.init.zeros_(self.task_emb.weight)
        self.query_proj = nn.Linear(cfg.text_dim, cfg.dim)
        self.match_scale = nn.Parameter(torch.tensor(10.0 if cfg.query_match else 0.0))
        self.match_scale.requires_grad_(cfg.query_match)
        # Text embeddings of each item's template query and of its text (row 0 = padding), set by `prepare`.
        self.register_buffer("query_emb", torch.zeros(n_items + 1, cfg.text_dim))
        self.register_buffer("text_emb", torch.zeros(n_items + 1, cfg.text_dim))
        # [text_dim, k] basis of the match term and the items' text vectors in it ([n_items + 1, k]).
        k = cfg.match_dim or cfg.text_dim
        self.register_buffer("match_basis", torch.eye(cfg.text_dim)[:, :k].clone())
        self.register_buffer("match_items", torch.zeros(n_items + 1, k))

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        return self.tower(self.input_vectors(items), items)

    def set_text(self, query_emb: np.ndarray, text_emb: np.ndarray) -> None:
        """Item queries' and item texts' embeddings, [n_items, text_dim] each in internal order."""
        for name, emb in (("query", query_emb), ("item text", text_emb)):
            if emb.shape != (self.n_items, self.cfg.text_dim):
                raise DataError(
                    f"{name} embeddings of shape {emb.shape}, expected ({self.n_items}, {self.cfg.text_dim})"
                )
        self.query_emb[1:] = torch.from_numpy(query_emb)
        self.text_emb[1:] = torch.from_numpy(text_emb)
        if self.cfg.match_dim and self.cfg.match_dim < self.cfg.text_dim:
            # Uncentred SVD: the rank-k basis that best keeps the dot products with the item text vectors.
            _, _, vh = torch.linalg.svd(self.text_emb[1:], full_matrices=False)
            top = vh[: self.cfg.match_dim].t()  # fewer columns when there are fewer items than match_dim
            self.match_basis.zero_()
            self.match_basis[:, : top.shape[1]] = top
        self.match_items.copy_(self.text_emb @ self.match_basis)

    def prepare(self, split: Split, resources: Resources) -> dict:
        from genrec.items.queries import template_queries
        from genrec.items.text import encode_texts, item_texts

        items = resources.item_table(self.cfg.name)
        queries = template_queries(items)
        if not any(queries):
            raise DataError("unified needs item text (titles / categories) to make search queries")
        self.set_text(
            encode_texts(queries, self.cfg.encoder), encode_texts(item_texts(items), self.cfg.encoder)
        )
        return {"search_queries": "template: category + parent category + 2 title words"}

    def encode_queries(self, queries: list[str]) -> torch.Tensor:
        """[len(queries), text_dim] text embeddings of query strings, with the model's encoder."""
        from genrec.items.text import encode_texts

        return torch.from_numpy(encode_texts(queries, self.cfg.encoder))

    def _search_state(self, hidden: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return self._project(hidden + self.task_emb.weight[1] + self.query_proj(query))

    def user_embedding(self, batch: HistoryBatch) -> torch.Tensor:
        hidden = self.encode(batch.items, None)[:, -1]
        return self._project(hidden + self.task_emb.weight[0])

    def search_scores(self, batch: HistoryBatch, query_emb: torch.Tensor) -> torch.Tensor:
        """[B, n_items + 1] search scores of a batch of histories and their queries' text embeddings
        ([B, text_dim]); an empty history (all padding) leaves the query alone to decide."""
        hidden = self.encode(batch.items, None)[:, -1]
        scores = self._search_state(hidden, query_emb) @ self.output_weight().t()
        return scores + self.match_scale * ((query_emb @ self.match_basis) @ self.match_items.t())

    def next_item_outputs(self, batch) -> NextItemOutputs:
        """Both tasks from one encoder pass: N recommendation rows, then the search rows (the same positions,
        or a `search_weight` share of them), scored against [item table | a * item text] so that one full
        softmax covers the search score's two terms."""
        items, _ = batch
        inputs, targets = items[:, :-1], items[:, 1:]
        hidden_all = self.encode(inputs, None)
        mask = inputs > 0
        hidden, target = hidden_all[mask], targets[mask]
        rows = torch.arange(len(target), device=target.device)
        if self.cfg.search_weight < 1:
            keep = torch.rand(len(target), device=target.device) < self.cfg.search_weight
            rows = rows[keep]
        query = self.query_emb[target[rows]]
        match = query @ self.match_basis
        rec = self._project(hidden + self.task_emb.weight[0])
        search = self._search_state(hidden[rows], query)
        zeros = rec.new_zeros(len(rec), match.shape[1])
        stacked = torch.cat([torch.cat([rec, zeros], 1), torch.cat([search, match], 1)])
        weight = torch.cat([self.output_weight(), self.match_scale * self.match_items], 1)
        out = NextItemOutputs(stacked, torch.cat([target, target[rows]]), weight, hidden_all[:, -1])
        if self.cfg.history_bias:
            seen = distinct_prefix_items(inputs)[mask]
            out.seen, out.seen_offset = torch.cat([seen, seen[rows]]), self.seen_offset()
        return out
