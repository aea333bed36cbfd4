"""Atomic writes: a reader (or a resumed run) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genrec.errors import ConfigError


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    _atomic(path, w)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    # safetensors refuses shared or non-contiguous storage; a detached contiguous copy of each tensor is safe.
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    _atomic(path, lambda tmp: save_file(tensors, tmp))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Weights of a run directory into its model, with a one-line error when they do not fit (a run written by
    an older version of the model's code, or a hand-edited config)."""
    try:
        model.load_state_dict(load_weights(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise ConfigError(
            f"{path} does not fit the model its config.yaml builds (written by another version of genrec?): "
            f"{detail}"
        ) from None


def save_state(path: Path, state: dict) -> None:
    """Trainer state (optimiser, scheduler, counters): tensors and plain Python values only."""
    _atomic(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
