"""sid_llm's prompts and batches on their own, without a language model (`genrec.models.sid_llm_prompts`)."""

import numpy as np
import torch

from genrec.config import load_config
from genrec.data.split import Csr
from genrec.models.sid_llm_prompts import WORDS, Prompts, collate

EOS = 2
WORD_IDS = {key: [100 + i] for i, key in enumerate(WORDS)}  # one made-up token per fixed word


def prompts(*over: str) -> Prompts:
    """5 items; item i's code tokens are (10 i, 10 i + 1), items 1-3 have the title tokens (50 + i, 60 + i)."""
    cfg = load_config("sid_llm", ["model.max_len=3", *over]).model
    codes = np.array([[0, 0]] + [[10 * i, 10 * i + 1] for i in range(1, 6)])
    titles = np.full((6, 4), -1)
    titles[1:4, :2] = [[51, 61], [52, 62], [53, 63]]
    return Prompts(cfg, WORD_IDS, codes, titles, EOS)


def test_a_history_prompt_holds_the_newest_items_codes_and_titles_between_the_fixed_words():
    p = prompts("model.history_titles=true")
    history, after, sep = WORD_IDS["history"], WORD_IDS["next"], WORD_IDS["sep"]
    got = p.history([0, 0, 1, 2, 3, 5])  # padding skipped; max_len 3 keeps 2, 3, 5
    assert got == history + [20, 21, 52, 62] + sep + [30, 31, 53, 63] + sep + [50, 51] + sep + after
    assert prompts().history([4]) == history + [40, 41] + after  # no titles unless asked


def test_training_examples_are_every_cut_point_plus_the_weighted_alignment_examples():
    p = prompts("model.title_to_codes_weight=1", "model.codes_to_title_weight=0.5")
    train = Csr(np.array([0, 3, 5]), np.array([1, 2, 3, 4, 5]))  # sequences 1 2 3 and 4 5
    examples = p.training_examples(train, np.random.default_rng(0))
    assert examples[:3] == [
        (p.history([1]), [20, 21]),
        (p.history([1, 2]), [30, 31]),
        (p.history([4]), [50, 51]),
    ]
    to_codes, to_title = examples[3:6], examples[6:]
    assert len(to_codes) == 3 and len(to_title) == 2  # weights 1 and 0.5 of 3 recommendation examples
    for prompt, target in to_codes:
        item = target[0] // 10
        assert item in (1, 2, 3) and prompt == WORD_IDS["title"] + p.title_of(item) + WORD_IDS["codes"]
    for prompt, target in to_title:
        item = prompt[1] // 10
        assert target == p.title_of(item) + [EOS]


def test_a_batch_is_left_padded_and_labels_only_the_targets():
    batch = collate([([7, 8], [9]), ([5], [6, 4])], pad=0)
    assert batch.input_ids.tolist() == [[7, 8, 9], [5, 6, 4]]
    batch = collate([([7, 8, 3], [9]), ([5], [6])], pad=0)
    assert batch.input_ids.tolist() == [[7, 8, 3, 9], [0, 0, 5, 6]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert batch.labels.tolist() == [[-100, -100, -100, 9], [-100, -100, -100, 6]]
    assert len(batch) == 2 and batch.input_ids.dtype == torch.long
