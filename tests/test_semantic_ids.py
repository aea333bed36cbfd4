import numpy as np
import polars as pl
import pytest
import torch

from genrec.config import EvalConfig, TrainConfig, load_config
from genrec.data.batching import history_batch, pad_left
from genrec.data.registry import load_dataset
from genrec.data.split import leave_one_out
from genrec.decoding.beam import CodeTrie, constrained_beam_search
from genrec.eval.evaluator import evaluate
from genrec.items import semantic_ids as semantic_ids_module
from genrec.items.semantic_ids import SemanticIds, TokenizerConfig, separation_codes, tokenize
from genrec.items.text import item_texts
from genrec.models import build_model
from genrec.models.base import Resources
from genrec.runs.retrieval import fit_retrieval
from genrec.training.trainer import FitContext


def clustered(n=600, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, d))
    return (centres[rng.integers(0, 12, n)] + 0.05 * rng.normal(size=(n, d))).astype(np.float32)


def test_separation_codes_rank_items_within_a_colliding_group():
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    assert separation_codes(codes).tolist() == [0, 0, 1, 2, 0]


@pytest.mark.parametrize("kind", ["rq_kmeans", "rq_vae"])
def test_tokenizers_give_unique_codes_and_a_two_way_map(kind, tmp_path):
    cfg = TokenizerConfig(kind=kind, levels=2, codebook_size=8, vae_epochs=20, vae_hidden=[32], vae_latent=8)
    sid = tokenize(clustered(), cfg)
    rep = sid.report
    # tight clusters with 8x8 codes: many collisions before separation, none after
    assert rep["collisions_before_separation"]["items_sharing_a_code"] > 0
    assert rep["collisions_after_separation"]["items_sharing_a_code"] == 0
    assert len(np.unique(sid.codes, axis=0)) == 600
    items = np.arange(1, 601)
    assert (sid.item_of(sid.code_of(items)) == items).all()
    assert sid.item_of([[7, 7, 599]])[0] == 0  # a code no item has
    assert rep["levels"][0]["codes_used"] <= 8 and rep["prefix_entropy"][-1]["entropy_bits"] == pytest.approx(
        np.log2(600), abs=1e-3
    )
    sid.save(tmp_path)
    back = SemanticIds.load(tmp_path)
    assert (back.codes == sid.codes).all() and back.sizes == sid.sizes


def test_rq_kmeans_uses_every_code_on_spread_data():
    x = np.random.default_rng(1).normal(size=(2000, 8)).astype(np.float32)
    sid = tokenize(x, TokenizerConfig(levels=2, codebook_size=16))
    assert all(lv["codes_used"] == 16 for lv in sid.report["levels"])


def test_beam_search_with_a_full_beam_finds_the_exact_best_items():
    sid = tokenize(clustered(300), TokenizerConfig(levels=2, codebook_size=6))
    trie = CodeTrie(sid.codes, sid.sizes)
    gen = torch.Generator().manual_seed(0)
    tables = [torch.log_softmax(torch.randn(s, generator=gen), -1) for s in sid.sizes]

    def step(prefix, level):
        return tables[level].expand(prefix.shape[0], prefix.shape[1], -1)

    items, scores, _ = constrained_beam_search(step, trie, 1, 300, 5)
    total = sum(tables[d][torch.from_numpy(sid.codes[:, d])] for d in range(sid.depth))
    assert items[0].tolist() == (torch.topk(total, 5).indices + 1).tolist()
    assert torch.allclose(scores[0], torch.topk(total, 5).values)


def test_every_decoded_code_is_a_real_item_on_a_whole_dataset(monkeypatch):
    """Untrained TIGER over ML-100K (random codes, 4x4 + separation): decode top-20 for every user, history
    excluded; every output must be a catalogue item whose code is the decoded one, never a history item."""
    split = leave_one_out(load_dataset("ml-100k").encode())
    cfg = load_config("tiger", ["model.dim=16", "model.heads=2", "model.tokenizer.codebook_size=4"]).model
    model = build_model(cfg, split.n_items, split.n_users).eval()
    x = np.random.default_rng(0).normal(size=(split.n_items, 8)).astype(np.float32)
    sid = tokenize(x, cfg.tokenizer)
    model.set_semantic_ids(sid)
    hist = split.test.history
    rows = np.arange(len(split.test))
    batch = history_batch(hist.offsets, hist.items, rows, None)
    seen = torch.from_numpy(pad_left(hist.offsets, hist.items, rows, None)).long()
    items, scores = model.recommend(batch, 20, exclude=seen)
    assert items.shape == (len(rows), 20) and (items > 0).all() and torch.isfinite(scores).all()
    assert not (items[:, :, None] == seen[:, None, :]).any()
    assert all(len(set(r)) == 20 for r in items.tolist())
    codes = model.item_codes[items]
    assert (sid.item_of(codes.reshape(-1, sid.depth).numpy()).reshape(items.shape) == items.numpy()).all()


@pytest.mark.parametrize("history_tokens", ["codes", "items"])
def test_kv_cached_decoding_matches_decoding_the_whole_prefix(history_tokens):
    """recommend() decodes one new position per level with a self-attention cache; the same beam search with the
    decoder rerun over each whole prefix must give the same items and scores."""
    split = leave_one_out(load_dataset("ml-100k").encode())
    over = ["model.dim=32", "model.heads=2", "model.tokenizer.codebook_size=6", "model.precision=float32"]
    cfg = load_config("tiger", [*over, f"model.history_tokens={history_tokens}"]).model
    torch.manual_seed(0)
    model = build_model(cfg, split.n_items, split.n_users).eval()
    # random weights give near-uniform code scores: sharpen them so the beams' order is decided by the model
    model.tok_emb.weight.data *= 8
    x = np.random.default_rng(0).normal(size=(split.n_items, 8)).astype(np.float32)
    model.set_semantic_ids(tokenize(x, cfg.tokenizer))
    hist = split.test.history
    rows = np.arange(200)
    batch = history_batch(hist.offsets, hist.items, rows, cfg.max_len)
    seen = torch.from_numpy(pad_left(hist.offsets, hist.items, rows, None)).long()
    items, scores = model.recommend(batch, 10, exclude=seen)

    memory, mask = model.encode(batch.items)

    def full_step(prefix, level):
        hidden = model.decode(prefix, memory, mask)[:, :, -1]
        return torch.log_softmax(model.level_logits(hidden, level), -1)

    ref_items, ref_scores, _ = constrained_beam_search(full_step, model.trie(), len(rows), cfg.beam, 10, seen)
    assert torch.allclose(scores, ref_scores, atol=1e-4)
    # Equal scores (random weights tie now and then) may come out in either order; every other slot must match.
    close = (ref_scores[:, 1:] - ref_scores[:, :-1]).abs() < 1e-4
    tied = torch.zeros_like(close[:, :1]).expand_as(ref_scores).clone()
    tied[:, 1:] |= close
    tied[:, :-1] |= close
    assert tied.float().mean() < 0.05 and torch.equal(items[~tied], ref_items[~tied])
    assert torch.equal(items.sort(1).values, ref_items.sort(1).values)
    assert ref_scores[:, 0].std() > 0.1  # the check is not between near-identical flat distributions


def test_cold_share_keeps_places_for_the_best_untrained_items():
    """With some items marked untrained, `cold_share` 0.3 gives each top-10 list its 3 best untrained items (by
    the same beam search over their codes alone) at positions 4, 7 and 10, and its 7 best trained ones around
    them, each group in score order."""
    split = leave_one_out(load_dataset("ml-100k").encode())
    over = ["model.dim=32", "model.heads=2", "model.tokenizer.codebook_size=6", "model.precision=float32"]
    cfg = load_config("tiger", [*over, "model.cold_share=0.3", "model.beam=40"]).model
    torch.manual_seed(0)
    model = build_model(cfg, split.n_items, split.n_users).eval()
    model.tok_emb.weight.data *= 8
    model.set_semantic_ids(tokenize(np.random.default_rng(0).normal(size=(split.n_items, 8)), cfg.tokenizer))
    hist = split.test.history
    rows = np.arange(100)
    batch = history_batch(hist.offsets, hist.items, rows, cfg.max_len)
    seen = torch.from_numpy(pad_left(hist.offsets, hist.items, rows, None)).long()
    plain, _ = model.recommend(batch, 10, exclude=seen)  # every item trained: cold_share is inert
    cold = np.arange(1, split.n_items + 1)[np.random.default_rng(1).random(split.n_items) < 0.1]
    model.set_trained_items(np.setdiff1d(np.arange(1, split.n_items + 1), cold))
    items, scores = model.recommend(batch, 10, exclude=seen)
    is_cold = torch.isin(items, torch.from_numpy(cold))
    assert (is_cold[:, [3, 6, 9]]).all() and (is_cold.sum(1) == 3).all() and (items > 0).all()
    for group in (is_cold, ~is_cold):
        s = scores[group].view(len(rows), -1)
        assert (s[:, 1:] <= s[:, :-1]).all()
    assert not (items[:, :, None] == seen[:, None, :]).any()
    memory, mask = model.encode(batch.items)
    memory = [block.cross_attn.keys_values(memory) for block in model.decoder]
    _, warm_trie, cold_trie = model.tries()
    best_cold, _ = model._beam_search(cold_trie, memory, mask, len(rows), 3, seen)
    best_warm, _ = model._beam_search(warm_trie, memory, mask, len(rows), 7, seen)
    assert torch.equal(items[:, [3, 6, 9]], best_cold)
    assert torch.equal(items[~is_cold].view(len(rows), 7), best_warm)
    # Without the cold share the untrained items rarely make a list (scores here are random, not trained).
    assert torch.isin(plain, torch.from_numpy(cold)).sum(1).float().mean() < 3
    # Weights saved before trained_items existed load with every item trained.
    state = {k: v for k, v in model.state_dict().items() if k != "trained_items"}
    model.load_state_dict(state)
    assert model.trained_items[1:].all()


@pytest.mark.parametrize("history_tokens", ["codes", "items"])
def test_tiger_trains_on_tiny_data_and_beats_popularity(history_tokens, tiny_p5, monkeypatch, tmp_path):
    ds = load_dataset(str(tiny_p5))
    split = leave_one_out(ds.encode())
    items = pl.DataFrame({"item_id": split.sequences.item_ids}).join(
        ds.items.select(["item_id", "title", "categories"]), on="item_id", how="left"
    )
    # one-hot item embeddings stand in for text here (the real encoder is exercised by the slow text test)
    monkeypatch.setattr(
        semantic_ids_module,
        "item_embeddings",
        lambda cfg, it, ids, collab=None: np.eye(len(ids), dtype=np.float32),
    )
    cfg = load_config(
        "tiger",
        [
            "model.dim=32",
            "model.heads=2",
            "model.tokenizer.codebook_size=3",
            "model.dropout=0",
            f"model.history_tokens={history_tokens}",
        ],
    ).model
    torch.manual_seed(0)
    model = build_model(cfg, split.n_items, split.n_users)
    ctx = FitContext(
        TrainConfig(epochs=60, batch_size=16, lr=3e-3, patience=60, eval_every=30),
        EvalConfig(ks=[1, 5, 10]),
        tmp_path,
        progress=False,
        resources=Resources(items=items),
    )
    summary = fit_retrieval(model, split, ctx)
    assert (tmp_path / "semantic_ids.safetensors").exists() and (
        tmp_path / "semantic_ids_report.json"
    ).exists()
    assert summary["semantic_ids"]["collisions_after_separation"]["items_sharing_a_code"] == 0
    res = evaluate(model, split.test, split.n_items, EvalConfig(ks=[1, 5, 10]))
    assert res["unfiltered"]["recall@5"] >= 0.75  # the 'next = previous + 1' pattern is learnable


def test_item_texts_join_title_and_categories():
    items = pl.DataFrame(
        {"item_id": [1, 2], "title": ["Red nail polish", None], "categories": [["Beauty", "Nails"], []]}
    )
    assert item_texts(items) == ["Red nail polish. categories: Beauty, Nails", ""]


@pytest.mark.slow
def test_minilm_text_embeddings_are_real_and_cached(monkeypatch, tmp_path):
    from genrec.items import text

    monkeypatch.setenv("GENREC_CACHE", str(tmp_path))
    texts = ["red nail polish", "nail lacquer, red", "dry dog food", ""]
    emb = text.encode_texts(texts)
    assert emb.shape == (4, 384)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.3  # related products are closer than unrelated ones
    assert np.abs(emb[3]).sum() == 0
    assert len(list((tmp_path / "text-embeddings").glob("*.npy"))) == 1
    again = text.encode_texts(texts)
    assert np.array_equal(again, emb)
    other = text.encode_texts(texts[:2])  # other content -> another cache entry
    assert len(list((tmp_path / "text-embeddings").glob("*.npy"))) == 2 and other.shape == (2, 384)


def test_collaborative_input_reads_a_trained_sasrec_run(tiny_p5, tmp_path):
    from genrec.items.semantic_ids import item_embeddings
    from genrec.runs import load_run, train_run
    from genrec.runs.retrieval import collab_embeddings

    cfg = load_config("sasrec", ["train.epochs=1", "model.dim=8", "eval.ks=[1,10]"], dataset=str(tiny_p5))
    train_run(cfg, tmp_path / "sasrec", progress=False)
    run = load_run(tmp_path / "sasrec")
    ids = run.items["item_id"].to_numpy()
    tk = TokenizerConfig(input="collab", collab_run=str(tmp_path / "sasrec"), levels=2, codebook_size=2)
    x = item_embeddings(
        tk, run.items, ids[::-1].copy(), collab_embeddings
    )  # another order: rows follow the ids
    weight = run.model.item_emb.weight.detach().numpy()[1:]
    expected = weight[::-1] / np.linalg.norm(weight[::-1], axis=1, keepdims=True)
    assert np.allclose(x, expected, atol=1e-6)
    with pytest.raises(Exception, match="collab_run"):
        item_embeddings(TokenizerConfig(input="collab"), run.items, ids)
