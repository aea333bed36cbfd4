"""HLLM (Chen et al. 2024, https://arxiv.org/abs/2409.12740): an item LLM turns each item's text into a vector, a
user transformer over those vectors predicts the next item, scored against every item's vector.

- Item LLM: any causal LM on disk (`item_lm`: a Hugging Face directory, a .gguf file, or `smollm2`, the packaged
  SmolLM2-135M-Instruct GGUF). Each item's text (title, then categories: `genrec.items.text.item_texts`) is read by
  the LM and its final hidden states are pooled: `last` (the last token's state, which has read the whole text;
  HLLM appends a special token for this) or `mean`. The vectors are computed once in `prepare` and cached on disk,
  keyed by the model's files and the texts (`genrec.items.text.encode_texts`), and kept as a buffer in the weights.
- Item tower: the frozen LLM vector through a two-layer MLP to `dim` (HLLM's projection); no item-ID embedding,
  so an item never seen in training is scored from its text alone: cold items work by construction.
- User LLM: HLLM uses a second pretrained LLM over the item vectors; here a SASRec-style causal transformer
  (`layers`, `dim`), trained from scratch, as HLLM's ablations do for small budgets.
- Objective: softmax over every item's projected vector (full softmax; `loss: sampled_softmax` with logQ for big
  catalogues), where HLLM uses in-batch negatives with InfoNCE.
- Deviation: the item LLM stays frozen (HLLM fine-tunes it end to end, which 2 CPU cores cannot afford over a
  catalogue's texts at every step).
"""

from __future__ import annotations

import numpy as np

from genrec.config.models.hllm import HLLMConfig
from genrec.errors import ConfigError, DataError
from genrec.models.base import register
from genrec.models.textrec import TextRec


def lm_hidden_size(item_lm: str) -> int:
    """The hidden size of a causal LM on disk: its config.json, or a .gguf file's metadata."""
    import json

    from genrec.items.text import is_causal_lm, resolve_encoder

    path = resolve_encoder(item_lm)
    if not is_causal_lm(path):
        raise ConfigError(f"hllm item_lm {item_lm!r} is not a causal language model")
    if path.suffix != ".gguf":
        return int(json.loads((path / "config.json").read_text())["hidden_size"])
    import gguf

    fields = gguf.GGUFReader(str(path)).fields
    arch = fields["general.architecture"]
    size = fields[f"{bytes(arch.parts[arch.data[0]]).decode()}.embedding_length"]
    return int(size.parts[size.data[0]][0])


@register
class HLLM(TextRec):
    config_class = HLLMConfig

    def __init__(self, cfg: HLLMConfig, n_items: int, n_users: int) -> None:
        if cfg.encoder is not None:
            raise ConfigError("hllm reads item text with model.item_lm; leave model.encoder unset")
        if not cfg.text_dim:
            cfg = cfg.model_copy(update={"text_dim": lm_hidden_size(cfg.item_lm)})
        super().__init__(cfg, n_items, n_users)

    def encode_items(self, items) -> tuple[np.ndarray, dict]:
        """The item LLM's pooled states of title + categories; checked for text before the LLM runs."""
        from genrec.items.text import encode_texts, item_texts

        texts = item_texts(items)
        if not any(texts):
            raise DataError("hllm needs item text (titles / categories); this dataset has none")
        emb = encode_texts(texts, self.cfg.item_lm, self.cfg.encode_batch, pooling=self.cfg.pooling)
        notes = {
            "item_lm": self.cfg.item_lm,
            "pooling": self.cfg.pooling,
            "item_vector_dim": int(emb.shape[1]),
        }
        return emb, notes
