"""The encoder-decoder interface of the semantic-ID generators (TIGER, onerec): the encoder reads a history as
code tokens, the decoder writes code tokens one at a time, scored against the (tied) token table.

Implementations: `genrec.nn.native_encoder_decoder` (genrec's own pre-norm blocks) and
`genrec.nn.t5_encoder_decoder` (transformers' T5). Both see token ids only: which code a token stands for, the
beam search and the item trie belong to the model (`genrec.models.tiger`).

Beams: a decoder input holds W rows per memory row, user-major (rows u * W .. u * W + W - 1 belong to user u),
so that every beam of a user reads that user's memory without the memory being copied W times by the caller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class DecoderCache(ABC):
    """What step-by-step decoding keeps between steps (the earlier positions' self-attention keys/values)."""

    @abstractmethod
    def reorder(self, rows: torch.Tensor) -> None:
        """Keep the rows `rows` (flat indices into the previous step's rows, one per new row): after a beam
        search step, row j continues the beam at rows[j]."""


class EncoderDecoder(nn.Module, ABC):
    """Encoder over history tokens, decoder over code tokens. Hidden states come out in the space of
    `token_table()`: the score of token v at a position is hidden @ token_table()[v]."""

    @abstractmethod
    def encode(self, tokens: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """History tokens [B, L, depth] (item i's code tokens at row i, right-aligned; 0 = padding) and real
        [B, L] bool (which rows are items) -> memory [B, S, d] and its key mask (the implementation's own form,
        sliceable along B)."""

    @abstractmethod
    def decode(self, tokens: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: decoder input tokens [B * W, T] -> hidden states [B * W, T, d], position t reading
        positions 0..t and its user's memory."""

    @abstractmethod
    def decoder_memory(self, memory: torch.Tensor):
        """What every decoding step reads of `memory`, computed once per request (for `start`)."""

    @abstractmethod
    def start(self, memory, mask: torch.Tensor) -> DecoderCache:
        """An empty cache for step-by-step decoding against `decoder_memory(memory)` and its mask."""

    @abstractmethod
    def step(self, tokens: torch.Tensor, position: int, cache: DecoderCache) -> torch.Tensor:
        """One new decoder position per row: tokens [B * W, 1] at `position` -> hidden states [B * W, d], equal
        to `decode` of the whole prefix at that position; the cache gains the position."""

    @abstractmethod
    def token_table(self) -> torch.Tensor:
        """The token embeddings [V, d], tied to the output layer."""


def per_beam(x: torch.Tensor, w: int) -> torch.Tensor:
    """[B, ...] -> [B * W, ...]: each user's row once per beam (user-major, as the beams are laid out)."""
    return x if w == 1 else x.repeat_interleave(w, 0)
