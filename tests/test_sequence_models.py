import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genrec.config import EvalConfig, TrainConfig, load_config
from genrec.data.batching import HistoryBatch
from genrec.data.registry import load_dataset
from genrec.data.split import leave_one_out
from genrec.eval.evaluator import evaluate
from genrec.models import build_model
from genrec.objectives import build_objective, losses
from genrec.runs.retrieval import fit_retrieval
from genrec.training.trainer import FitContext


def test_chunked_softmax_matches_plain_cross_entropy():
    torch.manual_seed(0)
    h = torch.randn(37, 8, requires_grad=True)
    w = torch.randn(20, 8, requires_grad=True)
    t = torch.randint(1, 20, (37,))
    loss = losses.full_softmax(h, w, t, chunk=5)
    gh, gw = torch.autograd.grad(loss, [h, w])
    logits = h @ w.t()
    logits = torch.cat([torch.full((37, 1), float("-inf")), logits[:, 1:]], 1)
    ref = F.cross_entropy(logits, t)
    rh, rw = torch.autograd.grad(ref, [h, w])
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(gh, rh, atol=1e-5) and torch.allclose(gw, rw, atol=1e-5)
    # The gradient is computed in the forward pass: an outer scale must still reach it.
    gh3, gw3 = torch.autograd.grad(3.0 * losses.full_softmax(h, w, t, chunk=5), [h, w])
    assert torch.allclose(gh3, 3 * rh, atol=1e-5) and torch.allclose(gw3, 3 * rw, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(losses.full_softmax(h, w, t, chunk=5), ref, atol=1e-5)


def test_sampled_softmax_and_bce_are_finite_and_differentiable():
    torch.manual_seed(0)
    h = torch.randn(16, 8, requires_grad=True)
    w = torch.randn(50, 8, requires_grad=True)
    t = torch.randint(1, 50, (16,))
    log_q = torch.log(torch.full((50,), 1 / 49))
    for loss in (losses.sampled_softmax(h, w, t, 10, log_q), losses.bce_one_negative(h, w, t)):
        assert torch.isfinite(loss)
        loss.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()


@pytest.mark.parametrize("name, extra", [("sasrec", []), ("sasrec", ["model.positions=none"]), ("hstu", [])])
def test_encoder_is_causal_and_ignores_padding(name, extra):
    torch.manual_seed(0)
    cfg = load_config(name, ["model.dim=16", "model.max_len=6", "model.dropout=0.0", *extra]).model
    model = build_model(cfg, 30, 5).eval()
    if extra:
        assert model.tower.pos_emb is None
    items = torch.tensor([[0, 0, 3, 4, 5, 6]])
    changed_future = torch.tensor([[0, 0, 3, 4, 9, 1]])
    a, b = model.encode(items), model.encode(changed_future)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)  # positions 0..3 cannot see items 4..5
    assert not torch.allclose(a[:, 5], b[:, 5])
    # More left padding must not change what a real position computes.
    shorter = model.encode(torch.tensor([[3, 4, 5, 6]]))
    assert torch.allclose(shorter[:, -1], a[:, -1], atol=1e-5)
    scores = model.score(HistoryBatch(items))
    assert scores.shape == (1, 31)


def test_hstu_without_position_bias_has_no_position_parameters():
    cfg = load_config("hstu", ["model.dim=16", "model.max_len=6", "model.position_bias=false"]).model
    model = build_model(cfg, 30, 5)
    names = [name for name, _ in model.named_parameters()]
    assert "bias.pos" not in names and "bias.pos" in model.state_dict()
    assert (model.bias(6, None) == 0).all()
    on = build_model(load_config("hstu", ["model.dim=16", "model.max_len=6"]).model, 30, 5)
    assert "bias.pos" in [name for name, _ in on.named_parameters()]


def test_hstu_time_bias_changes_output_only_with_timestamps():
    torch.manual_seed(0)
    cfg = load_config("hstu", ["model.dim=16", "model.max_len=4", "model.dropout=0.0"]).model
    model = build_model(cfg, 10, 2).eval()
    with torch.no_grad():
        model.bias.time.normal_()
    items = torch.tensor([[1, 2, 3, 4]])
    t1 = torch.tensor([[0, 10, 20, 30]])
    t2 = torch.tensor([[0, 10, 100000, 100010]])
    assert not torch.allclose(model.encode(items, t1), model.encode(items, t2))


@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_sequence_model_learns_successor_pattern(tiny_p5, name):
    split = leave_one_out(load_dataset(str(tiny_p5)).encode())
    torch.manual_seed(0)
    cfg = load_config(name, ["model.dim=16", "model.max_len=8", "model.dropout=0.0"]).model
    model = build_model(cfg, split.n_items, split.n_users)
    summary = fit_retrieval(
        model,
        split,
        FitContext(
            TrainConfig(epochs=60, batch_size=4, lr=0.01, patience=60),
            EvalConfig(ks=[1, 5, 10], exclude_history=False),
            progress=False,
        ),
    )
    res = evaluate(model, split.test, split.n_items, EvalConfig(ks=[1, 5, 10]))
    # Next item = previous + 1 is learnable: far above the 1/8 of a random guess.
    assert res["unfiltered"]["recall@1"] > 0.5, (res["unfiltered"], summary["best_valid"])
    assert np.isfinite(summary["history"][-1]["loss"])


def test_trainer_uses_the_configured_adam_beta2(tiny_p5):
    from genrec.training.trainer import Trainer

    split = leave_one_out(load_dataset(str(tiny_p5)).encode())
    model = build_model(load_config("sasrec", ["model.dim=16"]).model, split.n_items, split.n_users)
    ctx = FitContext(TrainConfig(adam_beta2=0.98), EvalConfig(), progress=False)
    assert all(
        g["betas"] == (0.9, 0.98)
        for g in Trainer(model, loss_of(model), split, no_validation, ctx).optimizer.param_groups
    )


def test_trainer_optimizer_gives_the_per_tensor_loops_bits(tiny_p5):
    """The trainer's AdamW runs the multi-tensor kernel: the same bits per step as PyTorch's per-tensor loop."""
    from genrec.training.trainer import Trainer, build_optimizer

    split = leave_one_out(load_dataset(str(tiny_p5)).encode())
    cfg = load_config("sasrec", ["model.dim=16"]).model
    torch.manual_seed(0)
    model = build_model(cfg, split.n_items, split.n_users)
    reference = build_model(cfg, split.n_items, split.n_users)
    reference.load_state_dict(model.state_dict())
    train_cfg = TrainConfig(lr=0.01, weight_decay=0.1)
    optimizer = Trainer(
        model, loss_of(model), split, no_validation, FitContext(train_cfg, EvalConfig(), progress=False)
    ).optimizer
    assert optimizer.defaults["foreach"] is True
    loop = build_optimizer(reference, train_cfg, foreach=False)
    assert [len(g["params"]) for g in optimizer.param_groups] == [len(g["params"]) for g in loop.param_groups]
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        for p, q in zip(model.parameters(), reference.parameters()):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        optimizer.step()
        loop.step()
    with torch.no_grad():
        diff = max(float((p - q).abs().max()) for p, q in zip(model.parameters(), reference.parameters()))
    assert diff == 0.0


def test_untied_output_table_is_used_for_scoring():
    torch.manual_seed(0)
    cfg = load_config("sasrec", ["model.dim=16", "model.max_len=4", "model.tie_output=false"]).model
    model = build_model(cfg, 10, 2).eval()
    assert model.output_weight() is model.out_emb.weight
    items = torch.tensor([[0, 1, 2, 3]])
    before = model.score(HistoryBatch(items))
    with torch.no_grad():
        model.out_emb.weight.mul_(2.0)
    assert torch.allclose(model.score(HistoryBatch(items)), 2 * before, atol=1e-5)


def test_time_buckets_are_log2_of_the_gap_in_seconds():
    from genrec.nn.hstu import RelativeBias

    bias = RelativeBias(max_len=2, heads=1, time_buckets=32)
    with torch.no_grad():
        bias.time.copy_(torch.arange(33.0)[None])  # bias value = bucket index
    day = 86_400  # log2 = 16.4 -> bucket 16; a ln/log10 mix-up would give a capped or wrong bucket
    out = bias(2, torch.tensor([[0, day]]))
    assert out[0, 0, 1, 0] - bias.pos[0, 2] == 16


def test_distinct_prefix_items_lists_each_earlier_item_once():
    from genrec.models.next_item import distinct_prefix_items

    prefix = distinct_prefix_items(torch.tensor([[0, 3, 5, 3, 7]]))[0]
    assert prefix[0].tolist() == [0, 0, 0, 0, 0]
    assert prefix[3].tolist() == [0, 3, 5, 0, 0]  # the repeated 3 counts once
    assert prefix[4].tolist() == [0, 3, 5, 0, 7]


def test_history_offset_is_fitted_beside_the_model_not_inside_its_loss():
    torch.manual_seed(0)
    n, d, items = 40, 8, 30
    hidden = torch.randn(n, d, requires_grad=True)
    table = torch.randn(items, d, requires_grad=True)
    targets = torch.randint(1, items, (n,))
    seen = torch.stack([torch.randperm(items - 1)[:5] + 1 for _ in range(n)])
    targets[:6] = seen[:6, 2]  # some targets are repeats
    offset = torch.tensor(-1.3, requires_grad=True)
    loss = losses.full_softmax(hidden, table, targets, 16, torch.float32, seen, offset)
    loss.backward()
    got = hidden.grad.clone(), table.grad.clone(), offset.grad.clone()

    hidden.grad = table.grad = offset.grad = None
    logits = (hidden @ table.t()).index_fill(1, torch.tensor([0]), float("-inf"))
    plain = F.cross_entropy(logits, targets)
    plain.backward()  # the model's gradient: as without the offset
    assert torch.allclose(loss, plain, atol=1e-5)
    assert torch.allclose(got[0], hidden.grad, atol=1e-6) and torch.allclose(got[1], table.grad, atol=1e-6)
    seen_mask = torch.zeros(n, items).scatter_(1, seen, 1.0)
    F.cross_entropy(logits.detach() + offset * seen_mask, targets).backward()  # the offset's own loss
    assert torch.allclose(got[2], offset.grad, atol=1e-6)


@pytest.mark.parametrize("repeat", [False, True])
def test_history_offset_learns_whether_users_repeat_items(repeat):
    torch.manual_seed(0)
    cfg = load_config("sasrec", ["model.dim=16", "model.max_len=6", "model.history_bias=true"]).model
    model = build_model(cfg, 20, 2)
    rows = []
    for _ in range(64):
        seq = torch.randperm(20)[:7] + 1
        if repeat:  # the next item is always one already seen
            seq[4:] = seq[torch.randint(0, 4, (3,))]
        rows.append(seq)
    batch = (torch.stack(rows), None)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        loss_of(model)(model, batch).backward()
        opt.step()
    offset = model.seen_offset().item()
    assert offset > 1.0 if repeat else offset < -1.0
    history = HistoryBatch(torch.tensor([[1, 2, 3]]))
    model.eval()
    with torch.no_grad():
        shifted = model.score(history)
        plain = model.user_embedding(history) @ model.output_weight().t()
    assert torch.allclose(shifted[0, 1:4] - plain[0, 1:4], torch.full((3,), offset), atol=1e-4)
    assert torch.allclose(shifted[0, 4:], plain[0, 4:])


def test_history_bias_with_a_loss_that_cannot_fit_it_is_a_config_error():
    from genrec.errors import ConfigError

    with pytest.raises(ConfigError, match="history_bias"):
        load_config("sasrec", ["model.history_bias=true", "train.objective=bce"])
    # The contrastive term on top of the full softmax keeps it.
    load_config("sasrec", ["model.history_bias=true", "train.objective.name=contrastive"])


def test_twin_info_nce_rewards_views_that_match_row_for_row():
    torch.manual_seed(0)
    a = torch.randn(32, 8)
    same = losses.twin_info_nce(a, a + 0.01 * torch.randn(32, 8), 0.1)
    shuffled = losses.twin_info_nce(a, a[torch.randperm(32)], 0.1)
    assert same < 0.2 < 2.0 < shuffled
    # Symmetric in the two views.
    b = torch.randn(32, 8)
    assert torch.allclose(losses.twin_info_nce(a, b, 0.5), losses.twin_info_nce(b, a, 0.5))


@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_contrastive_term_is_added_in_training_only(name):
    overrides = ["model.dim=16", "model.max_len=8", "model.dropout=0.0"]
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8, 2]])
    torch.manual_seed(0)
    model = build_model(load_config(name, overrides).model, 30, 5)
    cfg = load_config(name, [*overrides, "train.objective.name=contrastive", "train.objective.weight=0.5"])
    assert cfg.train.objective.base.name == "full_softmax"
    batch = (items, None)
    # Without dropout both passes agree, so the term is exactly InfoNCE of the states against themselves.
    hidden = model.encode(items[:, :-1], None)[:, -1]
    plain_loss, weighted_loss = loss_of(model), build_objective(cfg.train.objective, model)
    expected = plain_loss(model, batch) + 0.5 * losses.twin_info_nce(hidden, hidden, 0.1)
    assert torch.allclose(weighted_loss(model.train(), batch), expected, atol=1e-5)
    assert torch.allclose(weighted_loss(model.eval(), batch), plain_loss(model.eval(), batch))


def loss_of(model):
    """The objective the model trains with by default (its config's `default_objective`)."""
    return build_objective(model.cfg.default_objective, model)


def no_validation(model, progress) -> float:
    return 0.0
