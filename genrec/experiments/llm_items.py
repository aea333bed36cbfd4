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

Every generation is one chat turn through a `genrec.llm` client (`ask`): greedy decoding by default
(deterministic), the client's response cache keyed by prompt, and token counts (prompt and completion tokens,
how many answers came from the cache) so that every table can state its LLM cost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from genrec.errors import DataError
from genrec.items.queries import category_path, clean_generated_query, query_prompt
from genrec.llm import LLM
from genrec.models.base import Capable


def ask(llm: LLM, prompts: list[str], max_tokens: int, chunk: int = 64) -> tuple[list[str], dict]:
    """One chat turn per prompt through a `genrec.llm` client (greedy by default, cached by prompt): the answers
    and their cost: prompts, how many came from the cache, prompt and completion tokens (a cached answer counts
    the tokens it cost when made), seconds spent. Sent `chunk` prompts at a time, so that an interrupted run
    keeps (in the client's cache) what it had generated."""
    t0 = time.perf_counter()
    done = []
    for s in range(0, len(prompts), chunk):
        done += llm.chat(
            [[{"role": "user", "content": p}] for p in prompts[s : s + chunk]], max_tokens=max_tokens
        )
    n = max(len(done), 1)
    usage = {
        "prompts": len(done),
        "from_cache": sum(c.cached for c in done),
        "prompt_tokens": sum(c.prompt_tokens for c in done),
        "completion_tokens": sum(c.completion_tokens for c in done),
        "tokens_per_prompt": round(sum(c.prompt_tokens + c.completion_tokens for c in done) / n, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return [c.text.strip() for c in done], usage


# --- item profiles ---------------------------------------------------------------------------------------------


def profile_prompt(title: str, categories) -> str:
    path = " > ".join(category_path(categories)) or "unknown"
    return (
        "In one or two short sentences, say what this product is and who would want it.\n"
        f"Product: {title}\nCategory: {path}"
    )


def generate_profiles(
    items: pl.DataFrame, item_rows: np.ndarray, llm: LLM, max_tokens: int = 40
) -> tuple[dict[int, str], dict]:
    """Profiles of the items at `item_rows` (0-based rows of a run's item table): ({row: profile}, usage)."""
    rows = [int(r) for r in item_rows]
    titles, cats = items["title"].to_list(), items["categories"].to_list()
    texts, usage = ask(llm, [profile_prompt(titles[r] or "", cats[r]) for r in rows], max_tokens)
    return {r: " ".join(t.split()) for r, t in zip(rows, texts, strict=True)}, usage


def write_profiles(path: Path, items: pl.DataFrame, profiles: dict[int, str]) -> None:
    """JSONL of {item_id, profile} (raw item ids) for `model.profiles`."""
    from genrec.io import write_text

    ids = items["item_id"].to_list()
    lines = [json.dumps({"item_id": ids[r], "profile": p}) for r, p in sorted(profiles.items()) if p]
    write_text(Path(path), "\n".join(lines) + "\n")


# --- search queries --------------------------------------------------------------------------------------------


def generate_queries(
    items: pl.DataFrame, item_ids: np.ndarray, llm: LLM, max_tokens: int = 16
) -> tuple[dict[int, str], dict]:
    """LLM-written queries for internal item ids `item_ids` (1-based): ({item id: query}, usage)."""
    ids = [int(i) for i in item_ids]
    titles, cats = items["title"].to_list(), items["categories"].to_list()
    texts, usage = ask(llm, [query_prompt(titles[i - 1] or "", cats[i - 1]) for i in ids], max_tokens)
    return {i: clean_generated_query(t) for i, t in zip(ids, texts, strict=True)}, usage


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
    llm: LLM,
    recent: int = 5,
    max_tokens: int = 40,
) -> tuple[list[str], dict]:
    """One preference summary per history (internal item ids, oldest first), from its `recent` newest titles."""
    titles = items["title"].to_list()
    prompts = []
    for h in histories:
        if len(h) == 0:
            raise DataError("a preference summary needs a non-empty history")
        prompts.append(summary_prompt([titles[int(i) - 1] or "" for i in h[-recent:]]))
    texts, usage = ask(llm, prompts, max_tokens)
    return [" ".join(t.split()) for t in texts], usage


class SummaryRetriever(Capable, torch.nn.Module):
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
