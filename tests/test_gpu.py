"""Checks that need a CUDA device (`pytest -m gpu`; deselected by default, skipped without CUDA): the same numbers
on the GPU as on the CPU for a training step, full-catalogue evaluation and constrained decoding, and the device
helpers on a real card. `python -m benchmarks gpu` runs them first."""

import numpy as np
import pytest
import torch

from genrec import runtime
from genrec.config import EvalConfig, load_config
from genrec.data.batching import HistoryBatch
from genrec.data.split import Csr, EvalSet
from genrec.eval.evaluator import evaluate
from genrec.items.semantic_ids import SemanticIds
from genrec.models import build_model
from genrec.objectives import build_objective

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]
CUDA = torch.device("cuda")


def test_device_helpers_on_a_card():
    assert runtime.resolve_device("auto") == torch.device("cuda", 0)
    assert runtime.resolve_device("cuda:0") == torch.device("cuda", 0)
    name = runtime.device_name("cuda")
    assert name.startswith("cuda:0 (") and torch.cuda.get_device_name(0) in name
    assert runtime.enable_tf32("cuda") == (torch.cuda.get_device_capability()[0] >= 8)
    precision = runtime.resolve_precision("auto", "cuda")
    assert precision.name == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    x = torch.randn(8, 8, device=CUDA)
    with runtime.resolve_precision("bf16", "cuda").autocast():
        assert (x @ x).dtype == torch.bfloat16
    assert isinstance(runtime.resolve_precision("fp16", "cuda").grad_scaler(), torch.amp.GradScaler)


def sasrec(n_items: int = 200):
    cfg = load_config("sasrec", ["model.dim=32", "model.max_len=16", "model.dropout=0"]).model
    torch.manual_seed(0)
    return build_model(cfg, n_items, 50)


def test_a_training_step_gives_the_cpu_loss_and_gradients():
    cpu = sasrec()
    gpu = sasrec().to(CUDA)
    gpu.load_state_dict(cpu.state_dict())
    items = torch.randint(0, 201, (16, 17), generator=torch.Generator().manual_seed(1))
    grads = []
    for model in (cpu, gpu):
        objective = build_objective("full_softmax", model)
        loss = objective(model, runtime.to_device((items, None), runtime.module_device(model)))
        loss.backward()
        grads.append((float(loss), model.item_emb.weight.grad.cpu()))
    assert grads[1][0] == pytest.approx(grads[0][0], rel=1e-4)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=1e-4, rtol=1e-3)


def test_chunked_evaluation_on_the_gpu_equals_the_cpu():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 20, size=300)
    history = Csr(np.r_[0, np.cumsum(lengths)], rng.integers(1, 201, size=int(lengths.sum())))
    examples = EvalSet(np.arange(300), history, rng.integers(1, 201, size=300))
    cfg = EvalConfig(batch_size=64)
    model = sasrec()
    on_cpu = evaluate(model, examples, 200, cfg, chunk=37)
    on_gpu = evaluate(model.to(CUDA), examples, 200, cfg, chunk=37)
    for name in ("filtered", "unfiltered"):
        for key, value in on_cpu[name].items():
            assert on_gpu[name][key] == pytest.approx(value, abs=2e-3), (name, key)


def test_constrained_decoding_on_the_gpu_returns_the_cpu_lists():
    cfg = load_config(
        "tiger",
        [
            "model.dim=32",
            "model.tokenizer.levels=2",
            "model.tokenizer.codebook_size=8",
            "model.precision=float32",
        ],
    ).model
    torch.manual_seed(0)
    model = build_model(cfg, 60, 10).eval()
    codes = np.stack([np.arange(60) % 8, np.arange(60) // 8 % 8, np.arange(60) // 64], 1)
    model.set_semantic_ids(SemanticIds(codes, [8, 8, 1]))
    batch = HistoryBatch(torch.tensor([[0, 3, 4, 5], [1, 2, 7, 8]]))
    exclude = torch.tensor([[3, 4, 5, 0], [1, 2, 0, 0]])
    on_cpu = model.recommend(batch, 10, exclude)
    model.to(CUDA)
    on_gpu = model.recommend(runtime.to_device(batch, CUDA), 10, exclude.to(CUDA))
    assert on_gpu[0].device.type == "cuda"
    assert torch.equal(on_gpu[0].cpu(), on_cpu[0])
    torch.testing.assert_close(on_gpu[1].cpu(), on_cpu[1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_run_trains_and_serves_on_the_gpu_in_each_precision(precision, tiny_sequences, tmp_path):
    """The pipeline end to end on the card: training in the precision (fp16 with its GradScaler), the protocol's
    record, the loaded run on cuda and on the CPU giving the same top-k."""
    from genrec.runs import load_run, train_run

    sets = ["model.dim=16", "model.max_len=8", "model.dropout=0", "train.epochs=2", "train.batch_size=8"]
    cfg = load_config(
        "sasrec", [*sets, "train.device=cuda", f"train.precision={precision}"], str(tiny_sequences)
    )
    metrics = train_run(cfg, tmp_path / "run", progress=False)
    assert metrics["protocol"]["device"] == "cuda:0" and metrics["protocol"]["precision"] == precision
    assert all(np.isfinite(h["loss"]) for h in metrics["training"]["history"])
    on_gpu, on_cpu = load_run(tmp_path / "run", "cuda"), load_run(tmp_path / "run", "cpu")
    assert on_gpu.device.type == "cuda"
    a, b = on_gpu.recommend(history=["2", "3"], k=5), on_cpu.recommend(history=["2", "3"], k=5)
    assert a["item_id"].to_list() == b["item_id"].to_list()
