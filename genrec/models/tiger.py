"""TIGER-style generative retrieval (Rajput et al. 2023): an encoder-decoder transformer reads the user's history
as semantic-ID tokens and generates the next item's code tuple, one code per level.

- Item codes come from a semantic-ID tokenizer (`model.tokenizer`: RQ-KMeans or RQ-VAE over item text and/or
  collaborative embeddings, plus one code that separates colliding items). They are built in `prepare` from the
  run's item table, written into the run directory by the runs layer (`semantic_ids.*`,
  `semantic_ids_report.json`) and kept as a buffer in the weights, so a loaded run decodes exactly the same catalogue.
- Tokens: one shared table; level l's code c is token 1 + offset_l + c (0 = padding). Encoder positions are the
  item's position counted back from the newest plus the code level; the decoder starts from a BOS token.
  `history_tokens: items` gives the encoder one token per history item instead, the sum of its code embeddings.
- Decoding: beam search constrained by the prefix trie of all item codes (`decoding/beam.py`), so every output
  is a real item; the beams, best first, are the top-K list the evaluator scores. History items can be excluded
  at the last code level.
- Cross-attention lets all beams of one user share that user's encoder output: the beams' decoder positions are
  laid out along the query axis instead of copying the memory once per beam.
- `backbone: t5` swaps genrec's own blocks for `transformers.T5ForConditionalGeneration` built from a small
  `T5Config` in code (relative position buckets, RMS norm, tied and rescaled output embeddings; nothing is
  downloaded). Semantic IDs, tokens, the trie and the beam search stay the same; the decoder's KV cache is
  transformers' `EncoderDecoderCache`, reordered after each level. As RQ-VAE-Recommender found, a T5 decoder is
  what brought its TIGER up to the paper's recall.
- `log_likelihood(batch, items)`: log p(item | history) = the sum of the item's code log-probabilities under
  teacher forcing (each level's softmax over that level's codes), for preference objectives (DPO, S-DPO).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from genrec.config import ModelConfig
from genrec.data.batching import HistoryBatch, length_bucketed_batches
from genrec.data.split import Split
from genrec.decoding.beam import CodeTrie, constrained_beam_search
from genrec.decoding.cold_places import cold_count, keep_cold_places
from genrec.errors import ConfigError, DataError
from genrec.items.semantic_ids import SemanticIds, TokenizerConfig, prepared_outputs, run_semantic_ids
from genrec.models.base import Recommender, register
from genrec.models.next_item import resolve_dtype
from genrec.nn.transformer import FeedForward


class TigerConfig(ModelConfig):
    name: Literal["tiger"] = "tiger"
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    max_separation: int = Field(64, ge=1, description="values of the collision-separating code (vocabulary)")
    dim: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    encoder_layers: int = Field(2, ge=1)
    decoder_layers: int = Field(2, ge=1)
    ffn_mult: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    backbone: Literal["native", "t5"] = Field(
        "native",
        description="encoder-decoder: genrec's own pre-norm blocks (native) or transformers' "
        "T5ForConditionalGeneration from a T5Config of these sizes (t5: relative positions, ReLU feed-forward)",
    )
    max_len: int = Field(20, ge=1, description="most recent history items the encoder reads")
    history_tokens: Literal["codes", "items"] = Field(
        "codes",
        description="encoder input: one token per code (TIGER) or one per item, the sum of its code embeddings",
    )
    cut_stride: int = Field(
        1, ge=1, description="train on every s-th cut point of each sequence (a random phase each epoch)"
    )
    beam: int = Field(20, ge=1, description="beam width (at least the K asked for)")
    cold_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="TIGER's cold-start share (epsilon): floor(cold_share * K) places of each top-K list go to "
        "items that never occurred in training (the j-th cold item at position ceil(j / cold_share)), found by a "
        "second constrained beam search over their codes only; inert when every item was trained on",
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="autocast matmuls; auto = bfloat16 where the CPU has AMX/AVX512-BF16"
    )


class Attention(nn.Module):
    """Multi-head attention without dropout on the weights: attention dropout forces PyTorch's slow math path
    on CPU (and its random masks cost a fifth of a training step); dropout stays on the residual branches."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, s, d = context.shape
        return tuple(self.kv(context).view(b, s, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4))

    def forward(self, x: torch.Tensor, context, mask: torch.Tensor | None) -> torch.Tensor:
        """`context`: [B, S, d], or its (keys, values) from `keys_values` when they are reused."""
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = context if isinstance(context, tuple) else self.keys_values(context)
        # Written out: for these short sequences PyTorch's CPU flash kernel (backward above all) costs several
        # times more than two matmuls and a softmax.
        att = (q @ k.transpose(-1, -2)) * (d // h) ** -0.5
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))
        y = torch.softmax(att.float(), -1).to(v.dtype) @ v
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention to the encoder output, feed-forward."""

    def __init__(self, cfg: TigerConfig, cross: bool) -> None:
        super().__init__()
        d = cfg.dim
        self.norm1, self.self_attn = nn.LayerNorm(d), Attention(d, cfg.heads)
        self.cross = cross
        if cross:
            self.norm2, self.cross_attn = nn.LayerNorm(d), Attention(d, cfg.heads)
        self.norm3, self.ffn = nn.LayerNorm(d), FeedForward(d, d * cfg.ffn_mult, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, self_mask, memory=None, memory_mask=None, beams: int = 1):
        y = self.norm1(x)
        x = x + self.drop(self.self_attn(y, y, self_mask))
        return self._cross_and_ffn(x, memory, memory_mask, beams)

    def step(self, x, past, memory, memory_mask, beams: int):
        """One new decoder position per row, `x` [B * W, 1, d], attending to itself and the cached keys/values
        `past` of the earlier positions (None at the first) -> (output, keys/values including this position)."""
        y = self.norm1(x)
        k, v = self.self_attn.keys_values(y)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        x = x + self.drop(self.self_attn(y, (k, v), None))
        return self._cross_and_ffn(x, memory, memory_mask, beams), (k, v)

    def _cross_and_ffn(self, x, memory, memory_mask, beams: int):
        if self.cross:
            n, t, d = x.shape
            # [B * W, t, d] -> [B, W * t, d]: every beam of a user attends to that user's memory, uncopied.
            q = self.norm2(x).reshape(n // beams, beams * t, d)
            x = x + self.drop(self.cross_attn(q, memory, memory_mask).reshape(n, t, d))
        return x + self.drop(self.ffn(self.norm3(x)))


@register
class Tiger(Recommender):
    config_class = TigerConfig
    capabilities = frozenset({"generate", "log_likelihood"})
    trainable = True

    def __init__(self, cfg: TigerConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        tk = cfg.tokenizer
        self.sizes = [tk.codebook_size] * tk.levels + [cfg.max_separation]
        self.depth = len(self.sizes)
        self.register_buffer(
            "offsets", torch.tensor(np.r_[0, np.cumsum(self.sizes)[:-1]] + 1, dtype=torch.long)
        )
        self.register_buffer("item_codes", torch.zeros(n_items + 1, self.depth, dtype=torch.long))
        # Items that occurred in the training sequences (set by fit; runs saved before it existed: all of them).
        self.register_buffer("trained_items", torch.ones(n_items + 1, dtype=torch.bool))
        self.register_load_state_dict_pre_hook(_default_trained_items)
        self.bos = 1 + sum(self.sizes)
        if cfg.backbone == "t5":
            from transformers import T5ForConditionalGeneration  # imported only when used: it is slow to load

            self.t5 = T5ForConditionalGeneration(t5_config(cfg, self.bos + 1))
        else:
            self.tok_emb = nn.Embedding(self.bos + 1, cfg.dim, padding_idx=0)
            self.item_pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
            self.level_emb = nn.Embedding(self.depth, cfg.dim)
            self.dec_pos_emb = nn.Embedding(self.decoder_length(), cfg.dim)
            self.encoder = nn.ModuleList(Block(cfg, cross=False) for _ in range(cfg.encoder_layers))
            self.decoder = nn.ModuleList(Block(cfg, cross=True) for _ in range(cfg.decoder_layers))
            self.enc_norm, self.dec_norm = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
            self.drop = nn.Dropout(cfg.dropout)
            nn.init.normal_(self.tok_emb.weight, std=cfg.dim**-0.5)
        self._tries = None  # (all items, trained items, untrained items) CodeTries, built on first use

    # --- semantic IDs --------------------------------------------------------------------------------------------

    def set_semantic_ids(self, sid: SemanticIds) -> None:
        if sid.n_items != self.n_items:
            raise DataError(f"semantic IDs cover {sid.n_items} items, the catalogue has {self.n_items}")
        if sid.depth != self.depth:  # the decoder's last level is the separation code
            raise ConfigError("tiger needs model.tokenizer.collisions=separate")
        if sid.sizes[-1] > self.cfg.max_separation:
            raise ConfigError(
                f"{sid.sizes[-1]} items share one code; raise model.max_separation (now {self.cfg.max_separation})"
            )
        self.item_codes[1:] = torch.from_numpy(sid.codes)
        self._tries = None

    def set_trained_items(self, items: np.ndarray) -> None:
        """Mark the items that occur in the training sequences; the others are cold (see `cold_share`)."""
        self.trained_items.zero_()
        self.trained_items[torch.from_numpy(np.unique(items))] = True
        self.trained_items[0] = False
        self._tries = None

    def tries(self) -> tuple[CodeTrie, CodeTrie | None, CodeTrie | None]:
        """Tries of all items, of the trained items and of the untrained ones (the last two None unless a cold
        share is set and both groups have items)."""
        if self._tries is None:
            codes = self.item_codes.numpy()
            cold = np.flatnonzero(~self.trained_items.numpy()[1:]) + 1
            warm = np.flatnonzero(self.trained_items.numpy()[1:]) + 1
            split = self.cfg.cold_share > 0 and len(cold) > 0 and len(warm) > 0
            self._tries = (
                CodeTrie(codes[1:], self.sizes),
                CodeTrie(codes[warm], self.sizes, warm) if split else None,
                CodeTrie(codes[cold], self.sizes, cold) if split else None,
            )
        return self._tries

    def trie(self) -> CodeTrie:
        return self.tries()[0]

    def prepare(self, split: Split, resources: dict) -> dict:
        """Build (or load, `tokenizer.codes`) the items' semantic IDs from the run's item table; `resources`
        may hold `collab_embeddings(run_dir, raw_item_ids)` for collaborative tokenizer input."""
        items = resources.get("items")
        if items is None:
            raise ConfigError("tiger needs the run's item table to build semantic IDs")
        sid = run_semantic_ids(
            self.cfg.tokenizer, items, split.sequences.item_ids, resources.get("collab_embeddings")
        )
        self.set_semantic_ids(sid)
        self.set_trained_items(split.train.items)
        return prepared_outputs(sid)

    def objective_name(self) -> str:
        return "code_cross_entropy"

    # --- network -------------------------------------------------------------------------------------------------

    def tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """[..., depth] codes -> token ids."""
        return codes + self.offsets

    def decoder_length(self) -> int:
        """Most decoder positions one target needs (BOS + all codes but the last)."""
        return self.depth

    def encode(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """History [B, L] (right-aligned) -> memory [B, S, d] and its key mask ([B, 1, 1, S] bool; t5: [B, S]
        0/1); S = L * depth, or L with one token per item."""
        items = items[:, -self.cfg.max_len :]
        b, length = items.shape
        real = items > 0
        tok = torch.where(real[..., None], self.tokens(self.item_codes[items]), 0)
        if self.cfg.backbone == "t5":
            return self._encode_t5(tok, real)
        pos = torch.arange(self.cfg.max_len - length, self.cfg.max_len)
        x = self.tok_emb(tok) + self.level_emb.weight[None, None]
        if self.cfg.history_tokens == "items":  # one position per item: a sequence `depth` times shorter
            x = self.drop(x.sum(2) + self.item_pos_emb(pos)[None])
            key_ok = real[:, None, None, :]
        else:
            x = self.drop((x + self.item_pos_emb(pos)[None, :, None]).reshape(b, length * self.depth, -1))
            key_ok = real.repeat_interleave(self.depth, 1)[:, None, None, :]
        for block in self.encoder:
            x = block(x, key_ok)
        return self.enc_norm(x), key_ok

    def _encode_t5(self, tok: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, length = real.shape
        if self.cfg.history_tokens == "items":  # one position per item, the sum of its code embeddings
            x, mask = self.t5.shared(tok).sum(2), real.long()
        else:
            x = self.t5.shared(tok.reshape(b, length * self.depth))
            mask = real.repeat_interleave(self.depth, 1).long()
        return self.t5.encoder(inputs_embeds=x, attention_mask=mask).last_hidden_state, mask

    def decode(self, prefix: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        """prefix [B, W, t] codes -> hidden states [B, W, t + 1, d] of BOS + prefix; the last predicts the next
        code (t may be 0). Code j of the prefix is read as level j % depth (several items in a row)."""
        b, w, t = prefix.shape
        tok = torch.cat([torch.full((b, w, 1), self.bos), self.tokens_prefix(prefix)], 2).reshape(
            b * w, t + 1
        )
        return self.decode_tokens(tok, memory, memory_mask).reshape(b, w, t + 1, -1)

    def decode_tokens(
        self, tok: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> torch.Tensor:
        """Decoder token ids [B * W, T] (W rows per user of `memory` [B, S, d]) -> hidden states [B * W, T, d],
        each position reading itself and the earlier ones."""
        n, t = tok.shape
        w = n // len(memory)
        if self.cfg.backbone == "t5":
            memory, memory_mask = _per_beam(memory, w), _per_beam(memory_mask, w)
            out = self.t5.decoder(
                input_ids=tok, encoder_hidden_states=memory, encoder_attention_mask=memory_mask
            )
            return out.last_hidden_state * self.cfg.dim**-0.5  # T5's rescaling before its tied output layer
        x = self.drop(self.tok_emb(tok) + self.dec_pos_emb.weight[:t])
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        for block in self.decoder:
            x = block(x, causal, memory, memory_mask, beams=w)
        return self.dec_norm(x)

    def tokens_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        return prefix + self.offsets[torch.arange(prefix.shape[-1]) % self.depth]

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """Scores of level `level`'s codes: dot products with their (tied) token embeddings."""
        start = int(self.offsets[level])
        table = self.t5.shared.weight if self.cfg.backbone == "t5" else self.tok_emb.weight
        return hidden @ table[start : start + self.sizes[level]].t()

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
        return torch.autocast(
            "cpu", torch.bfloat16, enabled=resolve_dtype(self.cfg.precision) == torch.bfloat16
        )

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
        if items.numel() and (int(items.min()) < 1 or int(items.max()) > self.n_items):
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
        """What every decoding step reads of the encoder output. Native: the cross-attention keys/values per
        decoder block, which depend on the history only, so once per request rather than once per level; t5: the
        memory itself (its cache keeps the cross-attention keys/values after the first step)."""
        if self.cfg.backbone == "t5":
            return memory
        return [block.cross_attn.keys_values(memory) for block in self.decoder]

    def decoding_steps(self, memory, mask):
        """(step, reorder) for `decoding/beam.py`: `step(prefix [B, W, t], t)` runs the decoder on the one new
        position t (BOS, or the prefix's last code, read as level (t - 1) % depth) and returns the log-softmax
        of level t % depth's codes [B, W, V]; `reorder(origin [B, W])` says which earlier beam each kept beam
        continues. A KV cache holds the earlier positions' self-attention keys/values, one row per beam."""
        if self.cfg.backbone == "t5":
            return self._t5_steps(memory, mask)
        cache: list = [None] * len(self.decoder)

        def step(prefix: torch.Tensor, t: int) -> torch.Tensor:
            b, w, _ = prefix.shape
            tok = self._last_tokens(prefix)
            with self.autocast():
                x = self.tok_emb(tok) + self.dec_pos_emb.weight[t]
                for i, block in enumerate(self.decoder):
                    x, cache[i] = block.step(x, cache[i], memory[i], mask, w)
                logits = self.level_logits(self.dec_norm(x).reshape(b, w, -1), t % self.depth)
            return torch.log_softmax(logits.float(), -1)

        def reorder(origin: torch.Tensor) -> None:
            rows = _beam_rows(origin, len(cache[0][0]))
            for i, (ck, cv) in enumerate(cache):
                cache[i] = (ck[rows], cv[rows])

        return step, reorder

    def _t5_steps(self, memory: torch.Tensor, mask: torch.Tensor):
        from transformers import DynamicCache, EncoderDecoderCache

        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        rows_now = [len(memory)]

        def step(prefix: torch.Tensor, t: int) -> torch.Tensor:
            b, w, _ = prefix.shape
            with self.autocast():
                out = self.t5.decoder(
                    input_ids=self._last_tokens(prefix),
                    encoder_hidden_states=_per_beam(memory, w),
                    encoder_attention_mask=_per_beam(mask, w),
                    cache=cache,
                    use_cache=True,
                )
                hidden = out.last_hidden_state.reshape(b, w, -1) * self.cfg.dim**-0.5
                logits = self.level_logits(hidden, t % self.depth)
            rows_now[0] = b * w
            return torch.log_softmax(logits.float(), -1)

        def reorder(origin: torch.Tensor) -> None:
            cache.reorder_cache(_beam_rows(origin, rows_now[0]))

        return step, reorder

    def _last_tokens(self, prefix: torch.Tensor) -> torch.Tensor:
        """[B, W, t] codes -> [B * W, 1] decoder input: BOS at t = 0, else the last code's token."""
        b, w, t = prefix.shape
        if t == 0:
            return torch.full((b * w, 1), self.bos)
        return (prefix[:, :, -1] + self.offsets[(t - 1) % self.depth]).reshape(b * w, 1)

    def _beam_search(self, trie: CodeTrie, memory, mask, batch: int, k: int, exclude):
        step, reorder = self.decoding_steps(memory, mask)
        items, scores, _ = constrained_beam_search(
            step, trie, batch, max(self.cfg.beam, k), k, exclude, reorder
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


def t5_config(cfg: TigerConfig, vocab: int):
    """A small T5 of the model's sizes, built in code (no hub): token 0 pads, the decoder starts from BOS (the
    vocabulary's last token); T5's own defaults for the rest (32 relative position buckets, tied embeddings)."""
    if cfg.dim % cfg.heads:
        raise ConfigError(f"model.dim ({cfg.dim}) must be a multiple of model.heads ({cfg.heads})")
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab,
        d_model=cfg.dim,
        d_kv=cfg.dim // cfg.heads,
        d_ff=cfg.dim * cfg.ffn_mult,
        num_layers=cfg.encoder_layers,
        num_decoder_layers=cfg.decoder_layers,
        num_heads=cfg.heads,
        dropout_rate=cfg.dropout,
        feed_forward_proj="relu",
        pad_token_id=0,
        eos_token_id=vocab - 1,
        decoder_start_token_id=vocab - 1,
    )


def _per_beam(x: torch.Tensor, w: int) -> torch.Tensor:
    """[B, ...] -> [B * W, ...]: each user's row once per beam (user-major, as the beams are laid out)."""
    return x if w == 1 else x.repeat_interleave(w, 0)


def _beam_rows(origin: torch.Tensor, rows_before: int) -> torch.Tensor:
    """Beams kept after a step: row j of user u continues beam origin[u, j] of the previous step, whose rows
    were `rows_before` in all -> flat row indices into the previous step's rows."""
    b = len(origin)
    return (origin + torch.arange(b)[:, None] * (rows_before // b)).reshape(-1)


def _default_trained_items(module, state_dict, prefix, *args) -> None:
    """Weights saved before `trained_items` existed: every item counts as trained."""
    key = prefix + "trained_items"
    if key not in state_dict and prefix + "item_codes" in state_dict:
        state_dict[key] = torch.ones(len(state_dict[prefix + "item_codes"]), dtype=torch.bool)
