"""A tiny random LLaMA-architecture causal LM with a word-level tokenizer, saved to disk like any Hugging Face
model directory: the LLM paths are tested on it without any download."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = (
    "Purchase history : Next item Item title codes ; . , categories Cat Thing thing Widget Gadget"
).split()


def tiny_llama(folder: Path, extra_words: list[str] = (), hidden: int = 32, seed: int = 0) -> Path:
    """Write a 2-layer LLaMA (hidden size `hidden`, tied embeddings) and its tokenizer into `folder`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2}
    for w in [*WORDS, *extra_words, *map(str, range(100))]:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def plant_hostile_generation_config(folder: Path) -> None:
    """A generation_config.json that would break constrained decoding if it were obeyed: sampling, one beam,
    a forced first token, suppressed tokens, a short length."""
    (Path(folder) / "generation_config.json").write_text(
        json.dumps(
            {
                "do_sample": True,
                "temperature": 5.0,
                "top_k": 2,
                "num_beams": 1,
                "max_new_tokens": 1,
                "length_penalty": 3.0,
                "forced_bos_token_id": 3,
                "forced_eos_token_id": 2,
                "suppress_tokens": list(range(6, 40)),
                "begin_suppress_tokens": [4, 5],
                "repetition_penalty": 10.0,
                "no_repeat_ngram_size": 1,
                "eos_token_id": 2,
                "pad_token_id": 0,
            }
        )
    )
