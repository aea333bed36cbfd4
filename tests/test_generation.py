"""TIGER's T5 backbone and log-likelihood, the session beam search, the onerec model and session recall."""

import itertools

import numpy as np
import pytest
import torch

from genrec.config import EvalConfig, load_config
from genrec.data.batching import HistoryBatch, history_batch, pad_left
from genrec.data.registry import load_dataset
from genrec.data.split import leave_one_out, temporal
from genrec.decoding.beam import CodeTrie, constrained_beam_search, constrained_session_search
from genrec.errors import ConfigError, DataError
from genrec.eval.sessions import evaluate_sessions, true_sessions
from genrec.items.semantic_ids import tokenize
from genrec.models import build_model
from genrec.models.base import Resources
from genrec.objectives import build_objective

SMALL = ["model.dim=32", "model.heads=2", "model.tokenizer.codebook_size=6", "model.precision=float32"]


@pytest.fixture(scope="module")
def ml100k():
    return leave_one_out(load_dataset("ml-100k").encode())


@pytest.fixture(scope="module")
def ml100k_temporal():
    return temporal(load_dataset("ml-100k").encode())


def small_model(split, over, seed=0):
    cfg = load_config("tiger", [*SMALL, *over]).model
    torch.manual_seed(seed)
    model = build_model(cfg, split.n_items, split.n_users)
    x = np.random.default_rng(seed).normal(size=(split.n_items, 8)).astype(np.float32)
    model.set_semantic_ids(tokenize(x, cfg.tokenizer))
    return model


def test_batch(examples, rows, max_len):
    hist = examples.history
    batch = history_batch(hist.offsets, hist.items, rows, max_len)
    seen = torch.from_numpy(pad_left(hist.offsets, hist.items, rows, None)).long()
    return batch, seen


test_batch.__test__ = False  # a helper, not a test


def train_steps(model, split, steps, lr=3e-3):
    objective = build_objective(model.cfg.default_objective, model)
    opt = torch.optim.AdamW(model.parameters(), lr)
    model.train()
    losses = []
    for i, batch in enumerate(model.training_batches(split, np.random.default_rng(0), 128)):
        if i == steps:
            break
        loss = objective(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model.eval(), losses


# --- TIGER on T5 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("history_tokens", ["codes", "items"])
def test_t5_backbone_trains_and_decodes_real_distinct_items_for_every_user(ml100k, history_tokens):
    model = small_model(ml100k, ["model.backbone=t5", f"model.history_tokens={history_tokens}"])
    assert type(model.t5).__name__ == "T5ForConditionalGeneration" and not hasattr(model, "tok_emb")
    model, losses = train_steps(model, ml100k, 30)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1
    rows = np.arange(len(ml100k.test))
    batch, seen = test_batch(ml100k.test, rows, model.cfg.max_len)
    items, scores = model.recommend(batch, 20, exclude=seen)
    assert items.shape == (len(rows), 20) and (items > 0).all() and torch.isfinite(scores).all()
    assert not (items[:, :, None] == seen[:, None, :]).any()
    assert all(len(set(r)) == 20 for r in items.tolist())
    assert (scores[:, 1:] <= scores[:, :-1] + 1e-6).all()


def test_t5_cached_decoding_matches_decoding_the_whole_prefix(ml100k):
    model = small_model(ml100k, ["model.backbone=t5"]).eval()
    model.t5.shared.weight.data *= 3  # sharper than at initialisation, so the beams' order means something
    rows = np.arange(150)
    batch, seen = test_batch(ml100k.test, rows, model.cfg.max_len)
    items, scores = model.recommend(batch, 10, exclude=seen)
    memory, mask = model.encode(batch.items)

    def full_step(prefix, level):
        hidden = model.decode(prefix, memory, mask)[:, :, -1]
        return torch.log_softmax(model.level_logits(hidden, level), -1)

    ref_items, ref_scores, _ = constrained_beam_search(
        full_step, model.trie(), len(rows), model.cfg.beam, 10, seen
    )
    assert torch.allclose(scores, ref_scores, atol=1e-4)
    assert torch.equal(items.sort(1).values, ref_items.sort(1).values)
    assert ref_scores[:, 0].std() > 0.1


@pytest.mark.parametrize("backbone", ["native", "t5"])
def test_log_likelihood_is_the_sum_of_the_codes_log_probabilities(ml100k, backbone):
    model = small_model(ml100k, [f"model.backbone={backbone}"]).eval()
    batch, _ = test_batch(ml100k.test, np.arange(6), model.cfg.max_len)
    items = torch.randint(1, ml100k.n_items + 1, (6, 4))
    got = model.log_likelihood(batch, items)
    assert got.shape == (6, 4) and got.requires_grad
    memory, mask = model.encode(batch.items)
    codes = model.item_codes[items]
    for u in range(6):
        for j in range(4):
            by_hand = 0.0
            for level in range(model.depth):
                prefix = codes[u : u + 1, j : j + 1, :level]
                hidden = model.decode(prefix, memory[u : u + 1], mask[u : u + 1])[0, 0, -1]
                by_hand += float(torch.log_softmax(model.level_logits(hidden, level), -1)[codes[u, j, level]])
            assert got[u, j].item() == pytest.approx(by_hand, abs=1e-4)
    # A distribution over items: the probabilities of all items sum to at most 1.
    every = torch.arange(1, ml100k.n_items + 1).expand(2, -1)
    total = model.log_likelihood(HistoryBatch(batch.items[:2]), every).exp().sum(1)
    assert (total <= 1 + 1e-4).all() and (total > 0.01).all()
    with pytest.raises(DataError):
        model.log_likelihood(batch, torch.zeros(6, 1, dtype=torch.long))


# --- session beam search -----------------------------------------------------------------------------------------


def tiny_trie():
    codes = np.array([[a, b] for a in range(3) for b in range(3)])[:8]  # 8 items, (2, 2) left out
    return codes, CodeTrie(codes, [3, 3])


def table_step(tables):
    def step(prefix, t):
        b, w, _ = prefix.shape
        return tables[t].expand(b, w, -1)

    return step


def test_session_search_of_length_one_is_the_item_beam_search():
    codes, trie = tiny_trie()
    gen = torch.Generator().manual_seed(1)
    tables = [torch.log_softmax(torch.randn(3, generator=gen), -1) for _ in range(2)]
    exclude = torch.tensor([[2, 0], [5, 7]])
    sessions, scores = constrained_session_search(table_step(tables), trie, 2, 4, 1, exclude)
    items, ref, _ = constrained_beam_search(table_step(tables), trie, 2, 4, 4, exclude)
    assert torch.equal(sessions[:, :, 0], items) and torch.allclose(scores, ref)


def test_session_search_with_a_full_beam_finds_the_best_sessions_of_distinct_items():
    """Step tables that depend on the position only: with a beam as wide as every session, the search returns
    exactly the best ordered sessions of distinct, non-excluded items, as enumeration does."""
    codes, trie = tiny_trie()
    gen = torch.Generator().manual_seed(0)
    length = 3
    tables = [torch.log_softmax(2 * torch.randn(3, generator=gen), -1) for _ in range(length * 2)]
    banned = {4}
    sessions, scores = constrained_session_search(
        table_step(tables), trie, 1, 400, length, torch.tensor([[4]])
    )
    best = []
    for combo in itertools.permutations([i for i in range(1, 9) if i not in banned], length):
        s = sum(float(tables[2 * p + lv][codes[i - 1, lv]]) for p, i in enumerate(combo) for lv in range(2))
        best.append((s, combo))
    best.sort(reverse=True)
    got = [tuple(r) for r in sessions[0].tolist() if r[0] > 0]
    assert len(got) == len(best) == 7 * 6 * 5
    assert got[:10] == [c for _, c in best[:10]]
    assert scores[0, : len(best)].tolist() == pytest.approx([s for s, _ in best], abs=1e-5)


def test_session_search_fills_with_zeros_when_too_few_items_remain():
    codes, trie = tiny_trie()
    tables = [torch.zeros(3).log_softmax(-1)] * 6
    exclude = torch.tensor([[1, 2, 3, 4, 5, 6]])  # items 7 and 8 remain
    sessions, scores = constrained_session_search(table_step(tables), trie, 1, 3, 3, exclude)
    assert (sessions == 0).all() and torch.isinf(scores).all()
    sessions, scores = constrained_session_search(table_step(tables), trie, 1, 3, 2, exclude)
    assert sorted(sessions[0, 0].tolist()) == [7, 8] and sorted(sessions[0, 1].tolist()) == [7, 8]
    assert torch.isinf(scores[0, 2]) and (sessions[0, 2] == 0).all()


# --- onerec --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["native", "t5"])
def test_onerec_sessions_hold_real_distinct_items_for_every_user(ml100k_temporal, backbone):
    split = ml100k_temporal
    model = small_model(split, ["model.name=onerec", "model.session_len=3", f"model.backbone={backbone}"])
    assert model.capabilities >= {"generate", "log_likelihood", "session_log_likelihood", "generate_sessions"}
    model, losses = train_steps(model, split, 25)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    rows = np.arange(len(split.test))  # every test user of ML-100K's temporal split
    batch, seen = test_batch(split.test, rows, model.cfg.max_len)
    items, scores = model.generate_sessions(batch, 4, exclude=seen)
    assert items.shape == (len(rows), 4, 3) and (items > 0).all() and torch.isfinite(scores).all()
    ordered = items.sort(-1).values
    assert not (ordered[..., 1:] == ordered[..., :-1]).any()  # no repeat within a session
    assert not (items.reshape(len(rows), -1)[:, :, None] == seen[:, None, :]).any()
    assert (scores[:, 1:] <= scores[:, :-1] + 1e-5).all()
    # The beam's scores are the sessions' log-likelihoods; one-item sessions are the next-item likelihood.
    torch.testing.assert_close(model.session_log_likelihood(batch, items), scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        model.session_log_likelihood(batch, items[:, :, :1]), model.log_likelihood(batch, items[:, :, 0])
    )
    shorter, _ = model.generate_sessions(batch, 2, length=2, exclude=seen)
    assert shorter.shape == (len(rows), 2, 2)
    with pytest.raises(ConfigError):
        model.generate_sessions(batch, 2, length=4)
    # Training sessions are the next events after each cut, padded at the end of a sequence.
    hist, sess = next(model.training_batches(split, np.random.default_rng(0), 64))
    assert sess.shape == (len(hist), 3) and (sess[:, 0] > 0).all()
    assert ((sess[:, 1:] == 0) <= (sess[:, 2:3] == 0) | (sess[:, 1:2] == 0)).all()


def test_onerec_training_sessions_follow_the_sequences(ml100k_temporal):
    """Each example is a window of one training sequence: its (truncated) history, then the next items."""
    split = ml100k_temporal
    model = small_model(split, ["model.name=onerec", "model.session_len=4", "model.max_len=6"])
    train = split.train
    seqs = [train.items[a:b].tolist() for a, b in zip(train.offsets[:-1], train.offsets[1:])]
    hist, sess = next(model.training_batches(split, np.random.default_rng(3), 64))
    for h, s in zip(hist.tolist(), sess.tolist()):
        window = [i for i in h if i > 0] + [i for i in s if i > 0]
        starts_session_end = [i for i in s if i > 0] != s  # padded: the sequence ends there
        found = [
            seq
            for seq in seqs
            for i in range(len(seq) - len(window) + 1)
            if seq[i : i + len(window)] == window and (not starts_session_end or i + len(window) == len(seq))
        ]
        assert found and len([i for i in h if i > 0]) <= 6


# --- session recall ------------------------------------------------------------------------------------------------


class FixedSessions(torch.nn.Module):
    """Generates the same session for everyone (a test double with the `generate_sessions` capability)."""

    capabilities = frozenset({"generate_sessions"})
    max_history = None

    def __init__(self, session):
        super().__init__()
        self.session = torch.tensor(session)

    def can(self, capability):
        return capability in self.capabilities

    def generate_sessions(self, batch, n_beams, length, exclude=None):
        b = len(batch.items)
        items = self.session[:length].expand(b, n_beams, -1).clone()
        return items, torch.zeros(b, n_beams)


def test_session_recall_counts_the_true_next_items_found(ml100k_temporal):
    split = ml100k_temporal
    truth = true_sessions(split, split.test, 3)
    cfg = EvalConfig(session_len=3, session_users=0)
    # A model that always generates user 0's true session: recall 1 for user 0, and exactly the overlap elsewhere.
    model = FixedSessions(truth[0].tolist())
    got = evaluate_sessions(model, split, "test", cfg)
    hist = split.test.history
    expected = []
    for row in range(len(split.test)):
        true = {i for i in truth[row] if i > 0}
        seen = set(hist.items[hist.offsets[row] : hist.offsets[row + 1]].tolist())
        listed = set(truth[0].tolist()) - seen
        if true:
            expected.append(len(listed & true) / len(true))
    assert got["users"] == len(expected) and got["session_recall@3"] == pytest.approx(
        np.mean(expected), abs=1e-6
    )
    assert got["session_recall@3"] > 0
    # With a reward model: the mean reward of the evaluated lists, over the same users (here: items listed).
    calls = []

    def reward(users, hist_len, lists):
        calls.append((len(users), tuple(lists.shape)))
        return (lists > 0).float().sum(-1)

    rewarded = evaluate_sessions(model, split, "test", cfg, reward)
    assert rewarded["session_recall@3"] == got["session_recall@3"] and calls[0][1][1:] == (1, 3)
    listed_counts = [
        len(set(truth[0].tolist()) - {0} - set(hist.items[hist.offsets[r] : hist.offsets[r + 1]].tolist()))
        for r in range(len(split.test))
        if (truth[r] > 0).any()  # the users session recall counts
    ]
    assert rewarded["session_reward@3"] == pytest.approx(np.mean(listed_counts), abs=1e-6)
    with pytest.raises(ConfigError):
        evaluate_sessions(model, leave_one_out(load_dataset("ml-100k").encode()), "test", cfg)


def test_session_recall_of_a_next_item_model_uses_its_top_n(ml100k_temporal):
    split = ml100k_temporal
    model = build_model(load_config("popularity").model, split.n_items, split.n_users)
    model.prepare(split, Resources())
    cfg = EvalConfig(session_len=5, session_users=30)
    got = evaluate_sessions(model, split, "test", cfg)
    assert got["users"] == 30 and got["source"] == "top-5 list" and 0 <= got["session_recall@5"] <= 1


def test_session_metrics_need_a_temporal_split():
    with pytest.raises(ConfigError, match="temporal"):
        load_config("onerec-ml-1m", ["data.split=leave_one_out"])
    assert load_config("onerec-ml-1m").eval.session_len == 5


# --- preference alignment of the generators ------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["native", "t5"])
def test_dpo_moves_tiger_and_onerec_towards_the_chosen(ml100k_temporal, backbone):
    """DPO on TIGER's item log-likelihood (rating pairs) and on onerec's session log-likelihood (a chosen session
    against a rejected one) raises the chosen-minus-rejected margin against the frozen reference."""
    import copy

    from genrec.alignment.pairs import preference_batches, rating_pairs
    from genrec.config import PreferenceDataConfig
    from genrec.objectives import DPO, PreferenceBatch
    from genrec.training.trainer import training_step

    split = ml100k_temporal
    tiger = small_model(split, [f"model.backbone={backbone}", "model.dropout=0.0"])
    pairs = rating_pairs(split, PreferenceDataConfig(anchors_per_user=1), np.random.default_rng(0))
    items = next(preference_batches(split, pairs, 32, tiger.cfg.max_len, np.random.default_rng(0)))
    onerec = small_model(split, ["model.name=onerec", "model.session_len=2", f"model.backbone={backbone}"])
    onerec.eval()  # no dropout: margins start at 0 against the reference
    chosen = torch.stack([items.chosen, items.rejected[:, 0]], 1)  # [B, 2] sessions of two distinct items
    sessions = PreferenceBatch(items.history, chosen, chosen.flip(1)[:, None] % split.n_items + 1)

    for model, batch, ll in [(tiger, items, "log_likelihood"), (onerec, sessions, "session_log_likelihood")]:
        reference = copy.deepcopy(model).eval().requires_grad_(False)

        def margin(model=model, batch=batch, ll=ll) -> float:
            with torch.no_grad():
                lp = getattr(model, ll)(batch.history, batch.item_ids())
            return float((lp[:, 0] - lp[:, 1:].mean(1)).mean())

        start = margin()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(5):
            training_step(model, DPO(beta=0.5), optimizer, batch, 1.0, reference)
        model.eval()
        assert margin() > start + 0.05, ll
