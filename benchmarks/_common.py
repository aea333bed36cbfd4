"""What every benchmark shares: its command line, one timing protocol, the machine's facts and matmul peak, fresh
processes, and the report (Markdown tables printed with Rich, the same tables and the raw results as JSON).

Nothing here imports torch or genrec at module level, so `python -m benchmarks` lists the benchmarks at once and
the peer virtualenvs of `peers` never need this module.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"  # git-ignored: default JSON reports, peer virtualenvs, expanded data


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def bench_name(module: str) -> str:
    """`benchmarks.decode` -> `decode`."""
    return module.rsplit(".", 1)[-1]


def parser(
    module: str, doc: str, threads: bool = True, sub_commands: bool = False
) -> argparse.ArgumentParser:
    """The benchmark's parser: its docstring as help, `--json PATH` (default `.bench/NAME.json`) and, unless
    `threads=False`, `--threads N` (default 2, the machine the figures in the docs come from). With
    `sub_commands=True` neither flag is added here: give them to each sub-command with `add_common`."""
    ap = argparse.ArgumentParser(
        prog=f"python -m benchmarks {bench_name(module)}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if not sub_commands:
        add_common(ap, threads)
    return ap


def add_common(ap: argparse.ArgumentParser, threads: bool = True) -> None:
    """`--json` (and `--threads`) on a parser or sub-parser built elsewhere."""
    ap.add_argument(
        "--json", type=Path, default=None, help="write the report here (default: .bench/NAME.json)"
    )
    if threads:
        ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")


def add_model_sets(
    ap: argparse.ArgumentParser, help: str = "override for one model's config (repeatable)"
) -> None:
    """`--set MODEL:KEY=VALUE` (repeatable), read back with `model_sets`."""
    ap.add_argument("--set", action="append", default=[], metavar="MODEL:KEY=VALUE", help=help)


def model_sets(ap: argparse.ArgumentParser, items: list[str]) -> dict[str, list[str]]:
    """`--set MODEL:KEY=VALUE` items -> {model: [KEY=VALUE, ...]}; a malformed one is a usage error."""
    sets: dict[str, list[str]] = {}
    for item in items:
        model, sep, override = item.partition(":")
        if not sep or "=" not in override:
            ap.error(f"--set {item!r}: expected MODEL:key=value")
        sets.setdefault(model, []).append(override)
    return sets


# ----------------------------------------------------------------------------------------------------------------
# Timing: one protocol for every benchmark
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Timed:
    """Wall seconds (`time.perf_counter`) of each timed call, after the warm-up calls, and the last call's output."""

    seconds: list[float] = field(default_factory=list)
    output: object = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def total(self) -> float:
        return sum(self.seconds)


def alternate(calls: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, Timed]:
    """Time every call `repeats` times after `warmup` untimed calls each, the calls alternating within each round,
    so that a slower spell of a shared machine hits all of them. A call that consumes an iterator (a training step
    on the next batch) times a sequence of different inputs: read `.total` or `.median` per call."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    out = {name: Timed() for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            result = call()
            out[name].seconds.append(time.perf_counter() - t0)
            out[name].output = result
    return out


def timed(call: Callable[[], object], repeats: int, warmup: int = 1) -> Timed:
    """`alternate` for one call."""
    return alternate({"": call}, repeats, warmup)[""]


# ----------------------------------------------------------------------------------------------------------------
# The machine
# ----------------------------------------------------------------------------------------------------------------

MATMUL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")


def cpu_facts() -> dict:
    """The CPU's name, core count and matmul-relevant flags, the load average now, and torch's vector path, version,
    bfloat16 support and oneDNN where torch is already imported (a benchmark that needs no torch stays light)."""
    name, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name is None:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    facts = {
        "cpu": name or platform.processor() or "unknown CPU",
        "cores": os.cpu_count(),
        "flags": [f for f in MATMUL_FLAGS if f in flags],
        # AMX or AVX512-BF16: the CPU runs bfloat16 matmuls natively (elsewhere torch emulates them)
        "native_bf16": bool({"amx_bf16", "avx512_bf16"} & flags),
        "load_average": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        facts.update(
            torch=torch.__version__,
            torch_capability=torch.backends.cpu.get_cpu_capability(),
            mkldnn=torch.backends.mkldnn.is_available(),
            torch_threads=torch.get_num_threads(),
        )
    return facts


def matmul_peak(dtype: str = "float32", threads: int = 2, n: int = 2048, repeats: int = 10) -> float:
    """This machine's achieved matmul FLOP/s: the best of `repeats` n x n @ n x n products (2 n^3 FLOPs) after a
    warm-up, in `dtype`, with `threads` torch threads."""
    import torch

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(getattr(torch, dtype)) for _ in range(2))
    c = torch.empty_like(a)
    return 2 * n**3 / timed(lambda: torch.matmul(a, b, out=c), repeats).best


def commit() -> str:
    """The checkout's commit (with `+changes` when the tree differs from it), or `unknown`."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return (
        head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
        if head.returncode == 0
        else "unknown"
    )


# ----------------------------------------------------------------------------------------------------------------
# Fresh processes
# ----------------------------------------------------------------------------------------------------------------

_CHILD = "from benchmarks._common import _child; _child()"


def fresh_process(
    function: Callable[..., dict],
    *args,
    env: dict | None = None,
    max_rss_gb: float | None = None,
    check: bool = True,
) -> dict:
    """`function(*args)` (a module-level function of a benchmark, JSON arguments, JSON result) in a new Python
    process started from the repository root: process-wide settings (malloc, threads) start clean and the peak RSS
    is that call's alone. With `max_rss_gb` the child is killed once its RSS passes it (result `{"stopped": ...}`);
    with `check=False` a failed child gives `{"error": "exit N"}` instead of an exception."""
    with tempfile.TemporaryDirectory(prefix="genrec-bench-") as tmp:
        out, log = Path(tmp) / "result.json", Path(tmp) / "stderr.txt"
        call = [function.__module__, function.__qualname__, json.dumps(list(args)), str(out)]
        with open(log, "w") as err:  # a file, not a pipe: a chatty child never blocks on a full pipe
            proc = subprocess.Popen([sys.executable, "-c", _CHILD, *call], cwd=ROOT, env=env, stderr=err)
            while max_rss_gb is not None and proc.poll() is None:
                if (rss := _rss_gb(proc.pid)) > max_rss_gb:
                    proc.kill()
                    proc.wait()
                    return {"stopped": f"RSS {rss:.1f} GB > {max_rss_gb} GB"}
                time.sleep(0.5)
            proc.wait()
        if proc.returncode != 0 or not out.exists():
            if check:
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"{function.__qualname__} failed (exit {proc.returncode}):\n{tail}")
            return {"error": f"exit {proc.returncode}"}
        return json.loads(out.read_text())


def _rss_gb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 2**20
    except (OSError, StopIteration):
        return 0.0


def _child() -> None:
    import importlib

    from genrec.io import json_text

    module, name, args, out = sys.argv[1:5]
    result = getattr(importlib.import_module(module), name)(*json.loads(args))
    Path(out).write_text(json_text(result, indent=None))


# ----------------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------------


def header(columns: str | Sequence[str]) -> list[str]:
    """Column names: a list, or one string as a Markdown header reads (`"model | s/epoch | ..."`)."""
    return [c.strip() for c in columns.split("|")] if isinstance(columns, str) else list(columns)


def markdown_table(columns: str | Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (Rich's Markdown box), cells as given (`str()` of anything else)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(*header(columns), box=box.MARKDOWN)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    # Wide enough never to wrap a cell; no markup, emoji or highlighting: cells are data ("[a]", ":x:").
    console = Console(width=100_000, markup=False, emoji=False, highlight=False, color_system=None)
    with console.capture() as captured:
        console.print(table)
    return "\n".join(line.rstrip() for line in captured.get().splitlines() if line.strip())


class Report:
    """What a benchmark prints, kept for its JSON: tables, lines of text, and its raw `results`.

    `report.table(...)` and `report.line(...)` print at once; `report.save()` writes
    `{"benchmark", "settings", "commit", "machine", "started", "seconds", "tables", "lines", "results"}` to
    `--json PATH` or `.bench/NAME.json` and says where on stderr.
    """

    def __init__(self, module: str, args: argparse.Namespace | None = None) -> None:
        self.name = bench_name(module)
        self.path = getattr(args, "json", None) or BENCH / f"{self.name}.json"
        # Every flag as parsed (defaults included), so the JSON says exactly what ran.
        self.settings = json.loads(json.dumps(vars(args) if args else {}, default=str))
        self.load_before = round(os.getloadavg()[0], 2)  # how busy the machine was when the benchmark started
        self.started = datetime.now(timezone.utc)
        self.t0 = time.perf_counter()
        self.tables: list[dict] = []
        self.lines: list[str] = []
        self.results: dict = {}

    def table(
        self, columns: str | Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None
    ) -> str:
        """Print `title` (if any) and the Markdown table; the JSON keeps the columns and each row's cells."""
        text = markdown_table(columns, rows)
        if title:
            self.line(title + "\n")
        print(text, flush=True)
        self.tables.append(
            {
                "title": title,
                "columns": header(columns),
                "rows": [[str(cell) for cell in row] for row in rows],
            }
        )
        return text

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self) -> Path:
        from genrec.io import write_json

        write_json(
            self.path,
            {
                "benchmark": self.name,
                "settings": self.settings,
                "commit": commit(),
                "machine": {**cpu_facts(), "load_average_before": self.load_before},
                "started": self.started.isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - self.t0, 1),
                "tables": self.tables,
                "lines": self.lines,
                "results": self.results,
            },
        )
        print(f"report: {self.path}", file=sys.stderr)
        return Path(self.path)


# ----------------------------------------------------------------------------------------------------------------
# Data shared by several benchmarks
# ----------------------------------------------------------------------------------------------------------------


def recipe_for(model: str, dataset: str) -> str:
    """The tuned `MODEL-DATASET` recipe where there is one, else the model's own."""
    from genrec.config import list_recipes

    tuned = f"{model}-{dataset}"
    return tuned if tuned in list_recipes() else model


def item_table(ds, item_ids):
    """item_id, title and categories of the dataset's items, one row per internal item index (in `item_ids`
    order), as models' `prepare` reads them."""
    import polars as pl

    return pl.DataFrame({"item_id": item_ids}).join(
        ds.items.select(["item_id", "title", "categories"]), on="item_id", how="left", maintain_order="left"
    )


def take(examples, rows):
    """The evaluation examples at `rows` (histories and targets), as an EvalSet."""
    from genrec.experiments.coldstart import _subset

    return _subset(examples, rows)


def sample(examples, n: int, seed: int = 0):
    """`n` evaluation examples drawn without replacement with `seed`, in their original order."""
    import numpy as np

    rows = np.sort(np.random.default_rng(seed).choice(len(examples), min(n, len(examples)), replace=False))
    return take(examples, rows)


def text_vectors(texts: list[str]):
    """Sentence vectors of `texts` (the project's text encoder) with a zero row 0 for padding, as a tensor."""
    import numpy as np
    import torch

    from genrec.items.text import encode_texts

    x = encode_texts(texts)
    return torch.from_numpy(np.concatenate([np.zeros((1, x.shape[1]), np.float32), x]))


def fit_or_reuse(cfg, split, items, run_dir: Path, facts: Path, overrides: list[str]):
    """(model, training facts): the model of `cfg` with the weights already in `run_dir` and the facts in `facts`
    when both are there, else trained on `split` (best validation checkpoint in `run_dir`) with its facts written."""
    from genrec.io import write_json
    from genrec.models import build_model
    from genrec.models.base import Resources
    from genrec.runs.retrieval import fit_retrieval
    from genrec.runs.store import seed_everything
    from genrec.training.checkpoint import load_weights
    from genrec.training.trainer import FitContext

    seed_everything(cfg)
    model = build_model(cfg.model, split.n_items, split.n_users)
    if (run_dir / "best.safetensors").exists() and facts.exists():
        model.prepare(split, Resources(items=items))
        model.load_state_dict(load_weights(run_dir / "best.safetensors"))
        return model, json.loads(facts.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = fit_retrieval(
        model,
        split,
        FitContext(cfg.train, cfg.eval, run_dir, progress=False, resources=Resources(items=items)),
    )
    result = {
        "overrides": overrides,
        "fit_seconds": round(time.perf_counter() - t0, 1),
        **{key: summary.get(key) for key in ("epochs_run", "best_epoch", "stopped_by")},
    }
    write_json(facts, result)
    return model, result
