"""The OpenAI-compatible backend against a real server: llama.cpp's `llama_cpp.server` running the SmolLM2-135M
GGUF on 127.0.0.1, started here and stopped after. Skipped only where llama-cpp-python cannot be imported
(`pip install 'genrec[llm-server]'`)."""

import numpy as np
import pytest

from genrec.llm import LLMConfig, LLMError, build_llm
from genrec.llm.server import LlamaCppServer, llama_cpp_available

pytestmark = pytest.mark.skipif(
    not llama_cpp_available(), reason="llama-cpp-python is not installed (pip install 'genrec[llm-server]')"
)


@pytest.fixture(scope="module")
def server():
    from genrec.llm.local import smollm2_path

    with LlamaCppServer(smollm2_path(), threads=2) as s:
        yield s


# llama-cpp-python reads echoed log-probabilities one token late unless the prompt starts with the model's BOS
# token, which SmolLM2's GGUF does not add by itself: both backends get it as a prompt prefix.
BOS = "<|im_start|>"


def client(server, tmp_path, **kw):
    settings = {
        "prompt_prefix": BOS,
        "timeout_s": 30.0,
        "max_retries": 1,
        "backoff_s": 0.1,
        "cache_dir": str(tmp_path / "c"),
    } | kw
    return build_llm(
        LLMConfig(backend="openai", base_url=server.base_url, model=server.model_name, **settings)
    )


PROMPT = "A shopper recently bought:\n- Volume mascara black\n- Red lipstick\nThe category of the next purchase is:"
OPTIONS = [" Makeup", " Hair Care", " Skin Care", " Fragrance"]


def test_completions_and_chat_through_the_openai_client(server, tmp_path):
    llm = client(server, tmp_path)
    done = llm.complete(["The capital of France is"], max_tokens=8)[0]
    assert "Paris" in done.text and done.prompt_tokens > 0 and 0 < done.completion_tokens <= 8
    again = llm.complete(["The capital of France is"], max_tokens=8)[0]
    assert again.cached and again.text == done.text  # the second answer comes from the cache
    assert llm.usage.cache_hits == 1 and llm.usage.completion_tokens == 2 * done.completion_tokens
    said = llm.chat([[{"role": "user", "content": "Say hello."}]], max_tokens=8)[0]
    assert said.text.strip() and said.completion_tokens > 0


def test_option_logprobs_match_the_transformers_backend(server, tmp_path):
    served = client(server, tmp_path).choice_logprobs(PROMPT, OPTIONS)
    local = build_llm(LLMConfig(cache=False, prompt_prefix=BOS)).choice_logprobs(PROMPT, OPTIONS)
    assert np.all(served < 0) and np.all(np.isfinite(served))
    # Same GGUF weights (de-quantised by transformers, run quantised by llama.cpp): the same order of options.
    assert list(np.argsort(-served)) == list(np.argsort(-local))
    assert np.abs(served - local).max() < 1.0  # Q4_1 on both sides; llama.cpp's kernels round differently


def test_server_stopped_mid_run_gives_a_one_line_error(tmp_path):
    from genrec.llm.local import smollm2_path

    own = LlamaCppServer(smollm2_path(), threads=1).start()
    llm = client(own, tmp_path, cache=False, timeout_s=5.0)
    assert llm.complete(["Hello"], max_tokens=2)[0].completion_tokens > 0
    own.stop()
    with pytest.raises(LLMError, match="failed a completion after 2 tries") as e:
        llm.complete(["Hello again"], max_tokens=2)
    assert "\n" not in str(e.value)
    with pytest.raises(LLMError, match="option log-probabilities"):
        llm.choice_logprobs(PROMPT, OPTIONS)
