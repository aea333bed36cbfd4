"""One interface over language-model backends, with token accounting and an on-disk response cache.

Every backend answers three questions:
- `complete(prompts, max_tokens, stop) -> list[Completion]`: plain text continuation, one per prompt;
- `chat(conversations, max_tokens, stop) -> list[Completion]`: the same through the model's chat template;
- `choice_logprobs(prompt, options) -> np.ndarray [n]`: log p(option | prompt) for each option continuation
  (natural log, summed over the option's tokens). Where the backend gives no log-probabilities
  (`choice: generate`), the model is asked to name one option instead and the result is a constrained choice:
  0 for the chosen option and `UNCHOSEN` for the others (all equal to -log n when the answer names none).

Every call's token counts (prompt, completion) are added to `usage`; a cached answer counts its original tokens
(what the method costs) and is also counted in `usage.cache_hits` (what was not recomputed). Responses are
cached on disk keyed by (backend, model, kind of call, prompt, settings), written atomically, so a rerun or an
interrupted run resumes for free.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genrec.errors import GenrecError
from genrec.io import write_json
from genrec.llm.config import LLMConfig

UNCHOSEN = -1.0e4  # log-probability given to the options a constrained choice did not name


class LLMError(GenrecError):
    """The LLM backend failed (server down, too slow, malformed answer): never turned into a recommendation."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    cached: bool = False


@dataclass
class Usage:
    """Running totals over every call of one client."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_kind: dict = field(default_factory=dict)

    def add(self, kind: str, prompt_tokens: int, completion_tokens: int, cached: bool) -> None:
        self.calls += 1
        self.cache_hits += int(cached)
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict:
        return {**asdict(self), "total_tokens": self.total_tokens}


def cache_root(cfg: LLMConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return Path(os.environ.get("GENREC_CACHE", Path.home() / ".cache" / "genrec")) / "llm"


class ResponseCache:
    """JSON files under `root`, one per key (first two hex digits as a sub-folder), plus an in-memory copy;
    `root=None` caches nothing."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.memory: dict[str, dict] = {}

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if self.root is None:
            return None
        if key in self.memory:
            return self.memory[key]
        path = self._path(key)
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # absent or unreadable: recompute (writes are atomic, so this is rare)
        self.memory[key] = value
        return value

    def put(self, key: str, value: dict) -> None:
        if self.root is not None:
            self.memory[key] = value
            write_json(self._path(key), value)


class LLM:
    """Base of the backends: caching and accounting here, the model calls in `_complete` / `_chat` /
    `_choice_logprobs` / `_choice_generate` of each backend."""

    backend: str = ""
    gives_logprobs: bool = True  # whether `_choice_logprobs` is available

    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg
        self.usage = Usage()
        self.cache = ResponseCache(cache_root(cfg) if cfg.cache else None)

    # -- identity -------------------------------------------------------------------------------------------
    def identity(self) -> str:
        """What makes two clients give the same answers: backend and model (subclasses add a file hash)."""
        return f"{self.backend}:{self.cfg.model}"

    def _key(self, kind: str, payload) -> str:
        blob = json.dumps([self.identity(), kind, payload, self.cfg.decoding()], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    # -- public calls ---------------------------------------------------------------------------------------
    def complete(
        self, prompts: list[str], max_tokens: int | None = None, stop: list[str] | None = None
    ) -> list[Completion]:
        return self._cached_texts("complete", list(prompts), max_tokens, stop)

    def chat(
        self, conversations: list[list[dict]], max_tokens: int | None = None, stop: list[str] | None = None
    ) -> list[Completion]:
        """`conversations`: lists of {"role": "system" | "user" | "assistant", "content": str}."""
        return self._cached_texts("chat", [list(c) for c in conversations], max_tokens, stop)

    def choice_logprobs(self, prompt: str, options: list[str]) -> np.ndarray:
        """[len(options)] float64 log p(option | prompt); see the module docstring for `choice: generate`.
        Raises LLMError when the backend fails, ValueError for an empty option list."""
        options = list(options)
        if not options:
            raise ValueError("choice_logprobs needs at least one option")
        mode = self.cfg.choice
        if mode == "auto":
            mode = "logprobs" if self.gives_logprobs else "generate"
        if mode == "logprobs" and not self.gives_logprobs:
            raise LLMError(f"{self.identity()} gives no log-probabilities; set llm.choice=generate")
        key = self._key(f"choice_{mode}", [prompt, options])
        hit = self.cache.get(key)
        if hit is None:
            fn = self._choice_logprobs if mode == "logprobs" else self._choice_generate
            scores, prompt_tokens, completion_tokens = fn(prompt, options)
            hit = {"scores": [float(s) for s in scores], "prompt_tokens": prompt_tokens,
                   "completion_tokens": completion_tokens}  # fmt: skip
            self.cache.put(key, hit)
            cached = False
        else:
            cached = True
        self.usage.add("choice", hit["prompt_tokens"], hit["completion_tokens"], cached)
        return np.asarray(hit["scores"], dtype=np.float64)

    # -- helpers --------------------------------------------------------------------------------------------
    def _cached_texts(self, kind: str, inputs: list, max_tokens: int | None, stop: list[str] | None):
        max_tokens = max_tokens or self.cfg.max_tokens
        stop = list(stop or [])
        keys = [self._key(kind, [x, max_tokens, stop]) for x in inputs]
        found = [self.cache.get(k) for k in keys]
        todo = [i for i, hit in enumerate(found) if hit is None]
        if todo:
            fn = self._complete if kind == "complete" else self._chat
            fresh = fn([inputs[i] for i in todo], max_tokens, stop)
            for i, c in zip(todo, fresh):
                found[i] = {"text": c.text, "prompt_tokens": c.prompt_tokens,
                            "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason}  # fmt: skip
                self.cache.put(keys[i], found[i])
        fresh_rows = set(todo)
        out = []
        for i, hit in enumerate(found):
            cached = i not in fresh_rows
            self.usage.add(kind, hit["prompt_tokens"], hit["completion_tokens"], cached)
            out.append(Completion(**hit, cached=cached))
        return out

    def _choice_generate(self, prompt: str, options: list[str]) -> tuple[list[float], int, int]:
        """Constrained choice: list the options, let the model name one (greedy), match its answer to an option
        (exact number, else the longest option text the answer contains)."""
        listed = "\n".join(f"{i + 1}. {o.strip()}" for i, o in enumerate(options))
        ask = f"{prompt}\nOptions:\n{listed}\nAnswer with the number of one option.\nAnswer:"
        done = self._complete([ask], 8, ["\n"])[0]
        chosen = match_option(done.text, options)
        if chosen is None:
            scores = [-float(np.log(len(options)))] * len(options)
        else:
            scores = [0.0 if i == chosen else UNCHOSEN for i in range(len(options))]
        return scores, done.prompt_tokens, done.completion_tokens

    def _complete(self, prompts: list[str], max_tokens: int, stop: list[str]) -> list[Completion]:
        raise NotImplementedError

    def _chat(self, conversations: list[list[dict]], max_tokens: int, stop: list[str]) -> list[Completion]:
        raise NotImplementedError

    def _choice_logprobs(self, prompt: str, options: list[str]) -> tuple[list[float], int, int]:
        raise NotImplementedError


def match_option(answer: str, options: list[str]) -> int | None:
    """The option an answer names: a leading option number, else the longest option text it contains."""
    text = answer.strip()
    digits = ""
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    if digits and 1 <= int(digits) <= len(options):
        return int(digits) - 1
    lowered = text.lower()
    named = [(len(o.strip()), i) for i, o in enumerate(options) if o.strip() and o.strip().lower() in lowered]
    return max(named)[1] if named else None


def truncate_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """`text` cut before the first stop string; whether it was cut."""
    cut = min((p for p in (text.find(s) for s in stop if s) if p >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
