"""Softmax attention fused (`scaled_dot_product_attention`) and written out are the same function: outputs and
gradients agree, with padding and causal masks, in the modules that use them."""

import pytest
import torch

from genrec.config import load_config
from genrec.nn import attention
from genrec.nn.attention import attend, fused_attention
from genrec.nn.transformer import CausalSelfAttention, causal_padding_mask

# Left-padded histories: a full row, a padded one and one with a single item.
ITEMS = torch.tensor([[1, 2, 3, 4, 5, 6], [0, 0, 1, 2, 3, 4], [0, 0, 0, 0, 0, 7]])


def both_paths(fn, *inputs):
    """fn(fused) on copies of `inputs` for both paths -> [(output, input gradients)] x 2."""
    out = []
    for fused in (True, False):
        leaves = [x.detach().clone().requires_grad_() for x in inputs]
        y = fn(fused, *leaves)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()  # a gradient that differs per cell
        out.append((y.detach(), [x.grad for x in leaves]))
    return out


def assert_same(pair):
    (y1, g1), (y2, g2) = pair
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_self_attention_with_causal_and_padding_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 6, 8) for _ in range(3))
    mask = causal_padding_mask(ITEMS)
    assert_same(both_paths(lambda fused, q, k, v: attend(q, k, v, mask, fused=fused), q, k, v))


def test_cross_attention_with_a_key_mask():
    """Queries over another sequence's keys (TIGER's decoder reading the encoder), padding keys masked."""
    torch.manual_seed(1)
    q = torch.randn(3, 4, 5, 16)
    k, v = torch.randn(3, 4, 6, 16), torch.randn(3, 4, 6, 16)
    mask = (ITEMS > 0)[:, None, None, :]
    assert_same(both_paths(lambda fused, q, k, v: attend(q, k, v, mask, fused=fused), q, k, v))


def test_attention_dropout_draws_the_same_weights():
    torch.manual_seed(2)
    q, k, v = (torch.randn(3, 2, 6, 8) for _ in range(3))
    mask = causal_padding_mask(ITEMS)
    outs = []
    for fused in (True, False):
        torch.manual_seed(7)
        outs.append(attend(q, k, v, mask, dropout=0.3, fused=fused))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


@pytest.fixture
def on_cpu(monkeypatch):
    """Set which path the CPU takes: the modules read `fused_attention`."""

    def use(fused: bool) -> None:
        monkeypatch.setitem(attention.FUSED, "cpu", fused)

    return use


def module_paths(module, on_cpu, *inputs):
    def run(fused, *leaves):
        on_cpu(fused)
        return module(*leaves)

    return both_paths(run, *inputs)


def test_sasrec_block_attention_is_the_same_either_way(on_cpu):
    torch.manual_seed(3)
    block = CausalSelfAttention(16, 2, dropout=0.0)
    x = torch.randn(3, 6, 16)
    mask = causal_padding_mask(ITEMS)
    assert_same(module_paths(lambda x: block(x, mask), on_cpu, x))


def test_tiger_attention_is_the_same_either_way(on_cpu):
    from genrec.nn.native_encoder_decoder import Attention

    torch.manual_seed(4)
    att = Attention(16, 4)
    x, memory = torch.randn(3, 4, 16), torch.randn(3, 6, 16)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    assert_same(module_paths(lambda x: att(x, x, causal), on_cpu, x))  # decoder self-attention
    key_ok = (ITEMS > 0)[:, None, None, :]
    assert_same(module_paths(lambda x, m: att(x, m, key_ok), on_cpu, x, memory))  # cross-attention


def test_tiger_step_loss_is_the_same_either_way(on_cpu):
    """A whole TIGER forward pass and its loss, through both paths (float32)."""
    from genrec.models import build_model

    cfg = load_config("tiger", ["model.dim=16", "model.heads=2", "model.precision=float32"]).model
    torch.manual_seed(5)
    model = build_model(cfg, 20, 5).eval()
    history = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 5]])
    losses = []
    for fused in (True, False):
        on_cpu(fused)
        logits, codes = model.code_logits((history, torch.tensor([7, 9])))
        losses.append(sum(torch.nn.functional.cross_entropy(lg, codes[:, i]) for i, lg in enumerate(logits)))
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)


def test_the_choice_per_device():
    assert fused_attention("cuda") and fused_attention(torch.device("cuda", 1))  # fused kernels on GPUs
    assert fused_attention("cpu") is attention.FUSED["cpu"]  # what `python -m benchmarks attention` measured
    assert fused_attention("meta")  # an unlisted device type takes PyTorch's kernels
