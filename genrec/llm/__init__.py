"""LLM clients: one interface (`LLM`: complete / chat / choice_logprobs, token usage, a response cache) over a
local `transformers` causal LM and any OpenAI-compatible server. See docs/llm.md."""

from __future__ import annotations

from genrec.llm.base import LLM, UNCHOSEN, Completion, LLMError, Usage
from genrec.llm.config import LLMConfig


def build_llm(cfg: LLMConfig | None = None) -> LLM:
    """The client of `cfg.backend` (default: local SmolLM2-135M-Instruct through transformers). Models load
    lazily, on the first call. Raises ConfigError for a missing model, package or server URL."""
    cfg = cfg or LLMConfig()
    if cfg.backend == "openai":
        from genrec.llm.openai_server import OpenAILLM

        return OpenAILLM(cfg)
    from genrec.llm.local import TransformersLLM

    return TransformersLLM(cfg)


__all__ = ["LLM", "LLMConfig", "LLMError", "Completion", "UNCHOSEN", "Usage", "build_llm"]
