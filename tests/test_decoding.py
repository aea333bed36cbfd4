"""Decoding: the trie-constrained beam search and cold places return min(k, items left) valid distinct items, by hand
and against brute force on random tries; TIGER's lists after a long history."""

import numpy as np
import pytest
import torch

from genrec.config import load_config
from genrec.data.batching import HistoryBatch
from genrec.decoding.beam import CodeTrie, constrained_beam_search
from genrec.decoding.cold_places import keep_cold_places
from genrec.items.semantic_ids import SemanticIds
from genrec.models import build_model

NEG = float("-inf")


def forty_item_codes():
    """40 items, 2 levels of 4 codes + a separation code: item i (1..40) -> ((i-1) % 4, (i-1) // 4 % 4, (i-1) // 16)."""
    i = np.arange(40)
    return np.stack([i % 4, i // 4 % 4, i // 16], 1), [4, 4, 3]


def test_beam_prunes_prefixes_whose_items_are_all_excluded():
    """The model prefers code 0 at both levels, so the 5 best prefixes are (0, 0), (0, 1), (0, 2), (0, 3),
    (1, 0) or alike; the history holds every item under codes 0, 1 and 2 of the first level and some more: 7
    items are left, all under first code 3. Beam 5, k 5 must still find 5 of them (it found fewer before)."""
    codes, sizes = forty_item_codes()
    trie = CodeTrie(codes, sizes)
    pref = [torch.log_softmax(-torch.arange(s, dtype=torch.float32) * 3, 0) for s in sizes]

    def step(prefix, level):
        return pref[level].expand(prefix.shape[0], prefix.shape[1], -1)

    left = [4, 8, 12, 16, 20, 24, 28]  # items with first code 3 and second code 0 or 1 (or separation 1)
    history = torch.tensor([[i for i in range(1, 41) if i not in left]])  # 33 items
    items, scores, _ = constrained_beam_search(step, trie, 1, 5, 5, history)
    assert sorted(items[0].tolist()) == sorted(items[0].unique().tolist()) and len(items[0].unique()) == 5
    assert set(items[0].tolist()) <= set(left) and torch.isfinite(scores).all()
    # k beyond what is left: every one of the 7, then empty slots
    items, scores, _ = constrained_beam_search(step, trie, 1, 5, 10, history)
    assert sorted(items[0, :7].tolist()) == left and items[0, 7:].tolist() == [0, 0, 0]
    assert torch.isinf(scores[0, 7:]).all()
    # without exclusion it is the plain beam search: the 5 items with the most zeros in their codes first
    items, _, _ = constrained_beam_search(step, trie, 1, 5, 1)
    assert items[0].tolist() == [1]


def test_tiger_returns_min_k_items_left_after_its_history():
    """An untrained TIGER on 40 items (2 x 4 codes + separation), beam 5, k 5, after a 33-item history made of
    the items it ranks highest: 5 unseen items (7 exist), not fewer; k 10 gives all 7."""
    sets = ["model.dim=16", "model.heads=2", "model.tokenizer.levels=2", "model.tokenizer.codebook_size=4"]
    cfg = load_config("tiger", [*sets, "model.beam=5", "model.precision=float32"]).model
    torch.manual_seed(0)
    model = build_model(cfg, 40, 1).eval()
    model.tok_emb.weight.data *= 8
    codes, sizes = forty_item_codes()
    model.set_semantic_ids(SemanticIds(codes, sizes))
    batch = HistoryBatch(items=torch.tensor([[1, 2, 3]]), users=torch.tensor([0]), timestamps=None)
    ranked, _ = model.recommend(batch, 40)  # k = 40 widens the beam to the whole catalogue
    history = ranked[:, :33]
    for k, expected in ((5, 5), (10, 7)):
        items, scores = model.recommend(batch, k, exclude=history)
        found = items[0][items[0] > 0]
        assert len(found) == expected and len(found.unique()) == expected
        assert not torch.isin(found, history[0]).any() and torch.isfinite(scores[0, :expected]).all()


def test_cold_places_are_given_to_warm_items_when_the_cold_ones_are_excluded():
    """Share 0.5, k 4: places 2 and 4 are cold. Row 0 has only one cold item left: it takes place 2 and warm
    items fill places 1, 3, 4. Row 1 has no warm item left: cold items fill every place."""
    warm = torch.tensor([[10, 11, 12, 13], [0, 0, 0, 0]])
    warm_s = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [NEG, NEG, NEG, NEG]])
    cold = torch.tensor([[20, 0, 0, 0], [20, 21, 22, 23]])
    cold_s = torch.tensor([[-5.0, NEG, NEG, NEG], [-5.0, -6.0, -7.0, -8.0]])
    items, scores = keep_cold_places(warm, warm_s, cold, cold_s, 0.5, 4)
    assert items.tolist() == [[10, 20, 11, 12], [20, 21, 22, 23]]
    assert scores[0].tolist() == [-1.0, -5.0, -2.0, -3.0]
    full, _ = keep_cold_places(warm[:1, :2], warm_s[:1, :2], cold[1:, :2], cold_s[1:, :2], 0.5)
    assert full.tolist() == [[10, 20, 11, 21]]


@pytest.mark.parametrize("seed", range(25))
def test_beam_search_returns_min_k_allowed_items_on_random_tries(seed):
    """Random codes (2 levels of 3 + separation), random per-user exclusions, random model: the list holds
    min(k, items left) distinct allowed items; with a beam as wide as the catalogue it is the exact top-k of the
    allowed items by total log-probability (brute force over every item)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 19))
    pairs = rng.permutation(np.array([(a, b) for a in range(3) for b in range(3)] * 2))[:n]
    sep = np.array([sum((pairs[:i] == pairs[i]).all(1)) for i in range(n)])
    codes, sizes = np.column_stack([pairs, sep]), [3, 3, 2]
    trie = CodeTrie(codes, sizes)
    batch = 3
    tables = [torch.log_softmax(torch.from_numpy(rng.normal(size=(batch, s)) * 3).float(), -1) for s in sizes]

    def step(prefix, level):
        return tables[level][:, None, :].expand(-1, prefix.shape[1], -1)

    exclude = torch.from_numpy(rng.integers(0, n + 1, (batch, int(rng.integers(1, n + 2)))))
    total = [
        {i + 1: sum(float(tables[d][u, codes[i, d]]) for d in range(3)) for i in range(n)}
        for u in range(batch)
    ]
    for k in sorted({1, 2, n // 2 + 1, n, n + 2}):
        for beam in (1, n):
            items, scores, _ = constrained_beam_search(step, trie, batch, beam, k, exclude)
            for u in range(batch):
                allowed = [i for i in range(1, n + 1) if i not in exclude[u].tolist()]
                got = [i for i in items[u].tolist() if i > 0]
                assert len(got) == min(k, len(allowed)) and len(set(got)) == len(got), (seed, k, beam, u)
                assert set(got) <= set(allowed) and items[u, len(got) :].eq(0).all()
                if beam >= n:
                    best = sorted(allowed, key=lambda i: -total[u][i])[:k]
                    assert [round(total[u][i], 4) for i in got] == [round(total[u][i], 4) for i in best]
