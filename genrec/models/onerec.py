"""OneRec-style session generation (Deng et al. 2025, https://arxiv.org/abs/2502.18965): an encoder reads the
user's history as semantic-ID tokens and a decoder generates the next *session*, a list of N items, code after
code, in place of a single next item.

- Everything TIGER has (`genrec.models.tiger`: semantic IDs, tokens, either backbone behind the encoder-decoder
  interface of `genrec.nn.encoder_decoder`, the trie) is kept; the decoder simply runs on for N x depth
  positions (`decoder_length`). Code j of a session is read as level j % depth.
- Training data: real sessions. Every cut point of each training sequence (every `cut_stride`-th, at a random
  phase each epoch) gives one example: history = the items before the cut, session = the next N items (fewer at
  the end of a sequence; the missing places carry no loss). Loss: code cross-entropy over the session's codes.
- `generate_sessions`: beam search over whole sessions (`decoding/beam.py: constrained_session_search`): every
  item follows the trie and no item repeats within a session. `recommend` is TIGER's beam search over the
  session's first item, so the standard next-item evaluator ranks it like any generator.
- Deviations from the paper: no mixture-of-experts decoder, no reward model or preference alignment here (those
  are separate: `genrec.objectives.preference`), sessions are the next N events rather than the paper's filtered
  "high-quality" sessions, and the codes come from item text (as TIGER's), not from multimodal item embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from genrec.config.models.onerec import OneRecConfig
from genrec.data.batching import HistoryBatch, length_bucketed_batches
from genrec.data.split import Split
from genrec.decoding.beam import constrained_session_search
from genrec.errors import ConfigError, DataError
from genrec.models.base import register
from genrec.models.tiger import Tiger, cut_points


@register
class OneRec(Tiger):
    config_class = OneRecConfig
    capabilities = frozenset({"generate", "log_likelihood", "session_log_likelihood", "generate_sessions"})

    def decoder_length(self) -> int:
        return self.cfg.session_len * self.depth

    # --- training ------------------------------------------------------------------------------------------------

    def training_batches(self, split: Split, rng: np.random.Generator, batch_size: int) -> Iterator:
        """(histories [B, L], sessions [B, N]) for the cut points of the training sequences, once per epoch; a
        session is the N items after the cut, right-padded with 0 where the sequence ends sooner."""
        train, n = split.train, self.cfg.session_len
        rows, cut = cut_points(train.lengths(), self.cfg.cut_stride, rng)
        first, end = train.offsets[rows], train.offsets[rows + 1]
        start = first + cut  # the session's first item
        hist_len = np.minimum(cut, self.cfg.max_len)
        for part in length_bucketed_batches(hist_len, batch_size, rng):
            width = int(hist_len[part].max())
            idx = start[part, None] - width + np.arange(width)[None]
            items = np.where(idx >= first[part, None], train.items[np.clip(idx, 0, None)], 0)
            sidx = start[part, None] + np.arange(n)[None]
            session = np.where(sidx < end[part, None], train.items[np.clip(sidx, 0, len(train.items) - 1)], 0)
            yield torch.from_numpy(items).long(), torch.from_numpy(session).long()

    def code_logits(self, batch) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Teacher-forced decoding of (histories [B, L], sessions [B, N]): per code level the float logits of
        every real session item [I, V_level] and their codes [I, depth] (I = real items in the batch), for
        `CodeCrossEntropy`."""
        history, sessions = batch
        b, n = sessions.shape
        real = sessions > 0
        codes = self.item_codes[sessions]  # [B, N, depth]; padding rows hold item 0's zeros
        with self.autocast():
            memory, mask = self.encode(history)
            flat = codes.reshape(b, 1, n * self.depth)
            hidden = self.decode(flat[:, :, :-1], memory, mask)[:, 0].reshape(b, n, self.depth, -1)
            logits = [self.level_logits(hidden[:, :, lv][real], lv).float() for lv in range(self.depth)]
        return logits, codes[real]

    # --- sessions ------------------------------------------------------------------------------------------------

    def session_log_likelihood(self, batch: HistoryBatch, sessions: torch.Tensor) -> torch.Tensor:
        """log p(session | history) [B, n] for `sessions` [B, n, N] (internal ids, N <= session_len): the sum of
        the session's code log-probabilities, teacher-forced, each level's softmax over that level's codes (as
        the beam search scores them: `generate_sessions` returns exactly this for its sessions). Differentiable.
        Raises DataError for ids outside 1..n_items, ConfigError for N above the trained session length."""
        b, n, length = sessions.shape
        self._check_length(length)
        # Checked on the host only: on an accelerator the check would wait for the device at every step.
        on_host = sessions.device.type == "cpu" and sessions.numel()
        if on_host and (sessions.min() < 1 or sessions.max() > self.n_items):
            raise DataError(f"session_log_likelihood: item ids must be in 1..{self.n_items}")
        codes = self.item_codes[sessions].reshape(b, n, length * self.depth)
        with self.autocast():
            memory, mask = self.encode(batch.items)
            hidden = self.decode(codes[:, :, :-1], memory, mask)  # [B, n, N * depth, d]
            total = 0
            for lv in range(self.depth):
                logits = self.level_logits(hidden[:, :, lv :: self.depth], lv).float()  # [B, n, N, V]
                total = total + torch.log_softmax(logits, -1).gather(-1, codes[:, :, lv :: self.depth, None])
        return total[..., 0].sum(-1)

    @torch.no_grad()
    def generate_sessions(
        self,
        batch: HistoryBatch,
        n_beams: int,
        length: int | None = None,
        exclude: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The `n_beams` best sessions of `length` (default: session_len) distinct real items per user -> (items
        [B, n_beams, length], log-prob [B, n_beams]), best first, by beam search of width n_beams over the
        sessions' codes. `exclude` ([B, M] item ids, 0 = none; e.g. the history) never appear. A session that
        could not be completed (too few items left) holds 0s and scores -inf."""
        length = self.cfg.session_len if length is None else length
        self._check_length(length)
        with self.autocast():
            memory, mask = self.encode(batch.items)
            memory = self.decoder_memory(memory)
        step, reorder = self.decoding_steps(memory, mask)
        return constrained_session_search(
            step, self.trie(), len(batch.items), n_beams, length, exclude, reorder, device=self.offsets.device
        )

    def _check_length(self, length: int) -> None:
        if not 1 <= length <= self.cfg.session_len:
            raise ConfigError(f"session length {length}: the model generates 1..{self.cfg.session_len} items")

    def checkpoint_selection(self) -> str:
        return (
            super().checkpoint_selection() + f"; trained on sessions of the next {self.cfg.session_len} items"
        )
