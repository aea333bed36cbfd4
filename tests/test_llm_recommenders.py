"""sid_llm (semantic-ID tokens in a causal LM, trie-constrained `generate`) and hllm (item-LLM vectors under a
user transformer), on a tiny random LLaMA saved to disk with a word-level tokenizer: no download."""

import shutil

import numpy as np
import pytest
import torch
from conftest import write_p5
from tiny_llm import plant_hostile_generation_config, tiny_llama

from genrec.config import load_config
from genrec.data.batching import HistoryBatch, history_batch
from genrec.experiments.coldstart import cold_start_split
from genrec.models import build_model
from genrec.models.base import Resources
from genrec.runs import load_run, train_run
from genrec.runs.retrieval import make_split, prepare_dataset

SID = ["model.tokenizer.levels=2", "model.tokenizer.codebook_size=4", "model.precision=float32"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("llm")


@pytest.fixture(scope="module")
def lm_dir(root):
    return tiny_llama(root / "lm")


@pytest.fixture(scope="module")
def data(root):
    rows = [[u] + [(u + j) % 20 + 1 for j in range(5 + u % 4)] for u in range(1, 41)]
    titles = {i: f"{['Widget', 'Gadget', 'Thing'][i % 3]} {i} thing" for i in range(1, 21)}
    return write_p5(root / "tiny", rows, titles)


@pytest.fixture(scope="module")
def sid_run(root, lm_dir, data):
    torch.manual_seed(0)
    overrides = [
        f"model.lm={lm_dir}", *SID, "train.epochs=2", "train.batch_size=8", "model.title_to_codes_weight=0.5",
        "model.codes_to_title_weight=0.5", "model.history_titles=true",
    ]  # fmt: skip
    cfg = load_config("sid_llm", overrides, str(data))
    train_run(cfg, root / "sid", progress=False)
    return load_run(root / "sid")


def split_of(run):
    ds = prepare_dataset(run.cfg.data)
    return make_split(ds, run.cfg.data, run.items["item_id"].to_numpy(), run.users["user_id"].to_numpy())


def test_code_tokens_are_added_and_start_from_their_items_titles(sid_run):
    model = sid_run.model
    lm_vocab = model.base_vocab
    assert model.lm.get_input_embeddings().num_embeddings == lm_vocab + sum(model.sizes)
    assert model.sizes == [4, 4, 64] and int(model.offsets[0]) == lm_vocab
    # Fresh weights (the trained ones have moved): initialise again and compare with the title centroids.
    fresh = build_model(sid_run.cfg.model, model.n_items, model.n_users)
    fresh.load_state_dict(model.state_dict())
    emb = fresh.lm.get_input_embeddings().weight
    with torch.no_grad():
        emb[: fresh.base_vocab].normal_()
    fresh.init_code_embeddings(np.random.default_rng(0))
    base = emb[: fresh.base_vocab]
    titles = [
        base[fresh.title_tokens[i][fresh.title_tokens[i] >= 0]].mean(0) for i in range(1, fresh.n_items + 1)
    ]
    codes = fresh.item_codes[1:, 0]
    for c in codes.unique().tolist():
        centroid = torch.stack([t for t, code in zip(titles, codes.tolist()) if code == c]).mean(0)
        token = emb[int(fresh.offsets[0]) + c]
        assert torch.cosine_similarity(token, centroid, 0) > 0.9
        assert abs(float(token.detach().norm() / base.norm(dim=1).mean()) - 1) < 0.2


def test_prompts_hold_the_history_codes_in_order(sid_run):
    model = sid_run.model
    prompt = model.history_prompt([0, 3, 7])
    t3, t7 = model.code_tokens(3), model.code_tokens(7)
    assert prompt[: len(model.text["history"])] == model.text["history"]
    assert prompt[-len(model.text["next"]) :] == model.text["next"]
    body = prompt[len(model.text["history"]) : -len(model.text["next"])]
    assert body == t3 + model.title_of(3) + model.text["sep"] + t7 + model.title_of(7) + model.text["sep"]
    assert all(t >= model.base_vocab for t in t3) and model.title_of(3)
    long = model.history_prompt(list(range(1, 21)) * 2)  # only the newest max_len items
    assert long.count(model.code_tokens(20)[0]) >= 1 and len(long) < 2 * len(
        model.history_prompt(range(1, 21))
    )


def test_training_batches_mix_tasks_and_label_only_targets(sid_run):
    model = sid_run.model
    split = split_of(sid_run)
    batches = list(model.training_batches(split, np.random.default_rng(0), 4))
    n_rec = int(np.maximum(split.train.lengths() - 1, 0).sum())
    assert sum(len(b) for b in batches) == n_rec + 2 * round(0.5 * n_rec)
    for b in batches:
        real = b.labels >= 0
        assert torch.equal(b.input_ids[real], b.labels[real])
        assert (b.attention_mask[:, -1] == 1).all()  # left padding: every row ends with a real token
    eos_targets = sum(int((b.labels == model.eos).sum()) for b in batches)
    assert eos_targets == round(0.5 * n_rec)  # codes -> title examples end with EOS


def test_run_trains_saves_and_loads_the_same_model(sid_run, tmp_path):
    history = sid_run.metrics["training"]["history"]
    assert len(history) == 2 and history[1]["loss"] < history[0]["loss"]
    assert (sid_run.dir / "semantic_ids.safetensors").exists()
    again = load_run(sid_run.dir)
    for key, value in sid_run.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    user = sid_run.users["user_id"][3]
    assert (
        sid_run.recommend(user=user, k=5)["item_id"].to_list()
        == again.recommend(user=user, k=5)["item_id"].to_list()
    )
    assert (
        "constrained beam search in transformers' generate"
        in sid_run.metrics["protocol"]["checkpoint_selection"]
    )


def test_constrained_generate_returns_k_real_distinct_unseen_items_for_every_user(sid_run):
    model = sid_run.model.eval()
    seq = split_of(sid_run).sequences
    rows = np.arange(seq.n_users)
    batch = history_batch(seq.offsets, seq.items, rows, model.max_history)
    seen = history_batch(seq.offsets, seq.items, rows, None).items
    k = 10
    ids, scores = model.recommend(batch, k, exclude=seen)
    assert ids.shape == (seq.n_users, k)
    for row, hist in zip(ids.tolist(), seen.tolist()):
        assert len(set(row)) == k and all(1 <= i <= model.n_items for i in row)
        assert not set(row) & set(hist)
    assert torch.isfinite(scores).all()
    # Without exclusion every list is the beams' own items, best first.
    ids2, scores2 = model.recommend(batch, k)
    assert (scores2 > -1e8).all() and (scores2[:, :-1] >= scores2[:, 1:] - 1e-5).all()
    # The prompt's KV cache shared by the beams changes nothing.
    model.share_prompt_cache = False
    try:
        ids3, scores3 = model.recommend(batch, k)
    finally:
        model.share_prompt_cache = True
    assert torch.equal(ids2, ids3)
    torch.testing.assert_close(scores2, scores3, atol=1e-4, rtol=1e-4)


def test_a_hostile_generation_config_changes_nothing(sid_run, lm_dir, tmp_path):
    hostile = tmp_path / "hostile_lm"
    shutil.copytree(lm_dir, hostile)
    plant_hostile_generation_config(hostile)
    cfg = sid_run.cfg.model.model_copy(update={"lm": str(hostile)})
    model = build_model(cfg, sid_run.model.n_items, sid_run.model.n_users)
    model.load_state_dict(sid_run.model.state_dict())
    model.eval()
    batch = HistoryBatch(torch.tensor([[0, 3, 4, 5], [1, 2, 7, 8]]))
    exclude = torch.tensor([[3, 4, 5, 0], [1, 2, 7, 8]])
    got = model.recommend(batch, 8, exclude)
    want = sid_run.model.eval().recommend(batch, 8, exclude)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    assert (got[1] > -1e8).all()  # every place is a beam's item, none filled


def test_log_likelihood_matches_the_beam_scores_and_sums_to_at_most_one(sid_run):
    model = sid_run.model.eval()
    batch = HistoryBatch(torch.tensor([[0, 3, 4, 5], [1, 2, 7, 8]]))
    ids, scores = model.recommend(batch, 5)
    with torch.no_grad():
        ll = model.log_likelihood(batch, ids)
    torch.testing.assert_close(ll, scores, atol=1e-4, rtol=1e-4)
    everything = torch.arange(1, model.n_items + 1).expand(2, -1)
    with torch.no_grad():
        total = model.log_likelihood(batch, everything).exp().sum(1)
    assert (total <= 1 + 1e-4).all() and (total > 0).all()
    assert model.log_likelihood(batch, torch.tensor([[0], [0]])).isinf().all()
    # Differentiable, for preference objectives.
    model.train()
    model.log_likelihood(batch, ids[:, :2]).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    model.zero_grad(set_to_none=True)
    model.eval()


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_finetune_modes_choose_the_trainable_weights(lm_dir, mode):
    cfg = load_config("sid_llm", [f"model.lm={lm_dir}", *SID, f"model.finetune={mode}"]).model
    model = build_model(cfg, 20, 5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any("embed_tokens" in n for n in trainable)
    if mode == "lora":
        assert any("lora_" in n for n in trainable) and any("q_proj.base_layer" in n for n in frozen)
    else:
        assert not frozen and not any("lora_" in n for n in trainable)


# --- hllm ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hllm_run(root, lm_dir, data):
    torch.manual_seed(0)
    overrides = [
        f"model.item_lm={lm_dir}",
        "model.dim=16",
        "model.max_len=8",
        "train.epochs=2",
        "train.batch_size=8",
    ]
    cfg = load_config("hllm", overrides, str(data))
    train_run(cfg, root / "hllm", progress=False)
    return load_run(root / "hllm")


def test_hllm_item_vectors_come_from_the_item_llm_and_training_lowers_the_loss(hllm_run, lm_dir):
    from genrec.items.text import encode_texts, item_texts

    model = hllm_run.model
    assert model.cfg.text_dim == 32  # read from the tiny LM's config
    expected = encode_texts(item_texts(hllm_run.items), str(lm_dir), pooling="last")
    torch.testing.assert_close(model.text_emb[1:], torch.from_numpy(expected))
    history = hllm_run.metrics["training"]["history"]
    assert history[1]["loss"] < history[0]["loss"]


def test_hllm_scores_items_it_never_trained_on_from_their_text(root, lm_dir, data):
    cfg = load_config("hllm", [f"model.item_lm={lm_dir}", "model.dim=16", "model.max_len=8"], str(data))
    ds = prepare_dataset(cfg.data)
    split, is_cold, _ = cold_start_split(make_split(ds, cfg.data), share=0.2)
    from genrec.runs.task import item_table  # the runs layer builds the item table a run stores

    model = build_model(cfg.model, split.n_items, split.sequences.n_users)
    model.prepare(split, Resources(items=item_table(split.sequences.item_ids, ds)))
    cold = torch.from_numpy(np.flatnonzero(is_cold))
    assert len(cold) and not np.isin(cold.numpy(), split.train.items).any()
    scores = model.eval().score(HistoryBatch(torch.tensor([[1, 2, 3]])))
    assert torch.isfinite(scores[0, cold]).all()
    # Two cold items with different texts get different scores: the text decides.
    assert len(set(scores[0, cold].tolist())) == len(cold)


def _ddp_step(rank: int, world: int, port: int, lm_dir: str, state: dict, batch, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    cfg = load_config("sid_llm", [f"model.lm={lm_dir}", *SID]).model
    model = build_model(cfg, 20, 40)
    model.load_state_dict(state)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=0.1)
    half = len(batch.input_ids) // world
    rows = slice(rank * half, (rank + 1) * half)
    shard = type(batch)(batch.input_ids[rows], batch.attention_mask[rows], batch.labels[rows])
    ddp(shard).backward()  # each rank its own half of the batch
    optimizer.step()
    torch.save(
        {k: v for k, v in model.state_dict().items() if "lora" in k or "embed" in k}, f"{out}/rank{rank}.pt"
    )
    dist.destroy_process_group()


def test_sid_llm_trains_under_ddp_with_gloo_on_two_processes(sid_run, lm_dir, tmp_path):
    """Two CPU processes (gloo), each a different half of a batch: after one step both hold the same weights,
    and they differ from the start (the gradients were averaged, not skipped)."""
    import socket

    import torch.multiprocessing as mp

    model = sid_run.model
    split = split_of(sid_run)
    batch = next(iter(model.training_batches(split, np.random.default_rng(0), 8)))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_step, args=(2, port, str(lm_dir), state, batch, str(tmp_path)), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a.keys() == b.keys() and any("lora" in k for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert any(not torch.equal(a[k], state[k]) for k in a)


def test_causal_lm_item_vectors_keep_the_order_of_the_texts(lm_dir):
    from genrec.items.text import encode_texts

    texts = ["Widget 3 thing . categories : Cat", "Gadget", "Thing 7", ""]
    together = encode_texts(texts, str(lm_dir), batch_size=2, use_cache=False, pooling="last")
    for i, text in enumerate(texts[:3]):
        alone = encode_texts([text], str(lm_dir), use_cache=False, pooling="last")
        np.testing.assert_allclose(together[i], alone[0], atol=1e-5)
    assert not together[3].any()


# --- preference alignment of sid_llm ---------------------------------------------------------------------------


def test_genrec_align_runs_dpo_on_sid_llm_from_rating_pairs(root, lm_dir, tmp_path):
    """The alignment command applies to sid_llm like to any log-likelihood model: rating pairs from a CSV with
    ratings, DPO against the frozen SFT copy, an aligned run that loads and generates real items."""
    import polars as pl

    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, 31):
        for t, i in enumerate(rng.choice(np.arange(1, 21), 8, replace=False)):
            rows.append((u, int(i), 1000 * u + t, 5 if i % 2 else 1))  # odd items liked, even disliked
    folder = root / "rated"
    folder.mkdir()
    pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "rating"], orient="row").write_csv(
        folder / "interactions.csv"
    )
    titles = {i: f"{['Widget', 'Gadget', 'Thing'][i % 3]} {i} thing" for i in range(1, 21)}
    write_p5(root / "rated-items", [[1, 1]], titles)
    overrides = [
        f"model.lm={lm_dir}", *SID, "train.epochs=1", "train.batch_size=8",
        f"data.items_path={root / 'rated-items' / 'items.jsonl'}",
    ]  # fmt: skip
    torch.manual_seed(0)
    train_run(
        load_config("sid_llm", overrides, str(folder / "interactions.csv")), tmp_path / "sft", progress=False
    )
    aligning = [f"init_from={tmp_path / 'sft'}", "data.pairs=ratings", "train.objective.name=dpo"]
    aligning += ["train.objective.beta=0.5", "train.lr=0.01", "data.anchors_per_user=2", "train.threads=1"]
    metrics = train_run(
        load_config("preference", [*aligning, "train.epochs=3"]), tmp_path / "dpo", progress=False
    )
    assert metrics["protocol"]["alignment"]["pair_source"] == "ratings"
    assert "disliked_share@10" in metrics["test"]
    sft, aligned = load_run(tmp_path / "sft"), load_run(tmp_path / "dpo")
    assert aligned.cfg.model.name == "sid_llm"
    changed = [
        n
        for (n, a), b in zip(aligned.model.state_dict().items(), sft.model.state_dict().values())
        if not torch.equal(a, b)
    ]
    assert changed  # DPO moved the trainable weights
    history = torch.tensor([[1, 3, 5]])
    liked, disliked = torch.tensor([[7, 9, 11]]), torch.tensor([[8, 10, 12]])

    def margin(model) -> float:
        with torch.no_grad():
            batch = HistoryBatch(history)
            return float(
                model.log_likelihood(batch, liked).mean() - model.log_likelihood(batch, disliked).mean()
            )

    assert margin(aligned.model.eval()) > margin(sft.model.eval())
    top = aligned.recommend(user=aligned.users["user_id"][0], k=5)
    assert len(top) == 5 and len(set(top["item_id"].to_list())) == 5
