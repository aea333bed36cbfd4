"""sid_llm's prompts and batches (`genrec.models.sid_llm`), as token ids built directly on the host: code tokens
never go through the text tokenizer, so a prompt is a list of ints put together item by item.

- Recommendation (LC-Rec, Zheng et al. 2024, https://arxiv.org/abs/2311.09049): "Purchase history:" + each
  history item's code tokens (and its title and ";" with `history_titles`) + " Next item:" -> the next item's
  code tokens.
- Alignment (LC-Rec): "Item title:" + title + " Item codes:" -> codes, and "Item codes:" + codes +
  " Item title:" -> title + EOS, mixed in by `title_to_codes_weight` / `codes_to_title_weight` (alignment
  examples per recommendation example).
- Batches are left-padded (`LmBatch`), so that every prompt ends where generation starts; only the target tokens
  carry labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genrec.config.models.sid_llm import SidLlmConfig
from genrec.data.split import Csr

WORDS = {
    "history": "Purchase history:",
    "next": " Next item:",
    "title": "Item title:",
    "codes": " Item codes:",
    "codes_first": "Item codes:",
    "title_after": " Item title:",
    "sep": ";",
}

Example = tuple[list[int], list[int]]  # (prompt tokens, target tokens)


def prompt_words(tokenizer) -> dict[str, list[int]]:
    """The token ids of the prompts' fixed words (`WORDS`) under a Hugging Face tokenizer."""
    return {key: tokenizer(text, add_special_tokens=False)["input_ids"] for key, text in WORDS.items()}


@dataclass
class LmBatch:
    """Left-padded token sequences: ids [B, T], attention mask [B, T], labels [B, T] (-100 = not predicted)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.input_ids)


def collate(examples: list[Example], pad: int) -> LmBatch:
    """(prompt, target) token lists -> a left-padded batch (`pad` fills) whose labels are the target tokens."""
    width = max(len(p) + len(t) for p, t in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    mask = torch.zeros(len(examples), width, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (prompt, target) in enumerate(examples):
        seq = prompt + target
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
        labels[row, width - len(target) :] = torch.tensor(target)
    return LmBatch(ids, mask, labels)


@dataclass
class Prompts:
    """The prompts of one catalogue: `words` (`prompt_words`), each item's code token ids `codes`
    [n_items + 1, depth] and title token ids `titles` [n_items + 1, max_title_tokens] (-1 = none), host arrays."""

    cfg: SidLlmConfig
    words: dict[str, list[int]]
    codes: np.ndarray
    titles: np.ndarray
    eos: int

    def code_tokens(self, item: int) -> list[int]:
        return self.codes[item].tolist()

    def title_of(self, item: int) -> list[int]:
        row = self.titles[item]
        return row[row >= 0].tolist()

    def history(self, history) -> list[int]:
        """The recommendation prompt for a history of internal ids (oldest first, 0 = padding); the newest
        `max_len` items."""
        out = list(self.words["history"])
        for item in [int(i) for i in history if i > 0][-self.cfg.max_len :]:
            out += self.code_tokens(item)
            if self.cfg.history_titles:
                out += self.title_of(item) + self.words["sep"]
        return out + self.words["next"]

    def training_examples(self, train: Csr, rng: np.random.Generator) -> list[Example]:
        """Every (history prefix -> next item) pair of the training sequences (or `examples_per_epoch` of them,
        drawn without replacement), then the alignment examples of items with a title."""
        counts = np.maximum(train.lengths() - 1, 0)
        rows = np.repeat(np.arange(len(counts)), counts)
        within = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        end = train.offsets[rows] + 1 + within  # target position; history is [first, end)
        first = np.maximum(train.offsets[rows], end - self.cfg.max_len)
        chosen = np.arange(len(end))
        if self.cfg.examples_per_epoch and self.cfg.examples_per_epoch < len(end):
            chosen = np.sort(rng.choice(len(end), self.cfg.examples_per_epoch, replace=False))
        examples = [
            (self.history(train.items[first[j] : end[j]]), self.code_tokens(int(train.items[end[j]])))
            for j in chosen
        ]
        return examples + self.alignment_examples(len(examples), rng)

    def alignment_examples(self, n: int, rng: np.random.Generator) -> list[Example]:
        """LC-Rec's title -> codes and codes -> title examples, `title_to_codes_weight` and
        `codes_to_title_weight` times `n`, of items drawn with replacement among those with a title."""
        titled = np.flatnonzero((self.titles[1:] >= 0).any(1)) + 1
        if not len(titled):
            return []
        words, out = self.words, []
        for item in rng.choice(titled, int(round(self.cfg.title_to_codes_weight * n))):
            prompt = words["title"] + self.title_of(int(item)) + words["codes"]
            out.append((prompt, self.code_tokens(int(item))))
        for item in rng.choice(titled, int(round(self.cfg.codes_to_title_weight * n))):
            prompt = words["codes_first"] + self.code_tokens(int(item)) + words["title_after"]
            out.append((prompt, self.title_of(int(item)) + [self.eos]))
        return out
