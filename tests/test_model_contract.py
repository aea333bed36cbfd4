"""The contract every registered model keeps, checked over the whole registry (a new model is covered the day it
is registered), and every built-in recipe resolving and running one tiny epoch."""

import numpy as np
import pytest
import torch

from genrec import registry
from genrec.config import RankDataConfig, list_recipes, load_config, recipe_dict
from genrec.data.batching import HistoryBatch
from genrec.inference.engine import Engine
from genrec.objectives import build_objective
from genrec.runs import load_run, train_run
from genrec.runs.ranking import build_ranker, prepare_feedback
from genrec.training.checkpoint import load_model_weights, save_weights

RETRIEVAL = registry.names("retrieval")
RANKING = registry.names("ranking")
TINY = {
    "sasrec": ["model.dim=16", "model.max_len=8"],
    "hstu": ["model.dim=16", "model.max_len=8"],
    "textrec": ["model.dim=16", "model.max_len=8"],
    "unified": ["model.dim=16", "model.max_len=8"],
    "kuaiformer": ["model.dim=16", "model.max_len=8", "model.recent=2", "model.tier_groups=1"],
    "mf": ["model.dim=8"],
    "tiger": [
        "model.dim=16",
        "model.max_len=8",
        "model.tokenizer.levels=2",
        "model.tokenizer.codebook_size=4",
    ],
    "rpg": [
        "model.dim=16",
        "model.heads=2",
        "model.max_len=8",
        "model.tokenizer.levels=4",
        "model.tokenizer.codebook_size=4",
    ],
    "onerec": [
        "model.dim=16",
        "model.max_len=8",
        "model.tokenizer.levels=2",
        "model.tokenizer.codebook_size=4",
        "model.session_len=2",
    ],
}


# LLM-based models read a tiny random LLaMA saved to disk (`lm_overrides`), never the packaged SmolLM2. The tiny
# data and LM are session fixtures of conftest.py, built once per test run.
LLM_KEYS = {"sid_llm": "model.lm", "hllm": "model.item_lm"}
TINY["sid_llm"] = ["model.tokenizer.levels=2", "model.tokenizer.codebook_size=4", "model.max_len=8"]
TINY["hllm"] = ["model.dim=16", "model.max_len=8"]


def lm_overrides(name: str, lm_dir) -> list[str]:
    return [f"{LLM_KEYS[name]}={lm_dir}"] if name in LLM_KEYS else []


@pytest.fixture(scope="module")
def retrieval_runs(tiny_sequences, tiny_lm, tmp_path_factory):
    """One trained run directory per registered retrieval model (2 epochs on the tiny data)."""
    out = {}
    root = tmp_path_factory.mktemp("runs")
    for name in RETRIEVAL:
        torch.manual_seed(0)
        overrides = [
            *TINY.get(name, []),
            *lm_overrides(name, tiny_lm),
            "train.epochs=2",
            "train.batch_size=8",
        ]
        cfg = load_config(name, overrides, str(tiny_sequences))
        train_run(cfg, root / name, progress=False)
        out[name] = load_run(root / name)
    return out


def history_batches(n_items: int) -> tuple[HistoryBatch, HistoryBatch]:
    """The same two histories, once as they are and once behind extra left padding."""
    items = torch.tensor([[0, 3, 4, 5], [1, 2, 7, 8]])
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), items], 1)
    return HistoryBatch(items), HistoryBatch(padded)


@pytest.mark.parametrize("name", RETRIEVAL)
def test_retrieval_model_contract(name, retrieval_runs, tmp_path):
    run = retrieval_runs[name]
    model = run.model.eval()
    n = model.n_items
    plain, padded = history_batches(n)
    exclude = torch.tensor([[3, 4, 5, 0], [1, 2, 0, 0]])
    ids, scores = model.recommend(plain, 5, exclude)
    assert ids.shape[0] == 2 and ids.shape[1] <= 5
    for row, banned in zip(ids.tolist(), exclude.tolist()):
        real = [i for i in row if i > 0]
        assert len(real) == len(set(real)) and not set(real) & (set(banned) - {0})  # exclusion honoured
        assert all(1 <= i <= n for i in real)
    if "score" in model.capabilities:
        s = model.score(plain)
        assert s.shape == (2, n + 1)
        torch.testing.assert_close(model.score(padded), s, atol=1e-5, rtol=1e-5)  # padding ignored
    # Weights round-trip exactly.
    save_weights(tmp_path / "w.safetensors", model.state_dict())
    again = type(model)(model.cfg, model.n_items, model.n_users)
    load_model_weights(again, tmp_path / "w.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    # The serving engine returns what Run.recommend returns.
    engine = Engine(run)
    user = run.users["user_id"][0]
    served = engine.recommend_user(user, 5)
    _, hist, times = run.user_history(user)
    expected, _ = run.recommend_internal(hist, 5, True, 0, times)
    assert served.ids.tolist() == expected.tolist()


@pytest.mark.parametrize("name", [n for n in RETRIEVAL if registry.get(n).trainable])
def test_one_epoch_lowers_the_training_loss(name, retrieval_runs):
    history = retrieval_runs[name].metrics["training"]["history"]
    assert len(history) == 2 and history[1]["loss"] < history[0]["loss"]


@pytest.fixture(scope="module")
def feedback():
    return prepare_feedback(RankDataConfig(dataset="ml-100k"))[0]


@pytest.mark.parametrize("name", RANKING)
def test_ranker_contract(name, feedback, tmp_path):
    cfg = load_config(name, ["model.dim=8", "model.max_len=8"]).model
    torch.manual_seed(0)
    model = build_ranker(cfg, feedback)
    objective = build_objective(model.cfg.default_objective, model)
    batches = list(model.training_batches(feedback, np.random.default_rng(0), 64))[:30]
    model.train()
    before = float(sum(objective(model, b) for b in batches[:5]).detach())
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for batch in batches:
        opt.zero_grad()
        objective(model, batch).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = float(sum(objective(model, b) for b in batches[:5]))
    assert after < before
    _, batch = next(model.eval_batches(feedback, feedback.test, 4))
    z = model.score_candidates(batch)
    assert z.shape == batch.items.shape and torch.isfinite(z).all()
    torch.testing.assert_close(z, model.logits(batch))
    save_weights(tmp_path / "w.safetensors", model.state_dict())
    again = build_ranker(cfg, feedback)
    load_model_weights(again, tmp_path / "w.safetensors")
    torch.testing.assert_close(again.eval().score_candidates(batch), z)


def test_every_model_declares_a_task_and_known_capabilities():
    known = {"score", "generate", "item_vectors", "incremental_state", "score_candidates", "log_likelihood"}
    known |= {"generate_sessions", "session_log_likelihood", "search"}
    for name in registry.names():
        cls = registry.get(name)
        assert cls.config_class.task in ("retrieval", "ranking") and set(cls.capabilities) <= known, name
        assert cls.config_class.model_fields["name"].default == name


@pytest.mark.parametrize("recipe", [r for r in list_recipes() if "model" in recipe_dict(r)])  # not preference
def test_every_builtin_recipe_resolves_and_runs_one_tiny_epoch(
    recipe, tiny_sequences, tiny_ratings, tiny_lm, tmp_path
):
    """The recipe's own model and training settings for one epoch on tiny data: retrieval on 40 users over 20
    items, ranking on ML-100K's 40 users with the fewest ratings (`tiny_ratings`)."""
    raw = recipe_dict(recipe)
    task = registry.config_class(raw["model"]["name"]).task
    overrides = ["train.epochs=1"]
    if raw.get("model", {}).get("tokenizer", {}).get("collab_run"):
        overrides.append("model.tokenizer.input=text")  # the collab run is a separate training
    if raw["model"]["name"] in ("tiger", "onerec", "sid_llm"):
        overrides += ["model.tokenizer.codebook_size=4", "model.tokenizer.levels=2"]
    if raw["model"]["name"] == "rpg":  # 4 x 4 codes: room to give 20 items their own code
        overrides += ["model.tokenizer.codebook_size=4", "model.tokenizer.levels=4"]
    if task == "retrieval" and raw.get("data", {}).get("split") == "temporal":
        overrides += [
            "data.split=leave_one_out",
            "eval.session_len=0",
        ]  # the tiny data has an order but no timestamps
    overrides += lm_overrides(raw["model"]["name"], tiny_lm)
    dataset = "ml-100k" if task == "ranking" else str(tiny_sequences)
    if task == "ranking":
        overrides += ["model.max_len=8", "model.stride=8", f"data.data_dir={tiny_ratings}"]
    cfg = load_config(recipe, overrides, dataset)
    metrics = train_run(cfg, tmp_path / "run", progress=False)
    assert metrics["test"] and load_run(tmp_path / "run").task.name == task
    if task == "ranking":
        assert metrics["protocol"]["dataset_stats"]["interactions"] == 808  # the tiny ratings, not ML-100K
