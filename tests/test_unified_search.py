"""Search queries, query-only retrievers and the unified search + recommendation model on tiny data."""

import numpy as np
import polars as pl
import pytest
import torch
from conftest import write_p5

from genrec.config import load_config
from genrec.data.batching import HistoryBatch
from genrec.data.split import Csr, EvalSet
from genrec.errors import ConfigError, DataError
from genrec.experiments.search import BM25Index, bm25_view, cosine_view, evaluate_search, target_of_user
from genrec.items.queries import clean_generated_query, template_queries, template_query
from genrec.models import build_model
from genrec.models.base import Resources
from genrec.runs import load_run, train_run


def test_template_query_is_category_plus_two_title_words_and_not_the_title():
    title = "OPI Red Shatter Crackle Nail Polish E55 New"
    q = template_query(2, title, [["Beauty", "Makeup", "Nails", "Nail Polish"]])
    words = q.split()
    assert words[:3] == ["nail", "polish", "nails"]
    extra = words[3:]
    assert len(extra) == 2 and set(extra) <= {"red", "shatter", "crackle"}  # brand, stop words, numbers out
    assert q not in title.lower()
    assert template_query(2, title, [["Beauty", "Makeup", "Nails", "Nail Polish"]]) == q  # deterministic
    others = {template_query(i, title, ["Nails", "Nail Polish"]) for i in range(30)}
    assert len(others) > 1  # the words depend on the item id
    assert (
        template_query(2, title, ["Nails", "Nail Polish"], allowed={"red", "new"}) == "nail polish nails red"
    )


def test_template_queries_keep_only_common_title_words():
    names = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()
    titles = [f"Brand Red Gel {n}" for n in names] + ["Brand Glitter Rare"]
    items = pl.DataFrame({"item_id": range(11), "title": titles, "categories": [["Nails"]] * 11})
    queries = template_queries(items, min_title_share=0.3)
    assert queries[0] in ("nails red gel", "nails gel red")  # the item's own name is rare: never chosen
    assert queries[10] == "nails"  # 'glitter' and 'rare' are in one title only


def test_template_query_edge_cases():
    assert template_query(1, None, None) == ""
    assert template_query(1, "Brand", "Skin Care|Face") == "face skin care"
    assert set(template_query(1, "Brand Cream &amp; Lotion", []).split()) == {"cream", "lotion"}
    items = pl.DataFrame({"item_id": [1, 2], "title": ["A b", None], "categories": [["X"], None]})
    assert template_queries(items) == ["x", ""]


def test_clean_generated_query():
    assert clean_generated_query('  "Red nail polish!"\nsecond line') == "red nail polish"
    assert clean_generated_query("") == ""


def _examples(targets, histories):
    offsets = np.cumsum([0] + [len(h) for h in histories])
    items = np.concatenate([np.array(h, dtype=np.int64) for h in histories])
    return EvalSet(np.arange(len(targets)), Csr(offsets, items), np.array(targets))


def test_bm25_and_cosine_views_rank_the_matching_item_first():
    texts = ["red nail polish", "face cream moisturizer", "hair shampoo dry"]
    queries = ["nail polish red", "moisturizer face", "shampoo"]
    examples = _examples([1, 2, 3], [[2], [3], [1]])
    targets = target_of_user(examples, 3)
    cfg = load_config("sasrec", ["eval.ks=[1]", "eval.select_metric=recall@1"]).eval
    res = evaluate_search(bm25_view(BM25Index(texts), queries, targets), examples, 3, cfg)
    assert res["unfiltered"]["recall@1"] == 1.0
    emb = torch.eye(4)
    res = evaluate_search(cosine_view(emb, emb, targets), examples, 3, cfg)
    assert res["unfiltered"]["recall@1"] == 1.0
    wrong = cosine_view(emb, emb[[0, 2, 3, 1]], targets)  # item vectors shuffled: no target matches
    assert evaluate_search(wrong, examples, 3, cfg)["unfiltered"]["recall@1"] == 0.0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cats = ["Nails", "Face", "Hair", "Eyes"]
    rows = [[u] + [(u + 3 * j) % 20 + 1 for j in range(6)] for u in range(1, 41)]
    folder = tmp_path_factory.mktemp("unified") / "tiny"
    write_p5(folder, rows, {i: f"{cats[i % 4]} item{i} colour{i % 3} brand" for i in range(1, 21)})
    cfg = load_config(
        "unified", ["model.dim=16", "model.max_len=8", "train.epochs=3", "train.batch_size=8"], str(folder)
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("runs") / "u"
    train_run(cfg, out, progress=False)
    return load_run(out)


def test_unified_trains_and_answers_both_tasks(tiny_run):
    model = tiny_run.model
    assert model.can("search") and model.can("score")
    batch = HistoryBatch(torch.tensor([[0, 3, 4], [5, 6, 7]]))
    rec = model.score(batch)
    assert rec.shape == (2, 21) and torch.isfinite(rec[:, 1:]).all()
    q = model.query_emb[torch.tensor([9, 9])]
    search = model.search_scores(batch, q)
    assert search.shape == (2, 21)
    assert not torch.allclose(search, rec)  # the query changes the ranking
    other = model.search_scores(batch, model.query_emb[torch.tensor([10, 10])])
    assert not torch.allclose(search, other)
    assert model.match_scale.item() != 0.0
    # The match basis keeps the dot products between queries and item texts (20 items: rank 20 is exact).
    exact = model.query_emb @ model.text_emb.t()
    kept = (model.query_emb @ model.match_basis) @ model.match_items.t()
    assert torch.allclose(exact, kept, atol=1e-4)


def test_unified_training_loss_covers_both_tasks(tiny_run):
    model = tiny_run.model
    model.train()
    items = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    out = model.next_item_outputs((items, None))
    n = int((items[:, :-1] > 0).sum())
    k = model.cfg.match_dim
    assert out.query.shape == (2 * n, 16 + k) and out.targets.shape == (2 * n,)
    assert torch.equal(out.targets[:n], out.targets[n:])
    assert (out.query[:n, 16:] == 0).all() and (out.query[n:, 16:] != 0).any()
    assert out.weight.shape == (21, 16 + k)
    model.eval()


def test_unified_rejects_bad_inputs(tiny_run):
    model = tiny_run.model
    with pytest.raises(DataError):
        model.set_text(np.zeros((3, 384), np.float32), np.zeros((20, 384), np.float32))
    cfg = load_config("unified", ["model.dim=16"]).model
    m = build_model(cfg, 5, 2)
    with pytest.raises(ConfigError):
        m.prepare(None, Resources())
    with pytest.raises(ConfigError):
        build_model(cfg.model_copy(update={"l2_normalize": True}), 5, 2)


def test_fused_view_adds_weighted_bm25_to_the_model_scores(tiny_run):
    from genrec.experiments.search import QueryScores, fused_view, model_search_view

    model = tiny_run.model
    batch = HistoryBatch(torch.tensor([[0, 3, 4], [5, 6, 7]]), users=torch.tensor([0, 1]))
    targets = torch.tensor([9, 12])
    lexical = QueryScores(lambda b: torch.arange(21.0).repeat(2, 1))
    base = model_search_view(model, model.query_emb, targets)
    assert torch.allclose(fused_view(base, lexical, 0.0).score(batch), base.score(batch))
    fused = fused_view(base, lexical, 2.0).score(batch)
    assert torch.allclose(fused - base.score(batch), 2.0 * torch.arange(21.0).repeat(2, 1), atol=1e-5)
