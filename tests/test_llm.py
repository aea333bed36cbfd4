"""The LLM client layer: a tiny random LLaMA on disk for the transformers backend, and small local HTTP servers
for the OpenAI-compatible backend (a correct one, a slow one, one that returns malformed JSON, one that fails
then recovers, and a closed port)."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from genrec.errors import ConfigError, GenrecError
from genrec.llm import LLM, UNCHOSEN, LLMConfig, LLMError, build_llm, register_backend
from genrec.llm.base import match_option, truncate_at_stop

WORDS = "the user bought lipstick mascara shampoo soap cream makeup hair skin next is : - , .".split()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    vocab = {"<unk>": 0, "<pad>": 1, "<s>": 2, "</s>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, eos_token_id=3,
        pad_token_id=1, bos_token_id=2,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def local(folder, tmp_path, **kw):
    return build_llm(LLMConfig(model=str(folder), cache_dir=str(tmp_path / "cache"), **kw))


def test_greedy_completions_are_batched_deterministic_and_counted(tiny_llama, tmp_path):
    llm = local(tiny_llama, tmp_path, batch_size=4, cache=False)
    prompts = ["the user bought lipstick", "shampoo soap", "the user bought lipstick mascara cream"]
    batched = llm.complete(prompts, max_tokens=5)
    alone = [llm.complete([p], max_tokens=5)[0] for p in prompts]
    assert [c.text for c in batched] == [c.text for c in alone]  # left padding changes nothing
    assert [c.prompt_tokens for c in batched] == [4, 2, 6]
    assert all(0 <= c.completion_tokens <= 5 and not c.cached for c in batched)
    assert any(c.completion_tokens > 0 for c in batched)
    assert llm.usage.calls == 6 and llm.usage.cache_hits == 0
    assert llm.usage.prompt_tokens == 24
    assert llm.usage.completion_tokens == sum(c.completion_tokens for c in batched + alone)


def test_choice_logprobs_are_the_option_token_logprobs(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm = local(tiny_llama, tmp_path, cache=False, batch_size=2)
    prompt = "the user bought lipstick mascara . next is :"
    options = [" makeup", " hair skin", " soap cream shampoo", " next"]  # mixed lengths: the batched path
    got = llm.choice_logprobs(prompt, options)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    for option, value in zip(options, got):
        head = tok(prompt)["input_ids"]
        tail = tok(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([head + tail])).logits[0], -1)
        want = sum(float(logp[len(head) - 1 + j, t]) for j, t in enumerate(tail))
        assert value == pytest.approx(want, abs=1e-4)
    single = llm.choice_logprobs(prompt, [" makeup", " hair", " soap"])  # one forward pass
    assert single[0] == pytest.approx(got[0], abs=1e-4)
    assert np.all(single < 0)
    with pytest.raises(ValueError):
        llm.choice_logprobs(prompt, [])


def test_cache_on_disk_answers_a_new_client_without_loading_the_model(tiny_llama, tmp_path):
    first = local(tiny_llama, tmp_path)
    a = first.complete(["the user bought"], max_tokens=4)[0]
    s = first.choice_logprobs("the user bought", [" soap", " cream"])
    assert list((tmp_path / "cache").rglob("*.json"))
    second = local(tiny_llama, tmp_path)
    b = second.complete(["the user bought"], max_tokens=4)[0]
    assert b.cached and b.text == a.text and b.completion_tokens == a.completion_tokens
    assert np.array_equal(second.choice_logprobs("the user bought", [" soap", " cream"]), s)
    assert second._model is None  # answered from disk
    assert second.usage.cache_hits == 2 and second.usage.total_tokens == first.usage.total_tokens
    # Another length or decoding setting is another key.
    assert not second.complete(["the user bought"], max_tokens=3)[0].cached
    third = local(tiny_llama, tmp_path, temperature=0.7)
    assert not third.complete(["the user bought"], max_tokens=4)[0].cached


def test_constrained_choice_and_its_parsing(tiny_llama, tmp_path):
    llm = local(tiny_llama, tmp_path, choice="generate", cache=False)
    scores = llm.choice_logprobs("the user bought", [" soap", " cream", " hair"])
    assert scores.shape == (3,)
    assert (sorted(scores.tolist()) == [UNCHOSEN, UNCHOSEN, 0.0]) or np.allclose(scores, -np.log(3))
    assert match_option(" 2. cream", ["soap", "cream"]) == 1
    assert match_option("I think Skin Care", ["Hair", "Skin Care", "Skin"]) == 1  # longest named option
    assert match_option("9", ["a", "b"]) is None and match_option("nothing", ["a", "b"]) is None
    assert truncate_at_stop("abc\ndef", ["\n"]) == ("abc", True)
    assert truncate_at_stop("abc", ["x"]) == ("abc", False)


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="base_url"):
        build_llm(LLMConfig(backend="openai"))
    with pytest.raises(ConfigError, match="neither"):
        build_llm(LLMConfig(model=str(tmp_path)))
    with pytest.raises(ConfigError, match="GGUF"):
        build_llm(LLMConfig(model=str(tmp_path / "x.gguf")))
    with pytest.raises(ValueError):
        LLMConfig(unknown=1)


def test_a_registered_backend_is_chosen_by_its_name_and_others_are_refused(monkeypatch):
    from genrec.config import load_config
    from genrec.llm.config import BACKENDS

    with pytest.raises(ConfigError) as err:
        load_config("llm_tree", ["model.llm.backend=scripted"])
    assert (
        str(err.value)
        == "config model.llm.backend: unknown LLM backend 'scripted'; known: openai, transformers"
    )

    class Scripted(LLM):
        backend = "scripted"

        def _choice_logprobs(self, prompt, options):
            return [-float(len(o)) for o in options], 3, 0

    monkeypatch.setitem(BACKENDS, "scripted", None)  # removed again after the test
    assert register_backend(Scripted) is Scripted
    llm = build_llm(
        load_config("llm_tree", ["model.llm.backend=scripted", "model.llm.cache=false"]).model.llm
    )
    assert type(llm) is Scripted
    assert llm.choice_logprobs("p", ["ab", "a"]).tolist() == [-2.0, -1.0] and llm.usage.prompt_tokens == 3
    with pytest.raises(ConfigError, match="needs a name"):
        register_backend(type("Nameless", (LLM,), {}))


# -- OpenAI-compatible backend against small local HTTP servers ---------------------------------------------


def completion_body(request: dict) -> dict:
    """A well-formed /v1/completions answer; with echo, one 'token' per character of the prompt, each with
    log-probability -(its index) / 100, so the expected option score is known."""
    prompt = request["prompt"]
    usage = {"prompt_tokens": len(prompt), "completion_tokens": 1, "total_tokens": len(prompt) + 1}
    body = {"id": "x", "object": "text_completion", "created": 0, "model": request["model"], "usage": usage}
    if request.get("echo"):
        offsets = list(range(len(prompt))) + [len(prompt)]
        logprobs = [None] + [-i / 100 for i in range(1, len(prompt))] + [-0.5]
        choice = {"text": prompt + "!", "index": 0, "finish_reason": "length",
                  "logprobs": {"tokens": list(prompt) + ["!"], "token_logprobs": logprobs,
                               "text_offset": offsets, "top_logprobs": None}}  # fmt: skip
    else:
        choice = {"text": " hello\nworld", "index": 0, "finish_reason": "length", "logprobs": None}
    body["choices"] = [choice]
    return body


class FakeServer:
    """`mode`: ok | slow | malformed | flaky (500 on the first request, then ok)."""

    def __init__(self, mode: str) -> None:
        self.mode, self.requests = mode, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                outer.requests += 1
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if outer.mode == "slow":
                    time.sleep(3)
                if outer.mode == "flaky" and outer.requests == 1:
                    self.send_response(500)
                    self.end_headers()
                    return
                data = b'{"choices": [{"text": "cut off' if outer.mode == "malformed" else None
                data = data or json.dumps(completion_body(request)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake(request):
    server = FakeServer(request.param)
    yield server
    server.close()


def remote(base_url, tmp_path, **kw):
    settings = {"timeout_s": 1.0, "max_retries": 1, "backoff_s": 0.01, "cache": False} | kw
    return build_llm(LLMConfig(backend="openai", base_url=base_url, model="m", **settings))


@pytest.mark.parametrize("fake", ["ok"], indirect=True)
def test_openai_backend_completes_scores_options_and_caches(fake, tmp_path):
    llm = remote(fake.base_url, tmp_path, cache=True, cache_dir=str(tmp_path / "c"))
    done = llm.complete(["hi"], max_tokens=4, stop=["\n"])[0]
    assert done.text == " hello" and done.prompt_tokens == 2 and done.completion_tokens == 1
    scores = llm.choice_logprobs("ab", ["cd", "e"])
    # Option "cd" is prompt characters 2 and 3 of "abcd": -(2 + 3) / 100; option "e" is character 2.
    assert scores == pytest.approx([-0.05, -0.02])
    before = fake.requests
    again = remote(fake.base_url, tmp_path, cache=True, cache_dir=str(tmp_path / "c"))
    assert again.complete(["hi"], max_tokens=4, stop=["\n"])[0].cached
    assert again.choice_logprobs("ab", ["cd", "e"]) == pytest.approx(scores)
    assert fake.requests == before  # nothing was sent


@pytest.mark.parametrize("fake", ["flaky"], indirect=True)
def test_openai_backend_retries_a_server_error(fake, tmp_path):
    assert remote(fake.base_url, tmp_path).complete(["hi"])[0].text.startswith(" hello")
    assert fake.requests == 2


@pytest.mark.parametrize("fake", ["slow"], indirect=True)
def test_openai_backend_slow_server_is_a_one_line_error(fake, tmp_path):
    start = time.monotonic()
    with pytest.raises(LLMError, match="failed a completion after 2 tries: timed out") as e:
        remote(fake.base_url, tmp_path, max_retries=1, timeout_s=0.5).complete(["hi"])
    assert "\n" not in str(e.value) and time.monotonic() - start < 5
    assert fake.requests == 2


@pytest.mark.parametrize("fake", ["malformed"], indirect=True)
def test_openai_backend_malformed_json_is_a_one_line_error(fake, tmp_path):
    llm = remote(fake.base_url, tmp_path)
    with pytest.raises(LLMError, match="malformed response") as e:
        llm.complete(["hi"])
    assert "\n" not in str(e.value) and isinstance(e.value, GenrecError)
    with pytest.raises(LLMError, match="malformed"):
        llm.choice_logprobs("ab", ["c"])
    assert llm.usage.calls == 0  # a failure is never recorded as an answer


def test_openai_backend_server_down_is_a_one_line_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(LLMError, match=f"127.0.0.1:{port}/v1 failed a completion after 2 tries") as e:
        remote(f"http://127.0.0.1:{port}/v1", tmp_path).complete(["hi"])
    assert "\n" not in str(e.value)
