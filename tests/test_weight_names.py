"""The weight names and shapes of the semantic-ID models (TIGER on either backbone, onerec, sid_llm in both
fine-tuning modes) stay those of the run directories written before: `model.safetensors` keys are a contract.
The expected names were captured from the models as they were before their backbones moved behind the
encoder-decoder interface (tests/fixtures/weight_names.json)."""

import json
from pathlib import Path

import pytest
import torch

from genrec.config import load_config
from genrec.models import build_model

FIXTURE = Path(__file__).parent / "fixtures" / "weight_names.json"
SID = ["model.tokenizer.levels=2", "model.tokenizer.codebook_size=4", "model.max_len=8"]
SMALL = [*SID, "model.dim=16", "model.heads=2"]
CASES = {
    "tiger": ("tiger", SMALL),
    "tiger-items": ("tiger", [*SMALL, "model.history_tokens=items"]),
    "tiger-t5": ("tiger", [*SMALL, "model.backbone=t5"]),
    "onerec": ("onerec", [*SMALL, "model.session_len=2"]),
    "onerec-t5": ("onerec", [*SMALL, "model.session_len=2", "model.backbone=t5"]),
    "sid_llm": ("sid_llm", [*SID, "model.finetune=full"]),
    "sid_llm-lora": ("sid_llm", [*SID, "model.finetune=lora"]),
}


def weight_names(case: str, lm_dir) -> dict[str, list[int]]:
    """{state_dict key: shape} of the model of `case`, built untrained on 20 items."""
    name, over = CASES[case]
    extra = [f"model.lm={lm_dir}"] if name == "sid_llm" else []
    torch.manual_seed(0)
    model = build_model(load_config(name, [*over, *extra]).model, 20, 10)
    return {key: list(value.shape) for key, value in sorted(model.state_dict().items())}


@pytest.mark.parametrize("case", list(CASES))
def test_weight_names_and_shapes_are_those_of_earlier_runs(case, tiny_lm):
    expected = json.loads(FIXTURE.read_text())[case]
    assert weight_names(case, tiny_lm) == expected
