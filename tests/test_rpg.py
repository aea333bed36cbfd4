"""RPG: codes scored in parallel, exact and graph-constrained decoding, and the product-quantisation tokenizers."""

import numpy as np
import pytest
import torch

from genrec.config import load_config
from genrec.data.batching import HistoryBatch, history_batch, pad_left
from genrec.data.registry import load_dataset
from genrec.data.split import leave_one_out
from genrec.items.semantic_ids import (
    SemanticIds,
    TokenizerConfig,
    cooccurrence_vectors,
    format_report,
    product_quantize,
    tokenize,
)
from genrec.models import build_model
from genrec.models.base import Resources
from genrec.objectives.base import CodeCrossEntropy


@pytest.fixture(scope="module")
def ml100k():
    return leave_one_out(load_dataset("ml-100k").encode())


def untrained_rpg(split, *overrides, seed=0):
    """An RPG over ML-100K with codes from random vectors (8 x 16 PQ), its weights sharpened so that scores
    differ clearly between items."""
    over = ["model.dim=32", "model.heads=2", "model.tokenizer.levels=8", "model.tokenizer.codebook_size=16"]
    cfg = load_config("rpg", [*over, "model.tokenizer.kind=pq", *overrides]).model
    torch.manual_seed(seed)
    model = build_model(cfg, split.n_items, split.n_users).eval()
    x = np.random.default_rng(seed).normal(size=(split.n_items, 16)).astype(np.float32)
    model.set_semantic_ids(tokenize(x, cfg.tokenizer))
    with torch.no_grad():
        model.head_weight.normal_(0, 0.3)
    return model


def user_batches(split, rows, max_len):
    hist = split.test.history
    batch = history_batch(hist.offsets, hist.items, rows, max_len)
    seen = torch.from_numpy(pad_left(hist.offsets, hist.items, rows, None)).long()
    return batch, seen


@pytest.mark.parametrize("decoding", ["exact", "graph"])
def test_every_listed_item_is_real_distinct_and_allowed(ml100k, decoding):
    """Top-20 for every ML-100K user with the whole history excluded: ids in 1..n, no repeats, nothing excluded,
    scores non-increasing and equal to the item's summed code log-probabilities."""
    model = untrained_rpg(
        ml100k, f"model.decoding={decoding}", "model.graph_beams=30", "model.graph_edges=20"
    )
    rows = np.arange(len(ml100k.test))
    batch, seen = user_batches(ml100k, rows, model.cfg.max_len)
    items, scores = model.recommend(batch, 20, exclude=seen)
    assert items.shape == (len(rows), 20) and torch.isfinite(scores).all()
    assert ((items >= 1) & (items <= ml100k.n_items)).all()
    assert all(len(set(r)) == 20 for r in items.tolist())
    assert not (items[:, :, None] == seen[:, None, :]).any()
    assert (scores[:, 1:] <= scores[:, :-1]).all()
    logp = model.query_log_probs(batch)
    codes = model.item_codes()[items]  # [B, 20, levels]
    by_hand = sum(logp[:, lv, :].gather(1, codes[:, :, lv]) for lv in range(model.levels))
    torch.testing.assert_close(scores, by_hand)


def test_exact_scores_are_log_likelihoods_and_ignore_padding(ml100k):
    model = untrained_rpg(ml100k)
    batch, _ = user_batches(ml100k, np.arange(50), model.cfg.max_len)
    scores = model.score(batch)
    assert scores.shape == (50, ml100k.n_items + 1) and torch.isinf(scores[:, 0]).all()
    # Summed over all code combinations the probabilities make 1, so over the items they make at most 1.
    assert (scores[:, 1:].exp().sum(1) <= 1 + 1e-4).all()
    items = torch.randint(1, ml100k.n_items + 1, (50, 7))
    torch.testing.assert_close(model.log_likelihood(batch, items), scores.gather(1, items))
    padded = type(batch)(torch.nn.functional.pad(batch.items[:, -10:], (5, 0)))
    torch.testing.assert_close(model.score(padded), model.score(type(batch)(batch.items[:, -10:])))


def test_graph_decoding_that_visits_every_item_is_exact(ml100k):
    """With as many start items as the catalogue, the walk scores every item: the list is the exact top-K."""
    exact = untrained_rpg(ml100k)
    graph = untrained_rpg(ml100k, "model.decoding=graph", f"model.graph_beams={ml100k.n_items}")
    graph.load_state_dict(exact.state_dict())
    batch, seen = user_batches(ml100k, np.arange(100), exact.cfg.max_len)
    e_items, e_scores = exact.recommend(batch, 10, seen)
    g_items, g_scores = graph.recommend(batch, 10, seen)
    torch.testing.assert_close(g_scores, e_scores)
    assert (g_items == e_items).float().mean() > 0.99  # equal scores may swap places


def test_graph_neighbours_share_codes(ml100k):
    """The decoding graph links each item to those whose code embeddings are most alike: with untrained but
    distinct code embeddings, an item's first neighbour is itself and its neighbours share more codes with it
    than random items do."""
    model = untrained_rpg(ml100k, "model.decoding=graph", "model.graph_edges=10")
    neighbours, start = model.graph()
    items = torch.arange(1, ml100k.n_items + 1)
    assert (neighbours[items, 0] == items).float().mean() > 0.99
    codes = model.item_codes()
    shared = (codes[items][:, None, :] == codes[neighbours[items, 1:]]).sum(-1).float().mean()
    random = (codes[items] == codes[items.flip(0)]).sum(-1).float().mean()
    assert shared > random + 1
    assert len(set(start.tolist())) == len(start) == model.cfg.graph_beams


def test_learns_a_deterministic_next_item():
    """Each item is always followed by one fixed other item: trained on such sequences, the code cross-entropy
    falls far below the uniform ln(codebook_size), and for a one-item history the top item is its successor
    (not the item itself, as a target shifted wrongly would give)."""
    n = 100
    over = ["model.dim=32", "model.heads=2", "model.tokenizer.levels=8", "model.tokenizer.codebook_size=16"]
    over += ["model.tokenizer.kind=pq", "model.max_len=8", "model.dropout=0", "model.block_dropout=0"]
    cfg = load_config("rpg", over).model
    torch.manual_seed(0)
    model = build_model(cfg, n, 1).train()
    x = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32)
    model.set_semantic_ids(tokenize(x, cfg.tokenizer))
    successor = torch.from_numpy(np.random.default_rng(1).permutation(n)) + 1  # of item i: successor[i - 1]
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    objective = CodeCrossEntropy()
    for _ in range(150):
        walk = [torch.randint(1, n + 1, (32,), generator=gen)]
        for _ in range(8):
            walk.append(successor[walk[-1] - 1])
        loss = objective(model, (torch.stack(walk, 1),))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.1 * np.log(16)
    items = torch.arange(1, n + 1)
    top, _ = model.eval().recommend(HistoryBatch(items[:, None]), 1)
    assert (top[:, 0] == successor).float().mean() > 0.95


def clustered(n=600, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, d))
    return (centres[rng.integers(0, 12, n)] + 0.05 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("kind", ["pq", "opq", "rq_kmeans"])
def test_collision_handling(kind, tmp_path):
    """Tight clusters collide; separate adds a code, reassign keeps the length and moves items to free codes,
    none keeps the duplicates; the report says which, and the codes round-trip through the run files."""
    levels = 4
    base = dict(kind=kind, levels=levels, codebook_size=8)
    sep = tokenize(clustered(), TokenizerConfig(**base, collisions="separate"))
    moved = tokenize(clustered(), TokenizerConfig(**base, collisions="reassign"))
    kept = tokenize(clustered(), TokenizerConfig(**base, collisions="none"))
    assert sep.report["collisions_before_separation"]["items_sharing_a_code"] > 0
    assert sep.depth == levels + 1 and moved.depth == kept.depth == levels
    assert sep.unique and moved.unique and not kept.unique
    assert moved.report["items_reassigned"] > 0 and moved.report["collision_handling"] == "reassign"
    # reassign changes only the items that collided, and only as few codes as it must
    changed = (moved.codes != kept.codes).any(1)
    assert changed.sum() == moved.report["items_reassigned"]
    assert (moved.codes != kept.codes).sum(1).max() <= levels
    for sid in (sep, moved, kept):
        assert "dead_codes_reinitialised" in sid.report and "entropy_bits" in sid.report["levels"][0]
        assert "collisions after" in format_report(sid.report)
    kept.save(tmp_path)
    back = SemanticIds.load(tmp_path)
    assert (back.codes == kept.codes).all() and not back.unique
    items = np.arange(1, 601)
    assert (moved.item_of(moved.code_of(items)) == items).all()


def test_long_codes_round_trip_without_overflow():
    """32 x 256 codes: more combinations than an int64 holds, each item still found from its code."""
    x = np.random.default_rng(0).normal(size=(700, 64)).astype(np.float32)
    sid = tokenize(x, TokenizerConfig(kind="pq", levels=32, codebook_size=256, collisions="none"))
    assert sid.depth == 32 and sid.unique
    items = np.arange(1, 701)
    assert (sid.item_of(sid.code_of(items)) == items).all()
    assert sid.item_of(np.full((1, 32), 255))[0] == 0 or (sid.codes == 255).all(1).any()


def test_opq_rotation_lowers_the_quantisation_error():
    """On vectors whose variance sits in a few correlated dimensions, OPQ's rotation spreads it over the
    sub-spaces: its reconstruction error is below plain PQ's (the rotation is orthogonal, so errors compare)."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.normal(size=(2000, 4)) @ rng.normal(size=(4, 32))).astype(np.float32))
    x += 0.01 * torch.randn(2000, 32, generator=torch.Generator().manual_seed(0))

    def error(rotate):
        q = product_quantize(x, 8, 16, 20, 0, rotate, None)
        return sum(float(((q.inputs[lv] - q.centroids[lv][q.codes[:, lv]]) ** 2).sum()) for lv in range(8))

    assert error(True) < 0.8 * error(False)


def test_pq_codebooks_are_fitted_on_the_given_rows_only():
    x = clustered(400)
    x[300:] += 100.0  # far away: if they were fitted on, some centroids would move there
    fitted = product_quantize(torch.from_numpy(x), 4, 8, 20, 0, False, np.arange(300))
    assert fitted.stats["fitted_on_items"] == 300
    assert all(float(c.abs().max()) < 50 for c in fitted.centroids)


def test_cooccurrence_vectors_put_items_of_the_same_sessions_together():
    """Two groups of items that only ever co-occur within their group: each item's nearest neighbour (cosine)
    is in its own group; an item never seen gets zeros."""
    rng = np.random.default_rng(0)
    seqs = [rng.choice(np.arange(1, 11) if u % 2 else np.arange(11, 21), size=6) for u in range(200)]
    offsets = np.r_[0, np.cumsum([len(s) for s in seqs])]
    v = cooccurrence_vectors(offsets, np.concatenate(seqs), 21, 4, 2, 0)
    assert v.shape == (21, 4) and np.abs(v[20]).sum() == 0
    unit = v[:20] / np.linalg.norm(v[:20], axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -2)
    group = np.arange(20) // 10
    assert (group[sims.argmax(1)] == group).all()


def test_text_codes_without_item_text_are_refused_before_training(ml100k):
    """A dataset whose items have no text (Amazon Sports here) cannot get text codes: a clear error, not codes that
    are all alike."""
    import polars as pl

    from genrec.errors import ConfigError

    model = untrained_rpg(ml100k)
    items = pl.DataFrame({"item_id": np.arange(1, ml100k.n_items + 1), "title": [None] * ml100k.n_items})
    with pytest.raises(ConfigError, match="cooccurrence"):
        no_text = items.with_columns(pl.lit([], dtype=pl.List(pl.Utf8)).alias("categories"))
        model.prepare(ml100k, Resources(items=no_text))
