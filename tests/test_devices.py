"""Device independence: device and precision resolution, every registered model's training step and scoring on
PyTorch's `meta` device, and weights moving between devices.

A meta tensor has a shape and a dtype but no data, so any tensor that model code creates on the CPU by itself (a
`torch.arange` without `device=`) meets the meta inputs and fails: what would fail on a GPU fails here, on a machine
without one. Data-dependent host reads (`.item()`, `.tolist()`) fail too, which keeps them out of the hot paths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_p5
from test_model_contract import TINY as CONTRACT_TINY
from tiny_llm import tiny_llama

from genrec import registry, runtime
from genrec.config import RankDataConfig, load_config
from genrec.data.batching import HistoryBatch
from genrec.errors import ConfigError
from genrec.items.semantic_ids import SemanticIds
from genrec.models import build_model
from genrec.models.base import Resources
from genrec.objectives import build_objective
from genrec.runs import make_split, prepare_dataset
from genrec.runs.ranking import prepare_feedback
from genrec.training.checkpoint import load_model_weights, load_weights, save_weights

META = torch.device("meta")


@pytest.fixture(autouse=True)
def boolean_masks_on_meta():
    """Boolean-mask indexing (`hidden[items > 0]`) has a data-dependent shape; on meta it is taken to keep every
    element, which is all a shape check needs."""
    import torch.fx.experimental._config as fx_config

    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        yield


# --- device and precision resolution ------------------------------------------------------------------------------


def test_auto_device_is_cuda_only_where_cuda_is_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.resolve_device("auto").type == expected
    assert runtime.resolve_device("CPU") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_a_one_line_error(spec):
    with pytest.raises(ConfigError) as err:
        runtime.resolve_device(spec, what="--device")
    assert str(err.value) == f"--device {spec}: no CUDA device is available on this machine"


def test_unknown_device_names_the_choices():
    for spec in ("gpu", "cuda:x", "tpu:0", ""):
        with pytest.raises(ConfigError, match="is not one of auto, cpu, cuda, cuda:N, mps"):
            runtime.resolve_device(spec, what="train.device")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_mps_is_an_error():
    with pytest.raises(ConfigError, match="mps: no Apple GPU"):
        runtime.resolve_device("mps")


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert runtime.resolve_precision("auto", cpu).name == "fp32"  # the CPU keeps its float32 steps
    bf16 = runtime.resolve_precision("bf16", cpu)
    assert bf16.dtype == torch.bfloat16 and bf16.grad_scaler() is None
    assert runtime.resolve_precision("fp16", cpu).grad_scaler() is not None  # fp16 scales its loss
    with pytest.raises(ConfigError, match="precision 'fp64' is not one of auto, fp32, bf16, fp16"):
        runtime.resolve_precision("fp64", cpu)
    x = torch.randn(4, 4)
    with bf16.autocast():
        assert (x @ x).dtype == torch.bfloat16
    with runtime.resolve_precision("fp32", cpu).autocast():
        assert (x @ x).dtype == torch.float32
    with runtime.resolve_precision("bf16", META).autocast():  # no autocast on meta: a no-op, not an error
        assert (x.to(META) @ x.to(META)).dtype == torch.float32


def test_device_name_names_the_processor():
    name = runtime.device_name("cpu")
    assert name.startswith("cpu (") and name.endswith(")") and len(name) > len("cpu ()")
    assert runtime.enable_tf32("cpu") is False  # TF32 is a GPU matter: the CPU is left alone


def test_to_device_moves_nested_batches():
    batch = (HistoryBatch(torch.zeros(2, 3, dtype=torch.long), None, torch.ones(2, 3)), [torch.ones(1)], 5)
    moved = runtime.to_device(batch, META)
    assert moved[0].items.device == META and moved[0].timestamps.device == META and moved[0].users is None
    assert moved[1][0].device == META and moved[2] == 5 and batch[0].items.device.type == "cpu"


# --- every registered model on the meta device --------------------------------------------------------------------

N_ITEMS = 20
# The contract tests' tiny sizes, plus what these tests need: half of unified's positions as search examples (its
# random draw), hllm's text width given (no LM read for it), few itemknn neighbours.
TINY = {
    **CONTRACT_TINY,
    "unified": [*CONTRACT_TINY["unified"], "model.search_weight=0.5"],
    "hllm": [*CONTRACT_TINY["hllm"], "model.text_dim=32"],
    "itemknn": ["model.neighbours=5"],
}
# Variants that take other code paths: other objectives, the history bias, linear attention, the T5 backbone.
VARIANTS = {
    "sasrec+sampled": ("sasrec", ["train.objective.name=sampled_softmax", "train.objective.negatives=8"]),
    "sasrec+bce": ("sasrec", ["train.objective=bce"]),
    "sasrec+bias": (
        "sasrec",
        ["model.history_bias=true", "model.tie_output=false"],
    ),
    "sasrec+contrastive": ("sasrec", ["train.objective=contrastive"]),
    "sasrec+linear": ("sasrec", ["model.attention=linear"]),
    "hstu+linear": ("hstu", ["model.attention=linear"]),
    "textrec+id": ("textrec", ["model.use_id=true", "model.l2_normalize=true"]),
    "tiger+items": ("tiger", ["model.history_tokens=items"]),
    "tiger+t5": ("tiger", ["model.backbone=t5"]),
}
# Steps that stay on the host by design, each with its reason; everything else of these models runs on meta.
HOST_BOUND = {
    "llm_tree": "walks its category tree with a language model, one user at a time (text prompts on the host)",
    "sid_llm recommend": "decodes with transformers' generate, whose beam search reads scores on the host",
    "tiger cold_share": "reads whether the cold or warm list ran short to decide on a second beam search",
    "textrec retrieval=faiss": "searches a FAISS index in host memory (faiss-cpu)",
}


@pytest.fixture(autouse=True)
def transformers_on_meta(monkeypatch):
    """transformers drops an attention mask that is all ones by reading it on the host, which meta tensors cannot
    give: there it keeps the mask, as it does while a graph is traced. (Its kernel hub is turned off per model in
    `retrieval_model`: it has no kernels for meta.)"""
    from transformers import masking_utils

    traced = masking_utils.is_tracing
    monkeypatch.setattr(
        masking_utils, "is_tracing", lambda t=None: traced(t) or (t is not None and t.device.type == "meta")
    )


def tiny_rows() -> list[list[int]]:
    return [[u] + [(u + j) % N_ITEMS + 1 for j in range(5 + u % 4)] for u in range(1, 41)]


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    folder = write_p5(tmp_path_factory.mktemp("devices") / "tiny", tiny_rows())
    cfg = load_config("sasrec", [], str(folder))
    return make_split(prepare_dataset(cfg.data), cfg.data)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny_lm") / "lm")


def retrieval_model(name: str, overrides: list[str], split, lm_dir):
    """A model of `name` with what `prepare` would set (semantic IDs, text vectors) set from random numbers."""
    extra = {"sid_llm": [f"model.lm={lm_dir}"], "hllm": [f"model.item_lm={lm_dir}"]}.get(name, [])
    run_cfg = load_config(name, TINY.get(name, []) + overrides + extra)
    cfg = run_cfg.model
    torch.manual_seed(0)
    model = build_model(cfg, split.n_items, split.n_users)
    model.objective_spec = run_cfg.train.objective  # the run's objective, as the pipeline would build it
    rng = np.random.default_rng(0)
    if hasattr(model, "set_semantic_ids"):
        levels, size = cfg.tokenizer.levels, cfg.tokenizer.codebook_size
        digits = [np.arange(split.n_items) // size**lv % size for lv in range(levels)]
        if cfg.tokenizer.collisions == "separate":  # one more level numbers the items that share the others
            digits.append(np.arange(split.n_items) // size**levels)
        codes = np.stack(digits, 1)
        sizes = [size] * levels + ([int(codes[:, -1].max()) + 1] if codes.shape[1] > levels else [])
        model.set_semantic_ids(SemanticIds(codes, sizes))
    if hasattr(model, "set_trained_items"):
        model.set_trained_items(np.arange(1, split.n_items // 2))
    if hasattr(model, "set_text_embeddings"):
        model.set_text_embeddings(rng.normal(size=(split.n_items, model.cfg.text_dim)).astype(np.float32))
    if hasattr(model, "set_text"):
        shape = (split.n_items, model.cfg.text_dim)
        model.set_text(rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32))
    if not model.trainable:
        model.prepare(split, Resources())
    for module in model.modules():
        if getattr(module, "_use_kernels", False):
            module._use_kernels = False
    return model


def retrieval_cases() -> list[tuple[str, list[str]]]:
    plain = [(n, []) for n in registry.names("retrieval") if n != "llm_tree"]
    return plain + list(VARIANTS.values())


def case_id(case) -> str:
    name, overrides = case
    return next((k for k, v in VARIANTS.items() if v == case), name) if overrides else name


@pytest.mark.parametrize("case", retrieval_cases(), ids=case_id)
def test_retrieval_model_runs_on_the_meta_device(case, tiny_split, tiny_lm):
    name, overrides = case
    model = retrieval_model(name, overrides, tiny_split, tiny_lm)
    if hasattr(model, "tries"):
        model.tries()  # built on the host from the item codes, which meta tensors do not hold
    rng = np.random.default_rng(0)
    if model.trainable:
        objective = build_objective(model.objective_spec, model, tiny_split.train.items)
        batch = next(iter(model.training_batches(tiny_split, rng, 8)))
        model.to(META).train()
        loss = objective(model, runtime.to_device(batch, META))
        assert loss.device == META and loss.shape == ()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is None or g.device == META for g in grads)
    model.to(META).eval()
    items = torch.tensor([[0, 3, 4, 5], [1, 2, 7, 8]], device=META)
    times = torch.arange(8, device=META).view(2, 4) * 3600
    batch = HistoryBatch(items, torch.tensor([0, 1], device=META), times)
    exclude = torch.tensor([[3, 4, 5, 0], [1, 2, 0, 0]], device=META)
    with torch.no_grad():
        if model.can("score"):
            assert model.score(batch).shape == (2, model.n_items + 1)
        if name == "sid_llm":
            pytest.skip(HOST_BOUND["sid_llm recommend"])
        ids, scores = model.recommend(batch, 5, exclude)
        assert ids.device == META and scores.device == META and ids.shape == (2, 5)
        if model.can("item_vectors"):
            assert model.query_vectors(batch) @ model.item_vectors().t() is not None
        if model.can("log_likelihood"):
            assert model.log_likelihood(batch, exclude.clamp(min=1)).device == META
        if model.can("generate_sessions"):
            sessions, _ = model.generate_sessions(batch, 3, exclude=exclude)
            assert sessions.device == META
            assert model.session_log_likelihood(batch, sessions.clamp(min=1)).device == META
        if model.can("search"):
            assert model.search_scores(batch, torch.zeros(2, model.cfg.text_dim, device=META)).device == META
        if model.can("incremental_state"):
            state = model.init_state(items[1, :2], times[1, :2])
            state, _ = model.extend_state(state, items[1, 2:], times[1, 2:], items[1], times[1])
            assert model.state_query(state).device == META


def test_host_bound_steps_name_real_models():
    assert {key.split()[0] for key in HOST_BOUND} <= set(registry.names())


@pytest.fixture(scope="module")
def feedback():
    return prepare_feedback(RankDataConfig(dataset="ml-100k"))[0]


RANKER_VARIANTS = {
    "din+text": (
        "din",
        ["model.text_features=true", "model.cross_features=true"],
    ),
    "hstu_ranker+compressed": ("hstu_ranker", ["model.compress_history=true", "model.compress_keep=2"]),
}


@pytest.mark.parametrize(
    "case",
    [(n, []) for n in registry.names("ranking")] + list(RANKER_VARIANTS.values()),
    ids=lambda c: next((k for k, v in RANKER_VARIANTS.items() if v == c), c[0]),
)
def test_ranker_runs_on_the_meta_device(case, feedback):
    name, overrides = case
    cfg = load_config(name, ["model.dim=8", "model.max_len=8", *overrides]).model
    text = np.random.default_rng(0).normal(size=(feedback.n_items, 12)).astype(np.float32)
    torch.manual_seed(0)
    model = registry.get(name)(cfg, feedback, text if cfg.text_features else None)
    objective = build_objective(model.cfg.default_objective, model)
    train = next(iter(model.training_batches(feedback, np.random.default_rng(0), 4)))
    _, evaluation = next(model.eval_batches(feedback, feedback.test, 4))
    model.to(META).train()
    loss = objective(model, runtime.to_device(train, META))
    assert loss.device == META
    loss.backward()
    model.eval()
    z = model.score_candidates(runtime.to_device(evaluation, META))
    assert z.device == META and z.shape == evaluation.items.shape
    assert model.logits(runtime.to_device(evaluation, META)).device == META


# --- weights across devices ---------------------------------------------------------------------------------------


def test_weights_saved_on_one_device_load_on_another(tiny_split, tiny_lm, tmp_path):
    """A file written from the CPU reads onto the meta device (shapes and dtypes) and into a model built on the
    meta device (its tensors become the file's), and into a CPU model exactly."""
    model = retrieval_model("hstu", [], tiny_split, tiny_lm)
    state = model.state_dict()
    save_weights(tmp_path / "w.safetensors", state)
    on_meta = load_weights(tmp_path / "w.safetensors", device=META)
    assert {t.device for t in on_meta.values()} == {META}
    assert {k: (v.shape, v.dtype) for k, v in on_meta.items()} == {
        k: (v.shape, v.dtype) for k, v in state.items()
    }
    with torch.device(META):  # built without memory, then given the file's tensors
        shell = build_model(model.cfg, model.n_items, model.n_users)
    assert {t.device for t in shell.state_dict().values()} == {META}
    shell.load_state_dict(load_weights(tmp_path / "w.safetensors", device="cpu"), assign=True)
    again = retrieval_model("hstu", [], tiny_split, tiny_lm)
    torch.nn.init.zeros_(again.item_emb.weight)
    load_model_weights(again, tmp_path / "w.safetensors", device="cpu")
    for key, value in state.items():
        assert torch.equal(value, shell.state_dict()[key]) and torch.equal(value, again.state_dict()[key]), (
            key
        )
