"""Trie-constrained beam search inside Hugging Face `generate` (sid_llm, `genrec.models.sid_llm`): a logits
processor that only lets code tokens leading to a real item through, and a generation config that sets every
decoding setting in code, so that a model's own `generation_config.json` changes nothing.

The generated tokens are one item's codes, level after level; level l's code c is token starts[l] + c. The beams'
codes are then read back as items (`items_of`) and turned into lists of k distinct items (`distinct_top`).
"""

from __future__ import annotations

import torch

from genrec.decoding.beam import CodeTrie


def constrained_generation_config(depth: int, beams: int, returned: int, pad: int, eos: int):
    """Every setting of a beam search of `beams` beams that writes exactly `depth` tokens and returns the best
    `returned` sequences with their summed log-probabilities (`sequences_scores`), explicit: nothing is left for
    a model's generation_config.json to fill in."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=depth,
        min_new_tokens=depth,
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
        pad_token_id=pad,
        eos_token_id=eos,
        bos_token_id=None,
        decoder_start_token_id=None,
    )


class TrieConstraint:
    """Logits processor of Hugging Face `generate`: at generated position t only the code tokens of level t
    that extend the beam's prefix towards a real (and, with exclusions, still allowed) item keep their score;
    every other token gets -inf. Rows are beams, user-major (`beams` rows per user). `starts[level]` is the
    token id of level's code 0; the trie is on the scores' device; `excluded` comes from
    `CodeTrie.excluded_leaves` (None = nothing excluded)."""

    def __init__(self, trie: CodeTrie, starts: list[int], prompt_len: int, beams: int, excluded) -> None:
        self.trie, self.starts, self.prompt_len, self.beams = trie, starts, prompt_len, beams
        self.excluded = excluded

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """input_ids [N, prompt_len + t], scores [N, V] -> the constrained scores [N, V]."""
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


def items_of(trie: CodeTrie, codes: torch.Tensor) -> torch.Tensor:
    """[..., depth] codes -> item ids (0 where no item has those codes); `trie` on the codes' device."""
    flat = codes.reshape(-1, trie.depth)
    node = torch.zeros(len(flat), dtype=torch.long, device=codes.device)
    for level in range(trie.depth):
        node = trie.child(node, level, flat[:, level])
    items = torch.where(node >= 0, trie.leaf_item[node.clamp(min=0)], 0)
    return items.view(codes.shape[:-1])


def distinct_top(items, scores, k: int, exclude, popularity: torch.Tensor, fill_score: float):
    """Beams' items [B, W] (0 = none) and scores [B, W], best first -> the first k distinct real items of each
    row not in `exclude` ([B, M], 0 = none) and their scores [B, k], completed with the most `popularity`
    ([n_items + 1]) items not yet listed nor excluded at `fill_score`; -inf where the catalogue runs out. A walk
    over each row's beams on the host, deliberately (a few dozen ids per user); the lists go back to the beams'
    device."""
    device = items.device
    items, scores = items.cpu(), scores.cpu()
    exclude = exclude.cpu() if exclude is not None else None
    out_items = torch.zeros(len(items), k, dtype=torch.long)
    out_scores = torch.full((len(items), k), fill_score)
    order = torch.argsort(popularity[1:].cpu(), descending=True, stable=True) + 1
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
                    values.append(fill_score)
        out_items[row, : len(chosen)] = torch.tensor(chosen, dtype=torch.long)
        out_scores[row, : len(values)] = torch.tensor(values)
        if len(chosen) < k:  # the exclusions leave fewer than k items in the catalogue
            out_scores[row, len(chosen) :] = float("-inf")
    return out_items.to(device), out_scores.to(device)
