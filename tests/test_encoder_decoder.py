"""Both TIGER backbones keep the encoder-decoder contract (`genrec.nn.encoder_decoder`): step-by-step decoding
with a cache, reordered between steps as a beam search does, gives the teacher-forced logits."""

import pytest
import torch

from genrec.config import load_config
from genrec.models.tiger import BACKBONES
from genrec.nn.encoder_decoder import EncoderDecoder

VOCAB, DEPTH, LENGTH = 30, 3, 6


def backbone(kind: str, history_tokens: str) -> EncoderDecoder:
    over = ["model.dim=16", "model.heads=2", "model.max_len=5", f"model.history_tokens={history_tokens}"]
    torch.manual_seed(0)
    model = BACKBONES[kind](load_config("tiger", over).model, VOCAB, DEPTH, LENGTH).eval()
    with torch.no_grad():  # sharper than at initialisation, so that a wrong position or row shows
        model.token_table().mul_(4)
    return model


def history() -> tuple[torch.Tensor, torch.Tensor]:
    """Two users' histories [2, 5, depth] of tokens, the first left-padded, and which rows are items."""
    real = torch.tensor([[False, False, True, True, True], [True] * 5])
    tokens = torch.randint(1, VOCAB - 1, (2, 5, DEPTH), generator=torch.Generator().manual_seed(1))
    return tokens.masked_fill(~real[..., None], 0), real


@pytest.mark.parametrize("history_tokens", ["codes", "items"])
@pytest.mark.parametrize("kind", ["native", "t5"])
def test_cached_steps_with_reordered_beams_equal_teacher_forced_logits(kind, history_tokens):
    model = backbone(kind, history_tokens)
    assert isinstance(model, EncoderDecoder)
    memory, mask = model.encode(*history())
    beams = 3
    tokens = torch.randint(1, VOCAB, (2 * beams, LENGTH), generator=torch.Generator().manual_seed(2))
    table = model.token_table()
    with torch.no_grad():
        forced = model.decode(tokens, memory, mask) @ table.t()  # [2 * beams, LENGTH, VOCAB]
        cache = model.start(model.decoder_memory(memory), mask)
        for t in range(3):
            torch.testing.assert_close(model.step(tokens[:, t : t + 1], t, cache) @ table.t(), forced[:, t])
        # A beam search step keeps, per user, beams of that user in another order (one twice, one dropped).
        rows = torch.tensor([2, 0, 0, 4, 4, 3])
        moved = torch.cat([tokens[rows, :3], tokens[:, 3:]], 1)
        forced = model.decode(moved, memory, mask) @ table.t()
        cache.reorder(rows)
        for t in range(3, LENGTH):
            torch.testing.assert_close(model.step(moved[:, t : t + 1], t, cache) @ table.t(), forced[:, t])
    # The logits differ between positions and rows: the checks above mean something.
    assert forced[:, -1].std() > 0.1


@pytest.mark.parametrize("kind", ["native", "t5"])
def test_every_beam_reads_its_own_users_memory(kind):
    model = backbone(kind, "codes")
    memory, mask = model.encode(*history())
    tokens = torch.randint(1, VOCAB, (4, 2), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        together = model.decode(tokens, memory, mask)  # 2 beams per user
        alone = [model.decode(tokens[2 * u : 2 * u + 2], memory[u : u + 1], mask[u : u + 1]) for u in (0, 1)]
    torch.testing.assert_close(together, torch.cat(alone))
    assert not torch.allclose(alone[0][0], model.decode(tokens[:1], memory[1:], mask[1:])[0])
