"""Any OpenAI-compatible HTTP server (llama.cpp's `llama_cpp.server`, vLLM, a hosted API) through the official
`openai` client.

- completions and chat completions, greedy by default;
- option log-probabilities from the completions endpoint with `echo` (the server returns the log-probability of
  every prompt token; the option's tokens are found by their text offsets); servers that refuse `echo` with
  log-probabilities need `llm.choice=generate` (a constrained choice);
- every request has a timeout; a connection error, a timeout, a 5xx / 429 answer or a malformed body is retried
  `max_retries` times with exponential backoff, then raised as one line (`LLMError`): a failed call never
  becomes an answer.
"""

from __future__ import annotations

import os
import time

from genrec.errors import ConfigError
from genrec.llm.base import LLM, Completion, LLMError, truncate_at_stop
from genrec.llm.config import LLMConfig

# A body that is not JSON raises ValueError; a JSON body of the wrong shape one of the others.
BAD_SHAPE = (ValueError, KeyError, TypeError, AttributeError, IndexError)


class Malformed(Exception):
    """A response that parsed but lacks what the call needs."""


class OpenAILLM(LLM):
    backend = "openai"
    gives_logprobs = True

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__(cfg)
        if not cfg.base_url:
            raise ConfigError("the openai LLM backend needs llm.base_url (e.g. http://127.0.0.1:8000/v1)")
        try:
            import openai
        except ImportError:
            raise ConfigError("the openai LLM backend needs `pip install openai`") from None
        self._openai = openai
        # Retries are ours (they also cover malformed bodies); the client's own are switched off.
        self.client = openai.OpenAI(
            base_url=cfg.base_url,
            api_key=os.environ.get(cfg.api_key_env) or "none",
            timeout=cfg.timeout_s,
            max_retries=0,
        )

    def identity(self) -> str:
        return f"{self.backend}:{self.cfg.base_url}:{self.cfg.model}"

    def _request(self, what: str, call):
        """`call()` with retries; returns its result or raises LLMError naming the server and the cause."""
        o = self._openai
        retryable = (o.APIConnectionError, o.APITimeoutError, o.InternalServerError, o.RateLimitError)
        for attempt in range(self.cfg.max_retries + 1):
            try:
                return call()
            except (o.AuthenticationError, o.PermissionDeniedError, o.NotFoundError, o.BadRequestError) as e:
                raise LLMError(f"LLM server {self.cfg.base_url} refused {what}: {_short(e)}") from None
            except retryable as e:
                cause = "timed out" if isinstance(e, o.APITimeoutError) else _short(e)
            except (Malformed, o.APIResponseValidationError, *BAD_SHAPE) as e:
                cause = f"malformed response ({_short(e)})"
            except o.APIError as e:
                cause = _short(e)
            if attempt < self.cfg.max_retries:
                time.sleep(self.cfg.backoff_s * 2**attempt)
        tries = self.cfg.max_retries + 1
        raise LLMError(f"LLM server {self.cfg.base_url} failed {what} after {tries} tries: {cause}")

    def _settings(self) -> dict:
        return {"temperature": self.cfg.temperature, "top_p": self.cfg.top_p, "seed": self.cfg.seed}

    def _complete(self, prompts: list[str], max_tokens: int, stop: list[str]) -> list[Completion]:
        out = []
        for prompt in prompts:

            def call(prompt=prompt):
                r = self.client.completions.create(
                    model=self.cfg.model, prompt=prompt, max_tokens=max_tokens, stop=stop or None,
                    **self._settings(),
                )  # fmt: skip
                return _completion(r.choices[0].text, r.choices[0].finish_reason, r.usage, stop)

            out.append(self._request("a completion", call))
        return out

    def _chat(self, conversations: list[list[dict]], max_tokens: int, stop: list[str]) -> list[Completion]:
        out = []
        for messages in conversations:

            def call(messages=messages):
                r = self.client.chat.completions.create(
                    model=self.cfg.model, messages=messages, max_tokens=max_tokens, stop=stop or None,
                    **self._settings(),
                )  # fmt: skip
                choice = r.choices[0]
                return _completion(choice.message.content, choice.finish_reason, r.usage, stop)

            out.append(self._request("a chat completion", call))
        return out

    def _choice_logprobs(self, prompt: str, options: list[str]) -> tuple[list[float], int, int]:
        scores, prompt_tokens = [], 0
        for option in options:

            def call(option=option):
                # One generated token (max_tokens=0 means "no limit" to some servers); only prompt tokens count.
                r = self.client.completions.create(
                    model=self.cfg.model, prompt=prompt + option, max_tokens=1, echo=True, logprobs=1,
                    temperature=0.0,
                )  # fmt: skip
                lp = r.choices[0].logprobs
                if lp is None or lp.token_logprobs is None or lp.text_offset is None:
                    raise Malformed("no prompt log-probabilities (does the server support echo?)")
                end = len(prompt) + len(option)
                picked = [v for off, v in zip(lp.text_offset, lp.token_logprobs) if len(prompt) <= off < end]
                if not picked or any(v is None for v in picked):
                    raise Malformed("no log-probabilities for the option's tokens")
                used = r.usage.prompt_tokens if r.usage is not None else len(lp.tokens)
                return float(sum(picked)), int(used)

            score, used = self._request("option log-probabilities", call)
            scores.append(score)
            prompt_tokens += used
        return scores, prompt_tokens, 0


def _completion(text, finish_reason, usage, stop: list[str]) -> Completion:
    if not isinstance(text, str):
        raise Malformed("no text in the response")
    text, cut = truncate_at_stop(text, stop)  # a server that ignores `stop` still gives the same answer
    return Completion(
        text=text,
        prompt_tokens=int(usage.prompt_tokens) if usage is not None else 0,
        completion_tokens=int(usage.completion_tokens) if usage is not None else 0,
        finish_reason="stop" if cut else finish_reason,
    )


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    return (text[:160] + "...") if len(text) > 160 else text or type(e).__name__
