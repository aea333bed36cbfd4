"""Compiled steps (`genrec.runtime.compile_step`): the compiled training step equals the eager one, and a step
that cannot be compiled runs eagerly after a one-line warning."""

import time
import warnings

import numpy as np
import pytest
import torch

from genrec.config import load_config
from genrec.models import build_model
from genrec.objectives import build_objective
from genrec.runtime import compile_step


def three_steps(compiled: bool) -> list[float]:
    cfg = load_config(
        "sasrec", ["model.dim=16", "model.max_len=8", "model.dropout=0", "model.softmax_dtype=float32"]
    ).model
    torch.manual_seed(0)
    model = build_model(cfg, 30, 10).train()
    objective = build_objective(model.cfg.default_objective, model, np.arange(1, 31))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 31, (6, 9), generator=gen), None) for _ in range(3)]

    def loss_fn(batch):
        return objective(model, batch)

    step = compile_step(loss_fn) if compiled else loss_fn
    losses = []
    for batch in batches:
        loss = step(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        losses.append(float(loss_fn(batches[0])))  # after the third update
    return losses


@pytest.mark.slow  # compiling with inductor takes 20-40 s on 2 cores
def test_compiled_step_equals_the_eager_one_after_three_steps():
    t0 = time.perf_counter()
    eager, compiled = three_steps(False), three_steps(True)
    assert compiled == pytest.approx(eager, abs=1e-5), (eager, compiled, time.perf_counter() - t0)


def test_a_step_that_cannot_be_compiled_runs_eagerly_after_one_warning():
    def refuse(graph, example_inputs):
        raise RuntimeError("no compiler for this graph")

    calls = []

    def fn(x):
        calls.append(1)
        return x * 2

    step = compile_step(fn, backend=refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.equal(step(torch.ones(3)), torch.full((3,), 2.0))
        assert torch.equal(step(torch.ones(2)), torch.full((2,), 2.0))
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "running eagerly" in messages[0] and "\n" not in messages[0]
    assert compile_step(fn, enabled=False) is fn
