"""llm_tree: the item trees, the beam walk (with a scripted LLM and with a tiny random LLaMA), the list it
returns, and its weights round trip."""

import numpy as np
import polars as pl
import pytest
import torch
from test_llm import tiny_llama  # noqa: F401  (fixture)

from genrec.data.batching import HistoryBatch
from genrec.data.split import Csr
from genrec.llm import LLMConfig
from genrec.models.base import Resources
from genrec.models.llm_tree import LLMTree, LLMTreeConfig, category_tree, cluster_tree
from genrec.training.checkpoint import load_model_weights, save_weights

PATHS = [
    ["Beauty", "Makeup", "Eyes", "Mascara"],
    ["Beauty", "Makeup", "Eyes", "Mascara"],
    ["Beauty", "Makeup", "Lips"],
    ["Beauty", "Hair Care", "Shampoos"],
    ["Beauty", "Hair Care", "Shampoos"],
    ["Beauty", "Hair Care"],  # an item of an inner node
    ["Beauty", "Skin Care", "Face"],
    [],  # no category
]
TITLES = [
    "Volume mascara black", "Waterproof mascara", "Red lipstick matte", "Argan oil shampoo", "Dandruff shampoo",
    "Hair brush paddle", "Face cream night", "Gift card",
]  # fmt: skip


def test_category_tree_drops_shared_levels_and_gives_inner_items_a_leaf():
    nodes = category_tree(PATHS)
    labels = [n["label"] for n in nodes]
    assert "Beauty" not in labels  # every item with a path shares it
    root = [nodes[c]["label"] for c in nodes[0]["children"]]
    assert root == ["Makeup", "Hair Care", "Skin Care", "other"]
    hair = nodes[labels.index("Hair Care")]
    assert [nodes[c]["label"] for c in hair["children"]] == ["Shampoos", "other Hair Care"]
    assert hair["items"] == [] and nodes[labels.index("other Hair Care")]["items"] == [6]
    placed = sorted(i for n in nodes for i in n["items"])
    assert placed == list(range(1, 9))  # every item exactly once
    assert all(not n["items"] or not n["children"] for n in nodes)  # items only in leaves


def test_cluster_tree_respects_leaf_size_and_labels_nodes():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8))
    emb = np.repeat(centers, 10, axis=0) + 0.01 * rng.normal(size=(40, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    titles = [f"{w} thing" for w in ["lipstick", "shampoo", "cream", "brush"] for _ in range(10)]
    nodes = cluster_tree(emb, titles, branching=4, leaf_size=12)
    leaves = [n for n in nodes if not n["children"]]
    assert sorted(i for n in leaves for i in n["items"]) == list(range(1, 41))
    assert all(len(n["items"]) <= 12 for n in leaves)
    assert {n["label"] for n in leaves} == {"lipstick thing", "shampoo thing", "cream thing", "brush thing"}


class ScriptedLLM:
    """choice_logprobs that likes one label above all and counts its calls."""

    def __init__(self, liked: set[str]):
        self.liked, self.calls = liked, 0

    def choice_logprobs(self, prompt, options):
        self.calls += 1
        return np.array([0.0 if o.strip() in self.liked else -5.0 for o in options])


@pytest.fixture
def split_and_items():
    class S:  # what prepare reads of a split
        train = Csr(np.array([0, 6]), np.array([4, 4, 4, 5, 1, 7]))

    items = pl.DataFrame(
        {"item_id": list(range(1, 9)), "title": TITLES, "categories": PATHS},
        schema={"item_id": pl.Int64, "title": pl.Utf8, "categories": pl.List(pl.Utf8)},
    )
    return S(), items


def fitted(split_and_items, **kw):
    split, items = split_and_items
    model = LLMTree(LLMTreeConfig(**kw), n_items=8, n_users=1)
    summary = model.prepare(split, Resources(items=items))
    return model.eval(), summary


def test_beam_follows_the_llm_and_lists_real_distinct_items(split_and_items):
    model, summary = fitted(split_and_items, beam=1, scoring="logprob")
    assert summary["tree"] == "categories" and summary["tree_depth"] == 3
    model._llm = ScriptedLLM({"Hair Care", "Shampoos"})
    assert [n for _, n in model.leaves_for([1])] == [model.nodes.index(
        next(n for n in model.nodes if n["label"] == "Shampoos"))]  # fmt: skip
    assert model._llm.calls == 2  # root, then Hair Care (its two children)
    ids, scores = model.recommend(
        HistoryBatch(torch.tensor([[0, 1], [2, 3]])), 5, torch.tensor([[4, 0], [0, 0]])
    )
    for row in ids.tolist():
        assert len(set(row)) == 5 and all(1 <= i <= 8 for i in row)
    assert ids[0, 0] == 5 and 4 not in ids[0].tolist()  # the chosen leaf first, minus the excluded item
    assert set(ids[1, :2].tolist()) == {4, 5}
    assert torch.all(scores[:, 1:] < scores[:, :-1])  # ranks, best first
    # k larger than the catalogue: every item once
    ids, _ = model.recommend(HistoryBatch(torch.tensor([[1]])), 20)
    assert sorted(ids[0].tolist()) == list(range(1, 9))


def test_within_leaf_similarity_prefers_items_like_the_history(split_and_items):
    model, _ = fitted(split_and_items, beam=1, scoring="logprob")
    model._llm = ScriptedLLM({"Makeup", "Eyes"})
    ids, _ = model.recommend(HistoryBatch(torch.tensor([[2]])), 2, torch.tensor([[2]]))
    assert ids[0, 0] == 1  # the other mascara; the rest of the catalogue fills the list after it
    pop, _ = fitted(split_and_items, beam=1, scoring="logprob", within_leaf="popularity")
    pop._llm = ScriptedLLM({"Hair Care", "Shampoos"})
    assert pop.recommend(HistoryBatch(torch.tensor([[1]])), 2)[0][0].tolist() == [4, 5]  # 4 bought 3 times


def test_walk_with_a_real_model_is_deterministic_and_round_trips(split_and_items, tiny_llama, tmp_path):  # noqa: F811
    llm = LLMConfig(model=str(tiny_llama), cache_dir=str(tmp_path / "cache"))
    model, _ = fitted(split_and_items, llm=llm, beam=2)
    batch = HistoryBatch(torch.tensor([[1, 3], [0, 7]]))
    first = model.recommend(batch, 4)[0]
    assert model.llm.usage.calls > 0 and model.llm.usage.prompt_tokens > 0
    save_weights(tmp_path / "w.safetensors", model.state_dict())
    again = LLMTree(model.cfg, 8, 1)
    load_model_weights(again, tmp_path / "w.safetensors")
    assert again.nodes == model.nodes and again.titles == model.titles
    assert torch.equal(again.eval().recommend(batch, 4)[0], first)
    assert again.llm.usage.cache_hits == again.llm.usage.calls  # the same prompts: answered from the cache


def test_clusters_when_items_have_no_categories(split_and_items):
    split, items = split_and_items
    model = LLMTree(LLMTreeConfig(leaf_size=3, branching=2, beam=1), n_items=8, n_users=1)
    summary = model.prepare(split, Resources(items=items.drop("categories")))
    assert summary["tree"] == "clusters" and summary["largest_leaf"] <= 3
    model._llm = ScriptedLLM(set())
    ids, _ = model.eval().recommend(HistoryBatch(torch.tensor([[1]])), 8)
    assert sorted(ids[0].tolist()) == list(range(1, 9))
