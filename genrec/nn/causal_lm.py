"""A Hugging Face causal language model as the decoder of sid_llm (`genrec.models.sid_llm`): teacher-forced hidden
states of left-padded token batches, log-probabilities over the whole vocabulary, the KV cache of a batch of
prompts shared by their beams, and `generate`. LoRA adapters (`peft`) take part wherever the LM has them.

Rows are left-padded (every prompt ends where generation starts), so positions count from each row's first real
token, as `generate` counts them.
"""

from __future__ import annotations

import torch


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids [B, T] of left-padded rows (mask [B, T], 1 = token), counted from each row's first token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class CausalLmDecoder:
    """Reads a causal LM module held elsewhere (`lm`: a transformers model, or a peft model around one); the
    weights stay the owner's."""

    def __init__(self, lm) -> None:
        self.lm = lm

    def base(self):
        """The transformers model itself (peft wraps it; its adapters stay in place)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] and mask [B, T] -> last hidden states [B, T, d] (after the final norm); the logits are
        left to `logits`, so that a caller computes them only where it needs them."""
        decoder = self.base().get_decoder()
        return decoder(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., d] hidden states -> [..., V] logits of the output layer."""
        return self.lm.get_output_embeddings()(hidden)

    def prompt_cache(self, ids: torch.Tensor, mask: torch.Tensor, beams: int):
        """The KV cache of every prompt ([B, T] ids and mask) but its last token, computed once per prompt and
        repeated for its `beams` beams (`generate` would otherwise encode each prompt once per beam); None for
        prompts of one token."""
        if ids.shape[1] < 2:
            return None
        out = self.lm(
            input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions(mask)[:, :-1],
            use_cache=True, logits_to_keep=1,
        )  # fmt: skip
        cache = out.past_key_values
        cache.batch_repeat_interleave(beams)
        return cache

    def generate(self, ids: torch.Tensor, mask: torch.Tensor, config, processors: list, cache=None):
        """transformers' `generate` from the prompts [B, T] under `config` (a `GenerationConfig`, which also
        replaces the model's own) with the logits processors `processors`, from `prompt_cache` when given."""
        from transformers import LogitsProcessorList

        lm = self.base()
        lm.generation_config = config
        return lm.generate(
            input_ids=ids,
            attention_mask=mask,
            cache=cache,
            generation_config=config,
            logits_processor=LogitsProcessorList(processors),
        )
