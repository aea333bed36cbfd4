"""The semantic-ID set-up shared by the models that name every item by a tuple of codes (TIGER, onerec,
sid_llm): the code sizes, each level's first token id, the items' codes as a buffer of the weights, and their
construction from the run's item table in `prepare`.

- Codes: `tokenizer.levels` levels of `tokenizer.codebook_size` codes from the semantic-ID tokenizer
  (`genrec.items.semantic_ids`: RQ-KMeans or RQ-VAE over item text and/or collaborative embeddings), plus one
  code of `max_separation` values that separates items whose codes collide.
- Tokens: level l's code c is token offsets[l] + c; the levels' token ranges follow each other from the model's
  `first_token` (1 when token 0 pads, a language model's vocabulary size when the codes are new tokens).
- `item_codes` [n_items + 1, depth] (row 0 = padding) is kept in the weights, so a loaded run decodes exactly
  the catalogue it was trained on.
"""

from __future__ import annotations

import numpy as np
import torch

from genrec.config.base import ModelConfig
from genrec.data.split import Split
from genrec.errors import ConfigError, DataError
from genrec.items.semantic_ids import SemanticIds, run_semantic_ids
from genrec.models.base import Recommender, Resources


class SemanticIdRecommender(Recommender):
    """A trained generator of semantic IDs: it decodes the list itself and gives log-likelihoods. `cfg` has
    `tokenizer` (a `TokenizerConfig`) and `max_separation`; buffers `offsets` [depth] and `item_codes`
    [n_items + 1, depth]."""

    capabilities = frozenset({"generate", "log_likelihood"})
    trainable = True

    def __init__(self, cfg: ModelConfig, n_items: int, n_users: int, first_token: int) -> None:
        super().__init__(cfg, n_items, n_users)
        tk = cfg.tokenizer
        self.sizes = [tk.codebook_size] * tk.levels + [cfg.max_separation]
        self.depth = len(self.sizes)
        first = np.r_[0, np.cumsum(self.sizes)[:-1]] + first_token
        self.first_token = first_token
        self.register_buffer("offsets", torch.tensor(first, dtype=torch.long))
        self.register_buffer("item_codes", torch.zeros(n_items + 1, self.depth, dtype=torch.long))

    def set_semantic_ids(self, sid: SemanticIds) -> None:
        """Take the codes of `sid` (item i's codes at row i - 1). Raises DataError when it covers another number
        of items, ConfigError when more items share one code tuple than `max_separation` separates."""
        if sid.n_items != self.n_items:
            raise DataError(f"semantic IDs cover {sid.n_items} items, the catalogue has {self.n_items}")
        if sid.depth != self.depth:  # the decoder's last level is the separation code
            raise ConfigError(f"{self.cfg.name} needs model.tokenizer.collisions=separate")
        if sid.sizes[-1] > self.cfg.max_separation:
            raise ConfigError(
                f"{sid.sizes[-1]} items share one code; raise model.max_separation (now {self.cfg.max_separation})"
            )
        self.item_codes[1:] = torch.from_numpy(sid.codes)
        self.codes_changed()

    def codes_changed(self) -> None:
        """Drop what was derived from the codes (tries, token lists): called after they change."""

    def build_semantic_ids(self, split: Split, resources: Resources) -> SemanticIds:
        """Build (or load, `tokenizer.codes`) the items' semantic IDs from the run's item table and take them;
        `resources.collab_embeddings` feeds a tokenizer that mixes in collaborative signal. Raises ConfigError
        when the run has no item table."""
        items = resources.item_table(self.cfg.name)
        sid = run_semantic_ids(
            self.cfg.tokenizer, items, split.sequences.item_ids, resources.collab_embeddings, split.train
        )
        self.set_semantic_ids(sid)
        return sid

    def tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """[..., depth] codes -> token ids."""
        return codes + self.offsets

    def level_start(self, level: int) -> int:
        """The token id of level `level`'s code 0 (= offsets[level], read without a copy from the device)."""
        return self.first_token + sum(self.sizes[:level])
