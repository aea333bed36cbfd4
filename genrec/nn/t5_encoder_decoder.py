"""transformers' `T5ForConditionalGeneration` (Raffel et al. 2020, https://arxiv.org/abs/1910.10683) as the
encoder-decoder of code tokens, behind `genrec.nn.encoder_decoder.EncoderDecoder`.

- Built from a small `T5Config` of the model's sizes in code (relative position buckets, RMS norm, ReLU
  feed-forward, tied and rescaled output embeddings); nothing is downloaded. As RQ-VAE-Recommender found, a T5
  decoder is what brought its TIGER up to the paper's recall.
- `history_tokens: items` gives the encoder one position per item, the sum of its code embeddings.
- Step-by-step decoding keeps transformers' `EncoderDecoderCache`, reordered after each beam search step; the
  cross-attention keys/values are cached by T5 itself after the first step.
- Memory mask: [B, S] 0/1 (transformers' attention mask).
"""

from __future__ import annotations

import torch

from genrec.config.models.tiger import TigerConfig
from genrec.errors import ConfigError
from genrec.nn.encoder_decoder import DecoderCache, EncoderDecoder, per_beam


class T5Cache(DecoderCache):
    """The memory, its mask and transformers' KV cache of the positions decoded so far, one row per beam."""

    def __init__(self, memory: torch.Tensor, mask: torch.Tensor) -> None:
        from transformers import DynamicCache, EncoderDecoderCache

        self.memory, self.mask = memory, mask
        self.kv = EncoderDecoderCache(DynamicCache(), DynamicCache())

    def reorder(self, rows: torch.Tensor) -> None:
        self.kv.reorder_cache(rows)


class T5EncoderDecoder(EncoderDecoder):
    """A T5 of `vocab` tokens (0 pads, the last one starts the decoder) and the sizes of `cfg`; `depth` codes per
    item. T5's positions are relative, so `decoder_length` sets nothing."""

    def __init__(self, cfg: TigerConfig, vocab: int, depth: int, decoder_length: int) -> None:
        super().__init__()
        from transformers import T5ForConditionalGeneration  # imported only when used: it is slow to load

        self.per_item, self.scale = cfg.history_tokens == "items", cfg.dim**-0.5
        self.t5 = T5ForConditionalGeneration(t5_config(cfg, vocab))

    def encode(self, tokens: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, length, depth = tokens.shape
        if self.per_item:
            x, mask = self.t5.shared(tokens).sum(2), real.long()
        else:
            x = self.t5.shared(tokens.reshape(b, length * depth))
            mask = real.repeat_interleave(depth, 1).long()
        return self.t5.encoder(inputs_embeds=x, attention_mask=mask).last_hidden_state, mask

    def decode(self, tokens: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = len(tokens) // len(memory)
        out = self.t5.decoder(
            input_ids=tokens,
            encoder_hidden_states=per_beam(memory, w),
            encoder_attention_mask=per_beam(mask, w),
        )
        return out.last_hidden_state * self.scale  # T5's rescaling before its tied output layer

    def decoder_memory(self, memory: torch.Tensor) -> torch.Tensor:
        return memory

    def start(self, memory: torch.Tensor, mask: torch.Tensor) -> T5Cache:
        return T5Cache(memory, mask)

    def step(self, tokens: torch.Tensor, position: int, cache: T5Cache) -> torch.Tensor:
        w = len(tokens) // len(cache.memory)
        out = self.t5.decoder(
            input_ids=tokens,
            encoder_hidden_states=per_beam(cache.memory, w),
            encoder_attention_mask=per_beam(cache.mask, w),
            cache=cache.kv,
            use_cache=True,
        )
        return out.last_hidden_state[:, 0] * self.scale

    def token_table(self) -> torch.Tensor:
        return self.t5.shared.weight


def t5_config(cfg: TigerConfig, vocab: int):
    """A small T5 of the model's sizes, built in code (no hub): token 0 pads, the decoder starts from the
    vocabulary's last token; heads of `head_dim` (default dim / heads: T5 itself lets heads x d_kv differ from
    d_model); T5's own defaults for the rest (32 relative position buckets, tied embeddings). Raises ConfigError
    when `head_dim` is unset and `cfg.dim` is not a multiple of `cfg.heads`."""
    if cfg.head_dim is None and cfg.dim % cfg.heads:
        raise ConfigError(f"model.dim ({cfg.dim}) must be a multiple of model.heads ({cfg.heads})")
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab,
        d_model=cfg.dim,
        d_kv=cfg.head_dim or cfg.dim // cfg.heads,
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
