"""Text-embedding retrieval (MoRec-style, Yuan et al. 2023): items are represented from their text, users by a
sequence model over those item vectors, and the score is a dot product, so a new item with a title is
retrievable the moment it is added.

- Item tower: the item's text embedding (all-MiniLM-L6-v2 by default, `encoder` for any other model directory),
  frozen, through a two-layer MLP to `dim`; with `use_id: true` a learned ID embedding is added. The ID table
  starts at zero, so an item never seen in training is represented by its text alone.
- User tower: the SASRec encoder (causal transformer, learned positions) over the item-tower vectors.
- Retrieval: `exact` scores the whole catalogue (one matmul); `faiss` searches an HNSW inner-product index of the
  item vectors (approximate; the index is built on first use and rebuilt after training).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.config.models.textrec import TextRecConfig
from genrec.data.batching import HistoryBatch
from genrec.data.split import Split
from genrec.decoding.ann import HNSWIndex
from genrec.errors import DataError
from genrec.models.base import Resources, register
from genrec.models.next_item import NextItemModel
from genrec.models.sasrec import SASRecTower


@register
class TextRec(NextItemModel):
    config_class = TextRecConfig

    def __init__(self, cfg: TextRecConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        if cfg.retrieval != "exact":  # with FAISS the model generates its list; the evaluator follows that
            self.capabilities = (type(self).capabilities - {"score"}) | {"generate"}
        self.register_buffer("text_emb", torch.zeros(n_items + 1, cfg.text_dim))
        self.item_tower = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim)
        )
        self.id_emb = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0) if cfg.use_id else None
        if self.id_emb is not None:
            nn.init.zeros_(self.id_emb.weight)
        self.tower = SASRecTower(cfg).composed_into(self)  # the user tower, over the item-tower vectors
        self._index = None

    def set_text_embeddings(self, emb: np.ndarray) -> None:
        if emb.shape != (self.n_items, self.cfg.text_dim):
            raise DataError(
                f"text embeddings of shape {emb.shape}, expected ({self.n_items}, {self.cfg.text_dim})"
            )
        self.text_emb[1:] = torch.from_numpy(emb)

    def prepare(self, split: Split, resources: Resources) -> dict:
        items = resources.item_table(self.cfg.name)
        emb, notes = self.encode_items(items)
        self.set_text_embeddings(emb)
        self._index = None
        return notes

    def encode_items(self, items) -> tuple[np.ndarray, dict]:
        """[n_items, text_dim] text vectors of the run's items (polars table in internal order) and notes for the
        run's meta; subclasses change the encoder here. Raises DataError when the items have no text."""
        from genrec.items.text import item_text_embeddings

        emb = item_text_embeddings(items, self.cfg.encoder, self.cfg.profiles)
        if not np.abs(emb).sum(1).any():
            raise DataError("textrec needs item text (titles / categories); this dataset has none")
        return emb, {}

    def item_table(self) -> torch.Tensor:
        """[n_items + 1, dim] item vectors; row 0 (padding) is zero."""
        table = self.item_tower(self.text_emb)
        if self.id_emb is not None:
            table = table + self.id_emb.weight
        return table * (torch.arange(self.n_items + 1, device=table.device) > 0)[:, None]

    def input_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return F.embedding(items, self.item_table())

    def output_weight(self) -> torch.Tensor:
        w = self.item_table()
        return F.normalize(w, dim=-1) if self.cfg.l2_normalize else w

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        return self.tower(self.input_vectors(items), items)

    def train(self, mode: bool = True):
        if mode:
            self._index = None  # weights are about to change
        return super().train(mode)

    @torch.no_grad()
    def recommend(self, batch: HistoryBatch, k: int, exclude: torch.Tensor | None = None):
        if self.cfg.retrieval == "exact":
            return super().recommend(batch, k, exclude)
        if self._index is None:
            self._index = HNSWIndex(
                self.output_weight(), self.cfg.hnsw_m, 2 * self.cfg.hnsw_m, self.cfg.hnsw_ef_search
            )
        return self._index.search(self.user_embedding(batch), k, exclude)
