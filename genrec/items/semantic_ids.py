"""Semantic IDs: each item becomes a short tuple of codes from residual quantisation of an item embedding.

Two tokenizers, chosen by `kind`:
- `rq_kmeans` (OneRec): k-means on the embeddings, then k-means on the residuals, level after level.
- `rq_vae` (TIGER): an MLP auto-encoder whose latent is quantised residually by learned codebooks
  (straight-through gradients, commitment loss); codebooks start from k-means and unused codes are re-seeded
  from random residuals during training, the usual remedy for codebook collapse.

Items whose codes collide get one extra code (0, 1, 2, ... within the colliding group), so after separation every
item has a unique code and every code names one item. The input is pluggable: item text embeddings, the item
table of a trained SASRec/HSTU run (collaborative), or both (each part L2-normalised, then concatenated).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from genrec.config.items import TokenizerConfig
from genrec.errors import ConfigError, DataError
from genrec.io import json_text

# --- k-means and residual k-means ------------------------------------------------------------------------------


def kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means (squared Euclidean) -> (centroids [k, d], assignment [n]). Empty clusters are re-seeded
    with the points farthest from their centroid, so every code stays in use when n >= k."""
    n = x.shape[0]
    k_eff = min(k, n)
    centroids = x[torch.randperm(n, generator=gen)[:k_eff]].clone()
    if k_eff < k:  # fewer points than codes: the extra codes are never assigned
        centroids = torch.cat([centroids, centroids[:1].expand(k - k_eff, -1)])
    x_sq = (x * x).sum(1, keepdim=True)
    for _ in range(iters):
        dist = x_sq - 2 * x @ centroids.t() + (centroids * centroids).sum(1)[None]
        if k_eff < k:
            dist[:, k_eff:] = float("inf")
        assign = dist.argmin(1)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        empty = torch.nonzero(counts[:k_eff] == 0).flatten()
        if len(empty):
            far = dist.gather(1, assign[:, None])[:, 0].topk(len(empty)).indices
            new[empty] = x[far]
        centroids = new
    dist = x_sq - 2 * x @ centroids.t() + (centroids * centroids).sum(1)[None]
    if k_eff < k:
        dist[:, k_eff:] = float("inf")
    return centroids, dist.argmin(1)


def rq_kmeans(x: torch.Tensor, levels: int, k: int, iters: int, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    residual = x.clone()
    codes = []
    for _ in range(levels):
        centroids, assign = kmeans(residual, k, iters, gen)
        codes.append(assign)
        residual = residual - centroids[assign]
    return torch.stack(codes, 1).numpy().astype(np.int64)


# --- RQ-VAE ----------------------------------------------------------------------------------------------------


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    def __init__(self, in_dim: int, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = mlp([in_dim, *cfg.vae_hidden, cfg.vae_latent])
        self.decoder = mlp([cfg.vae_latent, *reversed(cfg.vae_hidden), in_dim])
        self.codebooks = nn.Parameter(torch.zeros(cfg.levels, cfg.codebook_size, cfg.vae_latent))

    def quantize(
        self, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(quantised z, codes [n, L], codebook + commitment loss, residual entering each level)."""
        residual, quantised = z, torch.zeros_like(z)
        codes, residuals, loss = [], [], z.new_zeros(())
        for level in range(self.cfg.levels):
            book = self.codebooks[level]
            residuals.append(residual.detach())
            code = torch.cdist(residual, book).argmin(1)
            chosen = book[code]
            loss = loss + F.mse_loss(chosen, residual.detach())
            loss = loss + self.cfg.vae_beta * F.mse_loss(residual, chosen.detach())
            quantised = quantised + chosen
            residual = residual - chosen.detach()
            codes.append(code)
        # Straight-through: the decoder sees the quantised latent, gradients flow to the encoder unchanged.
        z_q = z + (quantised - z).detach()
        return z_q, torch.stack(codes, 1), loss, residuals

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, gen: torch.Generator) -> None:
        residual = self.encoder(x)
        for level in range(self.cfg.levels):
            centroids, assign = kmeans(residual, self.cfg.codebook_size, 10, gen)
            self.codebooks[level] = centroids
            residual = residual - centroids[assign]

    def fit(self, x: torch.Tensor, log=None) -> None:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        opt = torch.optim.AdamW(self.parameters(), lr=cfg.vae_lr)
        # A few epochs of plain auto-encoding first, so k-means initialises codebooks on a meaningful latent.
        for _ in range(10):
            for idx in torch.randperm(len(x), generator=gen).split(cfg.vae_batch):
                loss = F.mse_loss(self.decoder(self.encoder(x[idx])), x[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.init_codebooks(x, gen)
        for epoch in range(cfg.vae_epochs):
            used = torch.zeros(cfg.levels, cfg.codebook_size, dtype=torch.bool)
            for idx in torch.randperm(len(x), generator=gen).split(cfg.vae_batch):
                z = self.encoder(x[idx])
                z_q, codes, q_loss, residuals = self.quantize(z)
                recon = F.mse_loss(self.decoder(z_q), x[idx])
                loss = recon + q_loss
                opt.zero_grad()
                loss.backward()
                opt.step()
                for level in range(cfg.levels):
                    used[level, codes[:, level]] = True
            if epoch < cfg.vae_epochs - 10:  # re-seed dead codes, but let the last epochs settle
                with torch.no_grad():
                    for level in range(cfg.levels):
                        dead = torch.nonzero(~used[level]).flatten()
                        if len(dead):
                            pick = torch.randint(0, len(residuals[level]), (len(dead),), generator=gen)
                            self.codebooks[level, dead] = residuals[level][pick]
            if log is not None and (epoch + 1) % 50 == 0:
                log(f"rq-vae epoch {epoch + 1}: reconstruction {float(recon.detach()):.5f}")

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> np.ndarray:
        return self.quantize(self.encoder(x))[1].numpy().astype(np.int64)


# --- separating collisions, the item <-> code map, the report ---------------------------------------------------


def separation_codes(codes: np.ndarray) -> np.ndarray:
    """Per item, its rank (0, 1, ...) among items with the same code tuple, in item order."""
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    sorted_groups = inverse[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(order)) - first
    return rank


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def quality_report(raw: np.ndarray, codes: np.ndarray, sizes: list[int]) -> dict:
    """Codebook use per level, collisions before / after separation, entropy of the item distribution over
    prefixes of every length (bits; log2(n_items) is the most a prefix can carry)."""
    n, levels = raw.shape
    per_level = []
    for level in range(levels):
        counts = np.bincount(raw[:, level], minlength=sizes[level])
        per_level.append(
            {
                "level": level + 1,
                "codes_used": int((counts > 0).sum()),
                "codebook_size": sizes[level],
                "share_used": round(float((counts > 0).mean()), 4),
                "perplexity": round(2 ** _entropy_bits(counts), 1),
            }
        )

    def collisions(c: np.ndarray) -> dict:
        _, inv, counts = np.unique(c, axis=0, return_inverse=True, return_counts=True)
        return {
            "distinct_codes": int(len(counts)),
            "items_sharing_a_code": int(counts[counts > 1].sum()),
            "largest_group": int(counts.max()),
        }

    prefix = []
    for depth in range(1, codes.shape[1] + 1):
        _, counts = np.unique(codes[:, :depth], axis=0, return_counts=True)
        prefix.append(
            {"depth": depth, "prefixes": int(len(counts)), "entropy_bits": round(_entropy_bits(counts), 3)}
        )
    return {
        "items": int(n),
        "levels": per_level,
        "collisions_before_separation": collisions(raw),
        "collisions_after_separation": collisions(codes),
        "separation_code_values": int(codes[:, -1].max()) + 1,
        "prefix_entropy": prefix,
        "max_entropy_bits": round(math.log2(max(n, 1)), 3),
    }


def format_report(report: dict) -> str:
    lines = [f"semantic IDs for {report['items']} items"]
    for lv in report["levels"]:
        lines.append(
            f"  level {lv['level']}: {lv['codes_used']}/{lv['codebook_size']} codes used "
            f"({lv['share_used']:.0%}), perplexity {lv['perplexity']}"
        )
    b, a = report["collisions_before_separation"], report["collisions_after_separation"]
    lines.append(
        f"  collisions before separation: {b['items_sharing_a_code']} items share a code "
        f"({b['distinct_codes']} distinct codes, largest group {b['largest_group']})"
    )
    extra = report["separation_code_values"]
    lines.append(f"  collisions after separation: {a['items_sharing_a_code']} (extra code values {extra})")
    ent = ", ".join(f"depth {p['depth']}: {p['entropy_bits']}" for p in report["prefix_entropy"])
    lines.append(f"  prefix entropy (bits, max {report['max_entropy_bits']}): {ent}")
    return "\n".join(lines)


@dataclass
class SemanticIds:
    """codes[i] is the code tuple of internal item i + 1 (the last column is the separation code)."""

    codes: np.ndarray
    sizes: list[int]
    report: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64)
        radix = np.cumprod([1] + self.sizes[::-1][:-1])[::-1].astype(np.int64)
        self._radix = radix
        keys = self.codes @ radix
        self._order = np.argsort(keys, kind="stable")
        self._sorted_keys = keys[self._order]
        if len(np.unique(keys)) != len(keys):
            raise DataError("semantic IDs are not unique after separation")

    @property
    def n_items(self) -> int:
        return len(self.codes)

    @property
    def depth(self) -> int:
        return self.codes.shape[1]

    def code_of(self, items) -> np.ndarray:
        """Internal item ids (1..n) -> [len, depth] codes."""
        return self.codes[np.asarray(items) - 1]

    def item_of(self, codes) -> np.ndarray:
        """[m, depth] codes -> internal item ids; 0 where no item has that code."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1, self.depth)
        keys = codes @ self._radix
        pos = np.clip(np.searchsorted(self._sorted_keys, keys), 0, len(self._sorted_keys) - 1)
        hit = self._sorted_keys[pos] == keys
        return np.where(hit, self._order[pos] + 1, 0)

    def to_files(self) -> dict[str, bytes]:
        """{file name: content} of the two files `load` reads back."""
        return {
            "semantic_ids.safetensors": save({"codes": torch.from_numpy(self.codes)}),
            "semantic_ids.json": json_text({"sizes": self.sizes, "report": self.report}, indent=1).encode(),
        }

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.to_files().items():
            (folder / name).write_bytes(content)

    @classmethod
    def load(cls, folder: Path) -> SemanticIds:
        folder = Path(folder)
        if not (folder / "semantic_ids.safetensors").is_file():
            raise DataError(f"{folder}: no semantic_ids.safetensors")
        meta = json.loads((folder / "semantic_ids.json").read_text())
        codes = load_file(str(folder / "semantic_ids.safetensors"))["codes"].numpy()
        return cls(codes, meta["sizes"], meta.get("report", {}))


def tokenize(x: np.ndarray, cfg: TokenizerConfig, log=None) -> SemanticIds:
    """Embeddings [n_items, d] -> unique semantic IDs (levels + 1 separation code)."""
    if len(x) == 0:
        raise DataError("no items to tokenize")
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if cfg.kind == "rq_kmeans":
        raw = rq_kmeans(xt, cfg.levels, cfg.codebook_size, cfg.kmeans_iters, cfg.seed)
    else:
        # Standardise: the auto-encoder's MSE then weighs every input dimension alike.
        xt = (xt - xt.mean(0)) / xt.std(0).clamp(min=1e-6)
        vae = RQVAE(xt.shape[1], cfg)
        vae.fit(xt, log)
        raw = vae.codes(xt)
    extra = separation_codes(raw)
    codes = np.concatenate([raw, extra[:, None]], 1)
    sizes = [cfg.codebook_size] * cfg.levels + [int(extra.max()) + 1]
    report = quality_report(raw, codes, sizes)
    report["tokenizer"] = cfg.model_dump(mode="json")
    return SemanticIds(codes, sizes, report)


def item_embeddings(cfg: TokenizerConfig, items, item_ids: np.ndarray, collab_embeddings=None) -> np.ndarray:
    """The tokenizer's input for a run's item table (`items`: polars frame in internal order).

    `collab_embeddings(run_dir, raw_item_ids) -> [n, d]`: a trained run's item vectors aligned to the raw ids
    (given by the runs layer, which can load runs); needed for `input: collab | both`."""
    parts = []
    if cfg.input in ("text", "both"):
        from genrec.items.text import item_text_embeddings

        parts.append(item_text_embeddings(items, cfg.encoder, cfg.profiles))
    if cfg.input in ("collab", "both"):
        if not cfg.collab_run:
            raise ConfigError(
                "tokenizer input collab/both needs tokenizer.collab_run (a trained sasrec/hstu run)"
            )
        if collab_embeddings is None:
            raise ConfigError("tokenizer input collab/both needs a loader of the collab run's item vectors")
        parts.append(collab_embeddings(cfg.collab_run, item_ids))
    parts = [p / np.linalg.norm(p, axis=1, keepdims=True).clip(min=1e-8) for p in parts]
    return np.concatenate(parts, 1)


def run_semantic_ids(
    cfg: TokenizerConfig, items, item_ids: np.ndarray, collab_embeddings=None
) -> SemanticIds:
    """A run's semantic IDs: loaded from `cfg.codes` when set, else built from `item_embeddings`.

    Returns SemanticIds over the run's items (internal order); raises ConfigError / DataError as those do."""
    if cfg.codes:
        return SemanticIds.load(Path(cfg.codes))
    return tokenize(item_embeddings(cfg, items, item_ids, collab_embeddings), cfg)


def prepared_outputs(sid: SemanticIds) -> dict:
    """What a semantic-ID model's `prepare` returns about its codes: the report (without the tokenizer), its
    printable form, and the files the run directory keeps (codes and report)."""
    return {
        "semantic_ids": {k: v for k, v in sid.report.items() if k != "tokenizer"},
        "report": format_report(sid.report),
        "files": {**sid.to_files(), "semantic_ids_report.json": json_text(sid.report, indent=1).encode()},
    }
