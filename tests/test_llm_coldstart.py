"""Cold start with LLM knowledge: the SAID-style projector, item profiles read by text models, LLM item
profiles / queries / preference summaries through a `genrec.llm` client (an in-process fake backend here; the
real SmolLM2 runs only in benchmarks/coldstart_llm.py and benchmarks/unified_search.py)."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from conftest import write_p5

from genrec.config import load_config
from genrec.data.batching import HistoryBatch
from genrec.errors import ConfigError, DataError
from genrec.experiments.llm_items import (
    SummaryRetriever,
    generate_profiles,
    generate_queries,
    generate_summaries,
    write_profiles,
)
from genrec.items.projector import fit_projector, project_cold_rows
from genrec.items.text import item_texts, with_profiles
from genrec.llm import LLM, Completion, LLMConfig
from genrec.runs import load_run, train_run


class EchoLLM(LLM):
    """A backend that answers from the prompt: the product line, upper-cased, for item prompts; the last
    listed title for summary prompts. Counts its calls."""

    backend = "fake"

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__(cfg)
        self.calls = 0

    def _complete(self, prompts, max_tokens, stop):
        raise NotImplementedError

    def _chat(self, conversations, max_tokens, stop):
        out = []
        for conv in conversations:
            self.calls += 1
            prompt = conv[-1]["content"]
            lines = prompt.splitlines()
            product = [ln for ln in lines if ln.startswith("Product: ")]
            text = product[0][9:].upper() if product else [ln for ln in lines if ln.startswith("- ")][-1][2:]
            out.append(Completion(text + "\n second line", len(prompt.split()), 3, "stop"))
        return out


def items_table():
    return pl.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["Red Nail Polish", "Face Cream", "Dry Shampoo"],
            "categories": [["Beauty", "Nails"], ["Beauty", "Face"], ["Beauty", "Hair"]],
        }
    )


def test_fit_projector_recovers_a_linear_map_and_replaces_only_cold_rows():
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(301, 12, generator=gen)
    text[0] = 0
    true_map = torch.randn(12, 6, generator=gen)
    table = text @ true_map
    is_cold = np.zeros(301, dtype=bool)
    is_cold[-30:] = True
    new, report = project_cold_rows(table, text, is_cold, epochs=300, lr=1e-2)
    assert report["held_out_cosine"] > 0.9 and report["cold_rows_replaced"] == 30
    assert torch.equal(new[~torch.from_numpy(is_cold)], table[~torch.from_numpy(is_cold)])  # warm untouched
    cos = torch.nn.functional.cosine_similarity(new[-30:], table[-30:], dim=1)
    assert cos.mean() > 0.9  # unseen items land near where their ID vectors would be
    scaled, r2 = project_cold_rows(table, text, is_cold, match_norm=True, epochs=50)
    assert torch.allclose(scaled[-30:].norm(dim=1), torch.full((30,), r2["warm_norm"]), atol=1e-3)
    with pytest.raises(ValueError):
        fit_projector(text[:5], table[:5])


def test_profiles_file_is_appended_to_item_text(tmp_path):
    items = items_table()
    path = tmp_path / "profiles.jsonl"
    path.write_text(json.dumps({"item_id": "a", "profile": "polish for nails"}) + "\n\n")
    texts = item_texts(with_profiles(items, path))
    assert texts[0].endswith("profile: polish for nails") and "profile" not in texts[1]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item_id": "a"}\n')
    with pytest.raises(ConfigError, match="line 1"):
        with_profiles(items, bad)
    with pytest.raises(ConfigError, match="no such file"):
        with_profiles(items, tmp_path / "missing.jsonl")


def test_llm_profiles_queries_and_summaries_through_a_client(tmp_path):
    llm = EchoLLM(LLMConfig(cache_dir=str(tmp_path / "cache")))
    items = items_table()
    profiles, usage = generate_profiles(items, np.array([0, 2]), llm, max_tokens=8)
    assert profiles[0].startswith("RED NAIL POLISH") and profiles[2].startswith("DRY SHAMPOO")
    assert usage["prompts"] == 2 and usage["from_cache"] == 0 and usage["completion_tokens"] == 6
    again, usage2 = generate_profiles(items, np.array([0, 2]), llm, max_tokens=8)
    assert again == profiles and usage2["from_cache"] == 2 and llm.calls == 2  # cached by prompt
    write_profiles(tmp_path / "p.jsonl", items, profiles)
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == ["a", "c"]
    queries, _ = generate_queries(items, np.array([2]), llm)
    assert queries == {2: "face cream"}  # first line, lower-cased words
    summaries, _ = generate_summaries([np.array([1, 3]), np.array([2])], items, llm, recent=1)
    assert summaries[0].startswith("Dry Shampoo") and summaries[1].startswith("Face Cream")
    with pytest.raises(DataError):
        generate_summaries([np.array([], dtype=np.int64)], items, llm)


def test_summary_retriever_scores_by_text_cosine():
    item_emb = torch.cat([torch.zeros(1, 3), torch.eye(3)])
    summary = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    r = SummaryRetriever(summary, item_emb)
    batch = HistoryBatch(torch.tensor([[0, 1], [1, 3]]), users=torch.tensor([0, 1]))
    s = r.score(batch)
    assert s[:, 1:].argmax(1).tolist() == [1, 2] and s[0, 0] == float("-inf")
    blended = SummaryRetriever(summary, item_emb, history_weight=1.0).score(batch)
    assert blended[0, 1:].argmax().item() == 0  # history alone: item 1's own text


def test_textrec_reads_profiles_through_config(tmp_path):
    rows = [[u] + [(u + j) % 12 + 1 for j in range(5)] for u in range(1, 21)]
    folder = write_p5(tmp_path / "tiny", rows, {i: f"Thing{i % 3} item{i}" for i in range(1, 13)})
    (tmp_path / "profiles.jsonl").write_text(
        "\n".join(json.dumps({"item_id": i, "profile": f"for people who like {i % 2}"}) for i in range(1, 13))
    )
    base = ["model.dim=16", "model.max_len=8", "train.epochs=1", "train.batch_size=8"]
    emb = {}
    for label, extra in (("plain", []), ("profiles", [f"model.profiles={tmp_path / 'profiles.jsonl'}"])):
        torch.manual_seed(0)
        train_run(load_config("textrec", base + extra, str(folder)), tmp_path / label, progress=False)
        emb[label] = load_run(tmp_path / label).model.text_emb
    assert not torch.allclose(emb["plain"], emb["profiles"])
    with pytest.raises(ConfigError):
        train_run(
            load_config("textrec", base + [f"model.profiles={tmp_path / 'none.jsonl'}"], str(folder)),
            tmp_path / "bad",
            progress=False,
        )
