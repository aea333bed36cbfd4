"""Long sequences: causal linear attention (chunked = quadratic reference, causal, padding ignored), the linear
option of SASRec and HSTU, and KuaiFormer's compression and multi-interest scoring."""

import numpy as np
import pytest
import torch

from genrec.config import load_config
from genrec.data.batching import HistoryBatch
from genrec.models import build_model
from genrec.nn.linear_attention import EPS, causal_linear_attention, feature_map


def quadratic_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    real: torch.Tensor | None = None,
    normalize: bool = True,
    scale: float = 1.0,
) -> torch.Tensor:
    """The same formula as `causal_linear_attention` with the full [L, L] weight matrix: the reference."""
    length = q.shape[2]
    weights = feature_map(q) @ feature_map(k).transpose(-1, -2)
    allowed = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    if real is not None:
        allowed = allowed & real[:, None, None, :]
    weights = weights * allowed
    out = weights @ v
    return out / (weights.sum(-1, keepdim=True) + EPS) if normalize else out * scale


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("length,chunk", [(37, 8), (64, 64), (5, 16)])
def test_chunked_linear_attention_equals_quadratic_reference(normalize, length, chunk):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, length, 8) for _ in range(3))
    real = torch.ones(2, length, dtype=torch.bool)
    real[0, :4] = False  # left padding
    fast = causal_linear_attention(q, k, v, real, normalize=normalize, scale=0.1, chunk=chunk)
    slow = quadratic_linear_attention(q, k, v, real, normalize=normalize, scale=0.1)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)


def test_linear_attention_is_causal():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 50, 4) for _ in range(3))
    out = causal_linear_attention(q, k, v, chunk=16)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for t in (q2, k2, v2):
        t[:, :, 30:] = torch.randn_like(t[:, :, 30:])  # change only the future of position 29
    out2 = causal_linear_attention(q2, k2, v2, chunk=16)
    torch.testing.assert_close(out[:, :, :30], out2[:, :, :30])
    assert not torch.allclose(out[:, :, 30:], out2[:, :, 30:])


def test_linear_attention_rejects_bad_chunk():
    x = torch.randn(1, 1, 4, 2)
    with pytest.raises(ValueError, match="chunk"):
        causal_linear_attention(x, x, x, chunk=0)


@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_linear_models_are_causal_and_ignore_padding(name):
    cfg = load_config(name, ["model.dim=16", "model.max_len=40", "model.attention=linear", "model.dropout=0"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 30, 5).eval()
    items = torch.randint(1, 31, (2, 40))
    items[0, :10] = 0
    with torch.no_grad():
        h = model.encode(items, None)
        changed = items.clone()
        changed[:, 25:] = torch.randint(1, 31, (2, 15))
        torch.testing.assert_close(model.encode(changed, None)[:, :25], h[:, :25], atol=1e-5, rtol=1e-5)
        # The same history behind more padding scores the same.
        padded = torch.cat([torch.zeros(2, 8, dtype=torch.long), items[:, 8:]], 1)
        padded[1, :8] = 0
        short = HistoryBatch(items[:1, 10:])
        torch.testing.assert_close(
            model.score(short), model.score(HistoryBatch(items[:1])), atol=1e-5, rtol=1e-4
        )
    assert "incremental_state" not in model.capabilities


def test_kuaiformer_groups_grow_with_age():
    from genrec.models.kuaiformer import group_index

    group, tiers = group_index(200, 32, 16, True)
    assert len(tiers) == 73 and group[-1] == 72 and group[0] == 0  # 200 events -> 73 tokens
    sizes = np.bincount(group)
    assert (sizes[-32:] == 1).all() and (sizes[-48:-32] == 2).all() and (sizes[-64:-48] == 4).all()
    assert list(tiers[-33:-31]) == [1, 0]
    raw, raw_tiers = group_index(50, 32, 16, False)
    assert (raw == np.arange(50)).all() and (raw_tiers == 0).all()


def kuaiformer(**kw):
    over = ["model.dim=16", "model.max_len=40", "model.recent=4", "model.tier_groups=2", "model.dropout=0"]
    cfg = load_config("kuaiformer", over + [f"model.{k}={v}" for k, v in kw.items()])
    torch.manual_seed(0)
    return build_model(cfg.model, 30, 5).eval()


def test_kuaiformer_scores_the_max_over_interests_and_pools_old_events():
    model = kuaiformer(interests=3)
    items = torch.randint(1, 31, (2, 40))
    with torch.no_grad():
        interests = model.interests(items)
        assert interests.shape == (2, 3, 16)
        scores = model.score(HistoryBatch(items))
        torch.testing.assert_close(scores, (interests @ model.output_weight().t()).max(1).values)
        tokens, valid = model.tokens(items)
        assert tokens.shape[1] < 40 and valid.all()
        # Swapping two events inside one pooled group changes nothing; swapping two raw recent ones does.
        group = model.group
        a, b = (group == 0).nonzero().flatten()[:2].tolist()
        swapped = items.clone()
        swapped[:, [a, b]] = items[:, [b, a]]
        torch.testing.assert_close(model.score(HistoryBatch(swapped)), scores)
        recent = items.clone()
        recent[:, [-1, -2]] = items[:, [-2, -1]]
        assert not torch.allclose(model.score(HistoryBatch(recent)), scores)


def test_kuaiformer_training_targets_pick_the_best_interest():
    model = kuaiformer(interests=2).train()
    items = torch.randint(1, 31, (4, 41))
    out = model.next_item_outputs((items, None))
    assert out.query.shape == (4, 16) and (out.targets == items[:, -1]).all()
    out.query.sum().backward()
    assert model.queries.grad is not None


def test_kuaiformer_uncompressed_has_one_token_per_event():
    model = kuaiformer(compress="false")
    tokens, _ = model.tokens(torch.randint(1, 31, (1, 40)))
    assert tokens.shape[1] == 40


@pytest.fixture(scope="module")
def feedback():
    from genrec.config import RankDataConfig
    from genrec.runs.ranking import prepare_feedback

    return prepare_feedback(RankDataConfig(dataset="ml-100k"))[0]


def compressed_ranker(data, **kw):
    from genrec.models.ranking.hstu_ranker import HSTURankerConfig
    from genrec.runs.ranking import build_ranker

    torch.manual_seed(0)
    cfg = HSTURankerConfig(dim=16, max_len=20, layers=2, heads=2, dropout=0.0, compress_history=True, **kw)
    model = build_ranker(cfg, data)
    torch.nn.init.normal_(model.bias.pos, std=0.3)
    return model.eval()


def test_compressed_ranker_pools_old_events_and_mfalcon_still_matches(feedback):
    from genrec.models.ranking.mfalcon import score_batch, score_one_at_a_time

    model = compressed_ranker(feedback, compress_group=4, micro_batch=3)
    _, batch = next(model.eval_batches(feedback, feedback.test, 3))
    tok, event_pos = model.prefix_tokens(batch)
    assert tok.x.shape[1] == 3 + 2 * 10  # 10 old events -> 3 groups of <= 4, then 10 raw item/action pairs
    assert (event_pos[:, :10] == -1).all() and (event_pos[:, 10:] >= 3).all()
    with torch.no_grad():
        fast = score_batch(model, batch, micro_batch=3)
        torch.testing.assert_close(fast, score_one_at_a_time(model, batch), atol=1e-5, rtol=1e-5)
        # Events inside one pooled group are a bag: swapping two of them changes nothing (same times).
        from genrec.models.ranking import RankBatch

        swapped = batch.hist_items.clone()
        swapped[:, [6, 7]] = batch.hist_items[:, [7, 6]]
        acts = batch.hist_actions.clone()
        acts[:, [6, 7]] = batch.hist_actions[:, [7, 6]]
        times = batch.hist_times.clone()
        times[:, [6, 7]] = batch.hist_times[:, [7, 6]]
        other = RankBatch(
            **{**batch.__dict__, "hist_items": swapped, "hist_actions": acts, "hist_times": times}
        )
        torch.testing.assert_close(score_batch(model, other, micro_batch=3), fast, atol=1e-5, rtol=1e-5)


def test_compressed_ranker_training_logits_skip_pooled_events(feedback):
    model = compressed_ranker(feedback).train()
    batch = next(model.training_batches(feedback, np.random.default_rng(0), 4))
    logits = model.logits(batch)
    assert logits.shape == batch.items.shape
    assert (logits[:, :10] == 0).all() and (logits[:, 10:] != 0).any()
    assert (batch.weights[:, 10:] > 0).any()
