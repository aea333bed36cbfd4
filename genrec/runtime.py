"""Process-wide settings applied before any work: the malloc policy, the device, the numeric precision, compiled
steps.

`keep_freed_memory()`: PyTorch's CPU allocator has no cache of its own, it asks malloc for every tensor. glibc
serves large requests with a fresh mmap and hands freed memory back to the kernel, so a training step or an
evaluation batch that allocates the same large tensors again pays for page faults and zero-filled pages each time
(PyTorch's CPU tuning guide recommends jemalloc or tcmalloc for the same reason). Keeping freed memory in the
heap makes those allocations reuse warm pages: on this project's 2-core machine a full-catalogue validation pass of
the Beauty recipes takes a fifth (SASRec) to a third (HSTU) less time and a training step 7-10% less
(`benchmarks/allocator.py` prints the comparison). The cost is that the process keeps its peak memory until it
exits, which a training or evaluation command does anyway.

Devices and precision: `resolve_device("auto" | "cpu" | "cuda" | "cuda:N" | "mps")` names the device work runs
on, `resolve_precision("auto" | "fp32" | "bf16" | "fp16", device)` the dtype of autocast regions there,
`device_name(device)` what the protocol records, `enable_tf32(device)` lets float32 matmuls use TF32 on GPUs that
have it, `to_device(batch, device)` moves a batch (tensors inside tuples, dicts and dataclasses), `pin_memory`
pins one, and
`compile_step(fn)` wraps a step in `torch.compile`, falling back to the eager step where compilation fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import os
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genrec.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used: `genrec --help` and malloc settings need none of it
    import torch

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

# The largest mmap threshold glibc accepts on 64-bit: bigger requests still get their own mmap.
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30  # keep up to 1 GiB of free memory at the top of the heap
TOP_PAD = 64 * 2**20  # grow the heap in steps of 64 MiB

OPT_OUT = "GENREC_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse; True when it was set.

    Does nothing (False) off Linux/glibc, when `GENREC_KEEP_FREED_MEMORY=0`, or when the user already tunes malloc
    through its own `MALLOC_*_` environment variables (or preloads another allocator) - their choice wins.
    """
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT, "1") == "0":
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or "LD_PRELOAD" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD),
    )
    return all(mallopt(param, value) == 1 for param, value in settings)


# --- devices -------------------------------------------------------------------------------------------------------

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


def resolve_device(spec: str = "auto", what: str = "device") -> torch.device:
    """The device `spec` names: `auto` (the first CUDA device when one is available, else the CPU), `cpu`,
    `cuda` (= cuda:0), `cuda:N` or `mps`. `what` names the setting in errors (`--device`, `train.device`).

    Raises ConfigError (one line) for an unknown name or a device that is not available."""
    import torch

    name = str(spec).strip().lower()
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{what} mps: no Apple GPU (MPS) is available on this machine")
        return torch.device("mps")
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"{what} {spec!r} is not one of {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise ConfigError(f"{what} {name}: no CUDA device is available on this machine")
    n = int(index or 0)
    count = torch.cuda.device_count()
    if n >= count:
        have = ", ".join(f"cuda:{i}" for i in range(count))
        raise ConfigError(f"{what} {name}: this machine has {count} CUDA device(s) ({have})")
    return torch.device("cuda", n)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), or what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device | str) -> str:
    """What the protocol records: `cpu (AMD EPYC 9B14)`, `cuda:0 (NVIDIA H100 80GB HBM3)`, `mps (Apple GPU)`."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({cpu_name()})"
    if device.type == "mps":
        return f"mps (Apple GPU, {platform.machine()})"
    return str(device)


def enable_tf32(device: torch.device | str) -> bool:
    """Let float32 matmuls and convolutions on `device` use TF32 tensor cores (NVIDIA Ampere and later: 10-bit
    mantissa inputs, float32 accumulation). True when set; False on other devices, which are left alone."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


# --- precision -----------------------------------------------------------------------------------------------------

PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # name -> torch dtype


@dataclasses.dataclass(frozen=True)
class Precision:
    """The dtype of autocast regions on one device; `fp32` means no autocast."""

    name: str  # fp32 | bf16 | fp16
    device_type: str  # cpu | cuda | mps | meta ...

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, PRECISIONS[self.name])

    def autocast(self):
        """A context in which matmuls run in the reduced dtype (a no-op for fp32 and on devices that have no
        autocast, such as meta)."""
        return autocast(self.device_type, self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs its loss scaled so that small gradients do not flush to zero: a GradScaler, else None."""
        import torch

        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None


def resolve_precision(spec: str, device: torch.device | str, what: str = "precision") -> Precision:
    """`auto`, `fp32`, `bf16` or `fp16` on `device`. `auto` is bf16 on CUDA devices that support it and fp32
    elsewhere (the CPU keeps its float32 steps, where models choose their own bfloat16 matmuls). Raises
    ConfigError for an unknown name or bf16 on a CUDA device without it."""
    import torch

    device = torch.device(device)
    name = str(spec).strip().lower()
    if name == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        name = "bf16" if cuda_bf16 else "fp32"
    if name not in PRECISIONS:
        raise ConfigError(f"{what} {spec!r} is not one of auto, {', '.join(PRECISIONS)}")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{what} bf16: {device_name(device)} has no bfloat16 support; use fp16 or fp32")
    return Precision(name, device.type)


def autocast(device_type: str, dtype: torch.dtype):
    """`torch.autocast(device_type, dtype)`, or a no-op for float32 and for device types without autocast
    (meta: shapes only), so that model code can ask for its precision on any device."""
    import torch

    if dtype == torch.float32 or not torch.amp.is_autocast_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype)


# --- moving batches ------------------------------------------------------------------------------------------------


def module_device(module: Any) -> torch.device:
    """The device of a module's first parameter (or buffer); the CPU for one that has neither or is no module."""
    import torch

    for tensors in (getattr(module, "parameters", None), getattr(module, "buffers", None)):
        if tensors is not None:
            for t in tensors():
                return t.device
    return torch.device("cpu")


def map_tensors(fn: Callable, obj: Any) -> Any:
    """`obj` with `fn(t)` in place of every tensor `t` in it: tensors, and tuples (named ones too), lists, dicts and
    dataclass instances of them, recursively; other values are returned as they are."""
    import torch

    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        moved = [map_tensors(fn, x) for x in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else type(obj)(moved)
    if isinstance(obj, dict):
        return {k: map_tensors(fn, v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: map_tensors(fn, getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    return obj


def to_device(obj: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """`obj` with every tensor in it on `device` (`map_tensors`). `non_blocking` overlaps a copy from pinned
    host memory with compute."""
    return map_tensors(lambda t: t.to(device, non_blocking=non_blocking), obj)


def pin_memory(obj: Any) -> Any:
    """`obj` with every tensor in page-locked host memory, from which copies to a CUDA GPU run asynchronously."""
    return map_tensors(lambda t: t.pin_memory(), obj)


# --- compiled steps ------------------------------------------------------------------------------------------------


def compile_step(fn: Callable, enabled: bool = True, **options) -> Callable:
    """`fn` compiled by `torch.compile(fn, **options)`, checked on its first call: where compilation fails (an
    operator the compiler cannot trace, a missing C++ toolchain) a one-line warning names the reason and the
    eager `fn` runs from then on. `enabled=False` returns `fn` itself.

    The first call compiles before it runs; where graph breaks split a step into pieces, a later piece may fail
    after an earlier one ran, and the step is then run again eagerly from the start. A training step whose
    parameter update comes last (as every step here) is safe to run again: nothing changed before the update."""
    if not enabled:
        return fn
    import torch

    compiled = torch.compile(fn, **options)
    state = {"fn": None}

    @functools.wraps(fn)
    def step(*args, **kwargs):
        if state["fn"] is not None:
            return state["fn"](*args, **kwargs)
        try:
            out = compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any compiler failure means: run eagerly
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            warnings.warn(
                f"torch.compile failed for {getattr(fn, '__qualname__', fn)}, running eagerly: {reason[:200]}",
                RuntimeWarning,
                stacklevel=2,
            )
            state["fn"] = fn
            return fn(*args, **kwargs)
        state["fn"] = compiled
        return out

    return step
