"""TIGER-style generative retrieval (Rajput et al. 2023): an encoder-decoder transformer reads the user's history
as semantic-ID tokens and generates the next item's code tuple, one code per level.

- Item codes come from a semantic-ID tokenizer (`model.tokenizer`: RQ-KMeans or RQ-VAE over item text and/or
  collaborative embeddings, plus one code that separates colliding items), set up as for every semantic-ID model
  (`genrec.models.item_codes`): built in `prepare` from the run's item table, written into the run directory by
  the runs layer (`semantic_ids.*`, `semantic_ids_report.json`) and kept as a buffer in the weights, so a loaded
  run decodes exactly the same catalogue.
- Tokens: one shared table; level l's code c is token 1 + offset_l + c (0 = padding); the decoder starts from a
  BOS token (the table's last). `history_tokens: items` gives the encoder one token per history item instead of
  one per code, the sum of its code embeddings.
- Backbone (`backbone`, chosen once in the constructor): an encoder-decoder behind
  `genrec.nn.encoder_decoder.EncoderDecoder`: genrec's own pre-norm blocks (`native`,
  `genrec.nn.native_encoder_decoder`) or transformers' T5 built from a small `T5Config` in code (`t5`,
  `genrec.nn.t5_encoder_decoder`; as RQ-VAE-Recommender found, a T5 decoder is what brought its TIGER up to the
  paper's recall). Semantic IDs, tokens, the trie and the beam search are the same for both.
- Decoding: beam search constrained by the prefix trie of all item codes (`decoding/beam.py`), so every output
  is a real item; the beams, best first, are the top-K list the evaluator scores. History items can be excluded
  at the last code level. Each level is one cached decoder step of the backbone, whose cache is reordered to
  the kept beams.
- `log_likelihood(batch, items)`: log p(item | history) = the sum of the item's code log-probabilities under
  teacher forcing (each level's softmax over that level's codes), for preference objectives (DPO, S-DPO).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from genrec.config.models.tiger import TigerConfig
from genrec.data.batching import HistoryBatch, length_bucketed_batches
from genrec.data.split import Split
from genrec.decoding.beam import CodeTrie, constrained_beam_search
from genrec.decoding.cold_places import cold_count, keep_cold_places
from genrec.errors import DataError
from genrec.items.semantic_ids import prepared_outputs
from genrec.models.base import Resources, register
from genrec.models.item_codes import SemanticIdRecommender
from genrec.models.next_item import resolve_dtype
from genrec.nn.native_encoder_decoder import NativeEncoderDecoder
from genrec.nn.t5_encoder_decoder import T5EncoderDecoder
from genrec.runtime import autocast

BACKBONES = {"native": NativeEncoderDecoder, "t5": T5EncoderDecoder}  # by `model.backbone`


@register
class Tiger(SemanticIdRecommender):
    config_class = TigerConfig

    def __init__(self, cfg: TigerConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users, first_token=1)
        # Items that occurred in the training sequences (set by fit; runs saved before it existed: all of them).
        self.register_buffer("trained_items", torch.ones(n_items + 1, dtype=torch.bool))
        self.register_load_state_dict_pre_hook(_default_trained_items)
        self.bos = 1 + sum(self.sizes)
        backbone = BACKBONES[cfg.backbone](cfg, self.bos + 1, self.depth, self.decoder_length())
        # The backbone's modules are registered on the model itself, so that the weights keep the names of the
        # runs saved before the backbone was a separate object (`tok_emb.weight`, `t5.shared.weight`, ...); the
        # backbone object is kept outside the module tree, so that every weight has exactly one name.
        for name, module in backbone.named_children():
            self.add_module(name, module)
        self.__dict__["backbone"] = backbone
        self._tries = None  # (all items, trained items, untrained items) CodeTries, built on first use

    # --- semantic IDs --------------------------------------------------------------------------------------------

    def codes_changed(self) -> None:
        self._tries = None

    def set_trained_items(self, items: np.ndarray) -> None:
        """Mark the items that occur in the training sequences; the others are cold (see `cold_share`)."""
        self.trained_items.zero_()
        self.trained_items[torch.from_numpy(np.unique(items))] = True
        self.trained_items[0] = False
        self._tries = None

    def tries(self) -> tuple[CodeTrie, CodeTrie | None, CodeTrie | None]:
        """Tries of all items, of the trained items and of the untrained ones (the last two None unless a cold
        share is set and both groups have items). Built on the host, deliberately, from one copy of the codes
        (the trie's construction is NumPy work); the beam search moves them to the model's device once."""
        if self._tries is None:
            codes = self.item_codes.cpu().numpy()
            trained = self.trained_items.cpu().numpy()
            cold = np.flatnonzero(~trained[1:]) + 1
            warm = np.flatnonzero(trained[1:]) + 1
            split = self.cfg.cold_share > 0 and len(cold) > 0 and len(warm) > 0
            self._tries = (
                CodeTrie(codes[1:], self.sizes),
                CodeTrie(codes[warm], self.sizes, warm) if split else None,
                CodeTrie(codes[cold], self.sizes, cold) if split else None,
            )
        return self._tries

    def trie(self) -> CodeTrie:
        return self.tries()[0]

    def prepare(self, split: Split, resources: Resources) -> dict:
        """Build (or load, `tokenizer.codes`) the items' semantic IDs from the run's item table
        (`SemanticIdRecommender.build_semantic_ids`) and mark the items the training split holds."""
        sid = self.build_semantic_ids(split, resources)
        self.set_trained_items(split.train.items)
        return prepared_outputs(sid)

    # --- network -------------------------------------------------------------------------------------------------

    def decoder_length(self) -> int:
        """Most decoder positions one target needs (BOS + all codes but the last)."""
        return self.depth

    def encode(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """History [B, L] (right-aligned) -> memory [B, S, d] and its key mask ([B, 1, 1, S] bool; t5: [B, S]
        0/1); S = L * depth, or L with one token per item."""
        items = items[:, -self.cfg.max_len :]
        real = items > 0
        return self.backbone.encode(
            torch.where(real[..., None], self.tokens(self.item_codes[items]), 0), real
        )

    def decode(self, prefix: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        """prefix [B, W, t] codes -> hidden states [B, W, t + 1, d] of BOS + prefix; the last predicts the next
        code (t may be 0). Code j of the prefix is read as level j % depth (several items in a row)."""
        b, w, t = prefix.shape
        bos = torch.full((b, w, 1), self.bos, device=prefix.device)
        tok = torch.cat([bos, self.tokens_prefix(prefix)], 2).reshape(b * w, t + 1)
        return self.backbone.decode(tok, memory, memory_mask).reshape(b, w, t + 1, -1)

    def tokens_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        return prefix + self.offsets[torch.arange(prefix.shape[-1], device=prefix.device) % self.depth]

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """Scores of level `level`'s codes: dot products with their (tied) token embeddings."""
        start = self.level_start(level)
        return hidden @ self.backbone.token_table()[start : start + self.sizes[level]].t()

    # --- training ------------------------------------------------------------------------------------------------

    def training_batches(self, split: Split, rng: np.random.Generator, batch_size: int) -> Iterator:
        """Every (history prefix -> next item) pair of the training sequences (every `cut_stride`-th), once per
        epoch."""
        train = split.train
        rows, cut = cut_points(train.lengths(), self.cfg.cut_stride, rng)
        first = train.offsets[rows]
        end = first + cut  # target position; the history is [first, end)
        hist_len = np.minimum(end - first, self.cfg.max_len)
        for part in length_bucketed_batches(hist_len, batch_size, rng):
            width = int(hist_len[part].max())
            idx = end[part, None] - width + np.arange(width)[None]
            items = np.where(idx >= first[part, None], train.items[np.clip(idx, 0, None)], 0)
            yield torch.from_numpy(items).long(), torch.from_numpy(train.items[end[part]]).long()

    def autocast(self):
        """Autocast to `precision` on the device the model is on (none on meta, which has no autocast)."""
        return autocast(self.offsets.device.type, resolve_dtype(self.cfg.precision))

    def code_logits(self, batch) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Teacher-forced decoding of a training batch (histories [B, L], targets [B]): per code level the
        float logits [B, V_level], and the targets' codes [B, depth]."""
        history, target = batch
        codes = self.item_codes[target]  # [B, depth]
        with self.autocast():
            memory, mask = self.encode(history)
            hidden = self.decode(codes[:, None, :-1], memory, mask)[:, 0]  # [B, depth, d]
            logits = [self.level_logits(hidden[:, level], level).float() for level in range(self.depth)]
        return logits, codes

    def log_likelihood(self, batch: HistoryBatch, items: torch.Tensor) -> torch.Tensor:
        """log p(item | history) [B, n] for `items` [B, n] (internal ids 1..n_items): the sum over code levels of
        the item's code log-probability, teacher-forced (each level's softmax runs over that level's codes, so
        exp(log_likelihood) summed over all items is at most 1). Differentiable. Raises DataError for an id
        outside the catalogue."""
        # Checked on the host only: on an accelerator the check would wait for the device at every step.
        if items.device.type == "cpu" and items.numel() and (items.min() < 1 or items.max() > self.n_items):
            raise DataError(f"log_likelihood: item ids must be in 1..{self.n_items}")
        codes = self.item_codes[items]  # [B, n, depth]
        with self.autocast():
            memory, mask = self.encode(batch.items)
            hidden = self.decode(codes[:, :, :-1], memory, mask)  # [B, n, depth, d]
            logits = [self.level_logits(hidden[:, :, lv], lv).float() for lv in range(self.depth)]
        return sum(
            torch.log_softmax(lg, -1).gather(-1, codes[..., lv, None])[..., 0] for lv, lg in enumerate(logits)
        )

    # --- inference -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def recommend(self, batch: HistoryBatch, k: int, exclude: torch.Tensor | None = None):
        with self.autocast():
            memory, mask = self.encode(batch.items)
            memory = self.decoder_memory(memory)
        everything, warm, cold = self.tries()
        n_cold = min(cold_count(self.cfg.cold_share, k), len(cold.leaf_item)) if cold is not None else 0
        if not n_cold:
            return self._beam_search(
                everything, memory, mask, len(batch.items), min(k, self.n_items), exclude
            )
        # The model gives codes it never saw as targets too little probability for a plain top-K: TIGER's
        # cold-start retrieval keeps places for the best cold items (`decoding/cold_places.py`).
        k, b = min(k, self.n_items), len(batch.items)
        items, scores = self._beam_search(warm, memory, mask, b, k - n_cold, exclude)
        c_items, c_scores = self._beam_search(cold, memory, mask, b, n_cold, exclude)
        # A group short of its places (the history excludes its items) gives them to the other, which then
        # needs a longer list; searched again only then, so full lists stay exactly as they were.
        if (c_scores == float("-inf")).any():
            items, scores = self._beam_search(warm, memory, mask, b, min(k, len(warm.leaf_item)), exclude)
        if (scores == float("-inf")).any():
            c_items, c_scores = self._beam_search(cold, memory, mask, b, min(k, len(cold.leaf_item)), exclude)
        return keep_cold_places(items, scores, c_items, c_scores, self.cfg.cold_share, k)

    def decoder_memory(self, memory: torch.Tensor):
        """What every decoding step reads of the encoder output, computed once per request (native: the
        cross-attention keys/values of each decoder block; t5: the memory itself)."""
        return self.backbone.decoder_memory(memory)

    def decoding_steps(self, memory, mask):
        """(step, reorder) for `decoding/beam.py` over `decoder_memory(memory)`: `step(prefix [B, W, t], t)` runs
        the decoder on the one new position t (BOS, or the prefix's last code, read as level (t - 1) % depth)
        and returns the log-softmax of level t % depth's codes [B, W, V]; `reorder(origin [B, W])` says which
        earlier beam each kept beam continues. The backbone's cache holds the earlier positions, one row per
        beam."""
        cache = self.backbone.start(memory, mask)
        rows = len(mask)

        def step(prefix: torch.Tensor, t: int) -> torch.Tensor:
            nonlocal rows
            b, w, _ = prefix.shape
            with self.autocast():
                hidden = self.backbone.step(self._last_tokens(prefix), t, cache).reshape(b, w, -1)
                logits = self.level_logits(hidden, t % self.depth)
            rows = b * w
            return torch.log_softmax(logits.float(), -1)

        def reorder(origin: torch.Tensor) -> None:
            cache.reorder(_beam_rows(origin, rows))

        return step, reorder

    def _last_tokens(self, prefix: torch.Tensor) -> torch.Tensor:
        """[B, W, t] codes -> [B * W, 1] decoder input: BOS at t = 0, else the last code's token."""
        b, w, t = prefix.shape
        if t == 0:
            return torch.full((b * w, 1), self.bos, device=prefix.device)
        return (prefix[:, :, -1] + self.offsets[(t - 1) % self.depth]).reshape(b * w, 1)

    def _beam_search(self, trie: CodeTrie, memory, mask, batch: int, k: int, exclude):
        step, reorder = self.decoding_steps(memory, mask)
        items, scores, _ = constrained_beam_search(
            step, trie, batch, max(self.cfg.beam, k), k, exclude, reorder, device=self.offsets.device
        )
        return items, scores

    def checkpoint_selection(self) -> str:
        return (
            "weights of the epoch with the best validation score (history-excluded), evaluated once on test; "
            f"top-K from constrained beam search (beam {self.cfg.beam})"
            + (
                f"; a share of {self.cfg.cold_share:g} of each list's places kept for items never seen in training"
                if self.cfg.cold_share
                else ""
            )
        )


def cut_points(lengths: np.ndarray, stride: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training examples of sequences of `lengths`: (sequence row, cut) pairs, cut = 1 .. length - 1 items of
    history; with `stride` s > 1 only every s-th cut of each sequence, at a random phase per sequence (long
    sequences give many near-identical examples, so a stride buys epochs on a small budget)."""
    counts = np.maximum(lengths - 1, 0)
    rows = np.repeat(np.arange(len(counts)), counts)
    cut = 1 + np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    if stride > 1:
        phase = rng.integers(0, stride, size=len(counts))[rows]
        keep = (cut - 1 - phase) % stride == 0
        rows, cut = rows[keep], cut[keep]
    return rows, cut


def _beam_rows(origin: torch.Tensor, rows_before: int) -> torch.Tensor:
    """Beams kept after a step: row j of user u continues beam origin[u, j] of the previous step, whose rows
    were `rows_before` in all -> flat row indices into the previous step's rows."""
    b = len(origin)
    return (origin + torch.arange(b, device=origin.device)[:, None] * (rows_before // b)).reshape(-1)


def _default_trained_items(module, state_dict, prefix, *args) -> None:
    """Weights saved before `trained_items` existed: every item counts as trained."""
    key = prefix + "trained_items"
    if key not in state_dict and prefix + "item_codes" in state_dict:
        state_dict[key] = torch.ones(len(state_dict[prefix + "item_codes"]), dtype=torch.bool)
