"""genrec's own encoder-decoder for code tokens (TIGER, Rajput et al. 2023, https://arxiv.org/abs/2305.05065):
pre-norm transformer blocks with learned absolute positions, behind `genrec.nn.encoder_decoder.EncoderDecoder`.

- Encoder positions: the item's position counted back from the newest (`max_len` of them) plus the code level;
  `history_tokens: items` gives one position per item instead, the sum of its code embeddings.
- Decoder positions: learned, up to `decoder_length` (BOS + every code but the last of one target).
- Cross-attention lets all beams of one user share that user's encoder output: the beams' decoder positions are
  laid out along the query axis instead of copying the memory once per beam. For step-by-step decoding the
  cross-attention keys/values are computed once per request (`decoder_memory`).
- Attention weights have no dropout (its random masks cost a fifth of a CPU training step); dropout stays on the
  residual branches.
"""

from __future__ import annotations

import torch
from torch import nn

from genrec.config.models.tiger import TigerConfig
from genrec.nn.attention import attend
from genrec.nn.encoder_decoder import DecoderCache, EncoderDecoder
from genrec.nn.transformer import FeedForward


class Attention(nn.Module):
    """Multi-head attention, fused or written out per device (`genrec.nn.attention`)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, S, d] -> keys and values, each [B, heads, S, d / heads]."""
        b, s, d = context.shape
        return tuple(self.kv(context).view(b, s, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4))

    def forward(self, x: torch.Tensor, context, mask: torch.Tensor | None) -> torch.Tensor:
        """`x` [B, n, d] attends to `context`: [B, S, d], or its (keys, values) from `keys_values` when they are
        reused; `mask` broadcasts to [B, heads, n, S] (True = may attend)."""
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = context if isinstance(context, tuple) else self.keys_values(context)
        y = attend(q, k, v, mask)
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


class NativeCache(DecoderCache):
    """Per decoder block: the cross-attention keys/values of the memory (fixed) and the self-attention
    keys/values of the positions decoded so far, one row per beam."""

    def __init__(self, memory: list, mask: torch.Tensor) -> None:
        self.memory, self.mask = memory, mask
        self.past: list = [None] * len(memory)

    def reorder(self, rows: torch.Tensor) -> None:
        self.past = [(k[rows], v[rows]) for k, v in self.past]


class NativeEncoderDecoder(EncoderDecoder):
    """Token table of `vocab` tokens (0 = padding), `cfg.encoder_layers` encoder and `cfg.decoder_layers`
    decoder blocks of width `cfg.dim`; `depth` codes per item, at most `decoder_length` decoder positions.
    Memory mask: [B, 1, 1, S] bool."""

    def __init__(self, cfg: TigerConfig, vocab: int, depth: int, decoder_length: int) -> None:
        super().__init__()
        self.max_len, self.per_item = cfg.max_len, cfg.history_tokens == "items"
        self.tok_emb = nn.Embedding(vocab, cfg.dim, padding_idx=0)
        self.item_pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.level_emb = nn.Embedding(depth, cfg.dim)
        self.dec_pos_emb = nn.Embedding(decoder_length, cfg.dim)
        self.encoder = nn.ModuleList(Block(cfg, cross=False) for _ in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(Block(cfg, cross=True) for _ in range(cfg.decoder_layers))
        self.enc_norm, self.dec_norm = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.tok_emb.weight, std=cfg.dim**-0.5)

    def encode(self, tokens: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, length, depth = tokens.shape
        pos = torch.arange(self.max_len - length, self.max_len, device=tokens.device)
        x = self.tok_emb(tokens) + self.level_emb.weight[None, None]
        if self.per_item:  # one position per item: a sequence `depth` times shorter
            x = self.drop(x.sum(2) + self.item_pos_emb(pos)[None])
            key_ok = real[:, None, None, :]
        else:
            x = self.drop((x + self.item_pos_emb(pos)[None, :, None]).reshape(b, length * depth, -1))
            key_ok = real.repeat_interleave(depth, 1)[:, None, None, :]
        for block in self.encoder:
            x = block(x, key_ok)
        return self.enc_norm(x), key_ok

    def decode(self, tokens: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        x = self.drop(self.tok_emb(tokens) + self.dec_pos_emb.weight[:t])
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        for block in self.decoder:
            x = block(x, causal, memory, mask, beams=len(tokens) // len(memory))
        return self.dec_norm(x)

    def decoder_memory(self, memory: torch.Tensor) -> list:
        """The cross-attention keys/values of every decoder block: they depend on the history only, so they are
        computed once per request rather than once per decoded position."""
        return [block.cross_attn.keys_values(memory) for block in self.decoder]

    def start(self, memory: list, mask: torch.Tensor) -> NativeCache:
        return NativeCache(memory, mask)

    def step(self, tokens: torch.Tensor, position: int, cache: NativeCache) -> torch.Tensor:
        beams = len(tokens) // len(cache.mask)
        x = self.tok_emb(tokens) + self.dec_pos_emb.weight[position]
        for i, block in enumerate(self.decoder):
            x, cache.past[i] = block.step(x, cache.past[i], cache.memory[i], cache.mask, beams)
        return self.dec_norm(x)[:, 0]

    def token_table(self) -> torch.Tensor:
        return self.tok_emb.weight
