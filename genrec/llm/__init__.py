"""LLM clients: one interface (`LLM`: complete / chat / choice_logprobs, token usage, a response cache) over a
local `transformers` causal LM and any OpenAI-compatible server, and any backend added with `register_backend`.
See docs/llm.md and docs/extending.md."""

from __future__ import annotations

import importlib

from genrec.errors import ConfigError
from genrec.llm.base import LLM, UNCHOSEN, Completion, LLMError, Usage
from genrec.llm.config import BACKENDS, LLMConfig


def build_llm(cfg: LLMConfig | None = None) -> LLM:
    """The client of `cfg.backend` (default: local SmolLM2-135M-Instruct through transformers). Models load
    lazily, on the first call. Raises ConfigError for a missing model, package or server URL."""
    cfg = cfg or LLMConfig()
    cls = BACKENDS[cfg.backend]
    if isinstance(cls, str):
        module, _, name = cls.partition(":")
        cls = getattr(importlib.import_module(module), name)
    return cls(cfg)


def register_backend(cls: type[LLM]) -> type[LLM]:
    """Class decorator: make an `LLM` subclass the client of `llm.backend: <cls.backend>` in any config of this
    process. Raises ConfigError when `cls.backend` is empty."""
    if not cls.backend:
        raise ConfigError(f"{cls.__name__}.backend needs a name")
    BACKENDS[cls.backend] = cls
    return cls


__all__ = ["LLM", "LLMConfig", "LLMError", "Completion", "UNCHOSEN", "Usage", "build_llm", "register_backend"]
