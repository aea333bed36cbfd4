"""Weights (safetensors) and training state, written atomically (`genrec.io`)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genrec.errors import ConfigError, DataError
from genrec.io import _atomic, io_reason, os_errno


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Tensors as a safetensors file, copied to the CPU: the file does not depend on the device they were on."""
    # safetensors refuses shared or non-contiguous storage; a detached contiguous copy of each tensor is safe.
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    _atomic(path, lambda tmp: save_file(tensors, tmp))


def load_weights(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, placed on `device` (the meta device gives shapes and dtypes only).
    Raises DataError (one line) when the file is truncated or not safetensors, or cannot be read."""
    try:
        if torch.device(device).type == "meta":  # nothing to read: the header's shapes suffice
            return {k: v.to("meta") for k, v in load_file(str(path)).items()}
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as e:
        if os_errno(e) is not None:
            raise DataError(f"cannot read {path}: {io_reason(e)}") from None
        raise DataError(
            f"{path} is damaged (truncated or not a safetensors file: {io_reason(e)}); retrain the run"
        ) from None


def load_model_weights(model: torch.nn.Module, path: Path, device: torch.device | str = "cpu") -> None:
    """Weights of a run directory into its model, with a one-line error when they do not fit (a run written by
    an older version of the model's code, or a hand-edited config). They are read onto `device` and copied onto
    the device each parameter is on, so a file written from any device loads on any other."""
    try:
        model.load_state_dict(load_weights(path, device))
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise ConfigError(
            f"{path} does not fit the model its config.yaml builds (written by another version of genrec?): "
            f"{detail}"
        ) from None


def save_state(path: Path, state: dict) -> None:
    """Trainer state (optimiser, scheduler, counters): tensors and plain Python values only."""

    def write(tmp) -> None:
        with open(tmp, "wb") as f:  # through a Python file, a full disk surfaces as the OSError it is
            torch.save(state, f)

    _atomic(path, write)


def load_state(path: Path) -> dict:
    """Trainer state saved by `save_state`. Raises DataError (one line) when the file is damaged (an
    interrupted copy, a full disk at the time): resuming from it is impossible, training again from the start is
    not."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        if isinstance(e, OSError) and os_errno(e) is not None:
            raise DataError(f"cannot read {path}: {io_reason(e)}") from None
        raise DataError(
            f"{path} is damaged ({io_reason(e)}); remove it to train this run again from the start"
        ) from None
