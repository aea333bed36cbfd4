"""Peer half of the SASRec speed benchmark: RecBole's and RecTools' SASRec on Amazon Beauty, in their own venvs.

Each peer lives in its own virtualenv under ``.bench/`` (git-ignored) and is trained in a subprocess, so
their pinned dependency stacks never meet ours or each other's.  This file is stdlib-only at top level: the
parent side (venvs, data conversion, measuring) runs under any Python 3.11; the worker side (``--worker``)
is the same file run by the peer's venv interpreter, which imports the peer library inside functions.

Matched size (both peers, and the intended setting for our own SASRec):
    hidden 64, 2 blocks, **1 head** (as in the SASRec paper; RecTools' layer is the paper's layer),
    feed-forward inner size 64 with ReLU (RecTools' SASRec block hard-wires inner = hidden and ReLU, so
    RecBole is set to ``inner_size=64, hidden_act=relu`` to match), max sequence length 50, dropout 0.3
    (RecBole: hidden and attention dropout), batch size 256, full-softmax cross-entropy over all items,
    Adam lr 1e-3, no weight decay, seed 42, torch threads 2.
    Known unavoidable difference: RecTools builds Adam with betas (0.9, 0.98) and does not let them be
    overridden (its lightning module passes ``adam_betas`` itself); RecBole uses torch's (0.9, 0.999).
    Speed is unaffected.

Data: ``/work/shared/data/amazon-beauty/sequential.txt`` (override with env ``GENREC_BEAUTY``), one line per
user ``user item item ...`` in time order.  Leave-one-out split: last item = test, second-to-last = valid,
the rest = train.
    RecBole: ``.bench/data/recbole/<tag>/<tag>.inter`` with a synthetic timestamp = position in the user's
      sequence; ``eval_args`` split LS valid_and_test, order TO, mode full.  RecBole augments the training
      part into one sample per prefix (length >= 1, truncated to the last 50), loss on the last position.
    RecTools: ``.bench/data/rectools/<tag>.csv`` (user_id, item_id, weight=1, datetime=position seconds); the
      worker trains on all but each user's last two rows and keeps the second-to-last as the valid target.
      RecTools' SASRec makes one sample per user (last 51 items, shifted), loss on every non-pad position.
    So "samples" differ in kind: on full Beauty RecBole iterates 131,413 prefixes/epoch (514 batches),
    RecTools 22,363 user sequences/epoch (88 batches).  Predicted target positions per epoch, reported as
    ``target_positions_per_epoch``, are close: 131,413 vs 128,031 (RecTools only learns the last 50 targets
    of the few users with longer histories).  But RecTools scores all 50 positions of every sequence against
    the full catalogue ([256, 50, n_items] logits per batch), RecBole only the last position of each prefix.
    ``sequences_per_s`` = samples the library iterates per epoch / s_per_epoch.

Measured per peer (JSON line): ``s_per_epoch`` (median training-epoch wall time; RecBole: around
``Trainer._train_epoch``, RecTools: Lightning ``on_train_epoch_start``..``on_train_epoch_end``; both include
batch collation, exclude data preparation and evaluation), ``epoch_s`` (each epoch), ``sequences_per_s``,
``peak_rss_mb`` (max RSS of the worker process, from ``os.wait4`` rusage), ``setup_s`` (dataset build), and
with evaluation on, ``valid_ndcg@10`` after the epochs (full ranking over all items, no history filtering,
as RecBole does for sequential models) and ``eval_s``.

Versions that install and import together with the local CPU wheel torch 2.13.0+cpu (Python 3.11.7):
    recbole 1.2.1   with numpy 1.26.4, pandas 2.3.3, scipy 1.17.1, setuptools 80.x (ray 2.6.3 is pulled in)
    rectools 0.19.0 [torch extra] with numpy 1.26.4, pandas 2.3.3, scipy 1.17.1, pytorch-lightning 2.5.2
Pins and why:
    torch==2.13.0  in a constraints file for every install, and installed first from local wheels only
                   (``--no-index``): any other/unpinned torch would pull a multi-GB CUDA build from PyPI.
    numpy<2        RecBole's Config.compatibility_settings() touches np.float_/np.complex_/np.unicode_,
                   removed in numpy 2 (AttributeError at Config()); RecTools 0.19 itself requires numpy<2
                   on Python < 3.12.  Pinned to 1.26.4 for both.
    pandas==2.3.3  pip otherwise picks pandas 3.0.6 for RecBole (no upper bound).  RecBole 1.2.1 predates
                   pandas 3: its Dataset fills missing values with chained ``feat[f].fillna(..., inplace=True)``,
                   which pandas 2.3 already warns "will never work" under pandas 3's copy-on-write.  RecTools 0.19
                   requires pandas<3 anyway.
    setuptools<81  ray 2.6.3 (a hard RecBole dependency, imported by recbole.quick_start) needs
                   pkg_resources, removed from setuptools 81+.  Not needed by this benchmark's code path,
                   pinned so the RecBole install is whole.

Usage (from the repository root, with the repo's .venv/bin/python):
    python -m benchmarks peers --setup-only               # build both venvs + data, no training
    python -m benchmarks peers --peer recbole --epochs 1  # one peer
    python -m benchmarks peers --epochs 2                 # both peers, one after the other
    python -m benchmarks peers --peer rectools --epochs 1 --max-users 3000 --no-eval   # quick smoke
    python -m benchmarks peers --flops                    # matmul peak FLOP/s (as `python -m benchmarks matmul_peak`)
    --threads N overrides the 2 threads (smoke runs on a busy machine only, see below).
Each peer's measurements are a table row and, in full, the JSON report's `results`. From Python:
``run_peer("recbole", 2)`` -> dict. Worker logs go to ``.bench/runs/<peer>/<tag>.log``. The worker side runs this
file as a script in the peer's venv, which is why it imports nothing but the standard library at top level.

Measure in a quiet moment.  With 2 torch threads on the 2 cores while another process keeps ~1 core busy,
OpenMP threads spin-wait on each other and a training step runs ~8x slower than with 1 thread (RecBole step
on 2,000 users: 0.11 s fwd + 0.24 s bwd at 1 thread vs 0.58 + 2.4 s at 2 threads, same load).  Each result
carries ``loadavg_before``; discard runs where it is well above 0.

SMOKE RUNS -- CONTENDED, NOT BENCHMARK FIGURES (2026-11-28; another engineer's training and tests were running
on the same 2 cores, load average 1.5-3).  One epoch each, validation NDCG@10 after that one epoch:
    RecBole, first 2,000 users (18,226 prefixes, 72 batches):
        threads 2: 205.1 s/epoch (88.9 seq/s; spin-wait effect above), peak RSS 947 MB, NDCG@10 0.0118
        threads 1:  24.8 s/epoch (735 seq/s), peak RSS 999 MB, NDCG@10 0.0118 (same loss as threads 2)
    RecTools, first 2,000 users (2,000 sequences, 8 batches), threads 1:
         23.0 s/epoch (87.0 seq/s), peak RSS 1,679 MB, NDCG@10 0.0073
    Full Beauty, threads 1:
        RecBole:  188.4 s/epoch, 131,413 prefixes -> 698 seq/s, peak RSS 1,782 MB, setup 3.9 s,
                  eval 9.2 s, NDCG@10 0.0205
        RecTools: 488.3 s/epoch, 22,363 sequences -> 45.8 seq/s, peak RSS 2,491 MB, eval 6.6 s,
                  NDCG@10 0.0082.  Half of its process time was kernel time (user 241 s, sys 252 s): each
                  batch allocates fresh ~0.6 GB logit tensors (glibc mmaps them, so every page faults in).
    ``--flops`` (2 threads, contended): float32 364 GFLOP/s, bfloat16 2,110 GFLOP/s (AMX present).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / ".bench"
DATA = Path(os.environ.get("GENREC_BEAUTY", "/work/shared/data/amazon-beauty/sequential.txt"))
THREADS = 2
TORCH_PIN = "torch==2.13.0"

# The matched model/training size shared by all implementations.
HP = {
    "hidden": 64,
    "blocks": 2,
    "heads": 1,
    "inner": 64,
    "max_len": 50,
    "dropout": 0.3,
    "batch_size": 256,
    "lr": 1e-3,
    "seed": 42,
}

# Per peer: what to install (after torch) and the pins that go into its constraints file.
PEERS = {
    "recbole": {
        "install": ["recbole==1.2.1"],
        "pins": ["numpy==1.26.4", "pandas==2.3.3", "scipy==1.17.1", "setuptools<81"],
        "check": "from recbole.config import Config; from recbole.model.sequential_recommender import SASRec",
    },
    "rectools": {
        "install": ["rectools[torch]==0.19.0"],
        "pins": ["numpy==1.26.4", "pandas==2.3.3", "scipy==1.17.1", "pytorch-lightning==2.5.2"],
        "check": "from rectools.models import SASRecModel",
    },
}


# ----------------------------------------------------------------------------------------------------------
# Virtualenvs
# ----------------------------------------------------------------------------------------------------------


def venv_python(name: str) -> Path:
    return BENCH / name / "bin" / "python"


def ensure_venv(name: str, quiet: bool = True) -> Path:
    """Create ``.bench/<name>`` with torch 2.13.0 (CPU) and the peer library, unless already done."""
    spec = PEERS[name]
    root = BENCH / name
    py = venv_python(name)
    stamp = root / ".genrec-stamp.json"
    wanted = {"torch": TORCH_PIN, "install": spec["install"], "pins": spec["pins"]}
    if py.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return py
    BENCH.mkdir(exist_ok=True)
    if not py.exists():
        # The base interpreter must be CPython 3.11: the local torch wheel is cp311.
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    constraints = root / "constraints.txt"
    constraints.write_text("\n".join([TORCH_PIN, *spec["pins"]]) + "\n")
    pip = [str(py), "-m", "pip", "install", *(["-q"] if quiet else []), "-c", str(constraints)]
    # torch first and from local wheels only (pip's find-links): never let pip fetch a CUDA torch.
    subprocess.run([*pip, "--no-index", "--no-deps", TORCH_PIN], check=True)
    subprocess.run([*pip, TORCH_PIN], check=True)  # torch's own small deps, torch already satisfied
    subprocess.run([*pip, *spec["install"]], check=True)
    cuda = subprocess.run(
        [str(py), "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if cuda[-1] != "None":
        raise RuntimeError(f"{name}: expected a CPU torch build, got {cuda}")
    subprocess.run([str(py), "-c", spec["check"]], check=True, capture_output=True)
    stamp.write_text(json.dumps(wanted))
    return py


# ----------------------------------------------------------------------------------------------------------
# Data conversion (parent side, stdlib)
# ----------------------------------------------------------------------------------------------------------


def read_sequences(max_users: int | None = None) -> list[list[str]]:
    """Per-user item sequences (ids kept as strings), in file order; optionally only the first users."""
    seqs = []
    with open(DATA) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                seqs.append(parts)
            if max_users and len(seqs) >= max_users:
                break
    return seqs


def data_tag(max_users: int | None) -> str:
    return "beauty" if not max_users else f"beauty_u{max_users}"


def _write_atomic(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.writelines(lines)
    tmp.replace(path)


def prepare_recbole(max_users: int | None = None) -> Path:
    """Atomic ``.inter`` file; the timestamp is the position in the user's sequence (ordering only)."""
    tag = data_tag(max_users)
    path = BENCH / "data" / "recbole" / tag / f"{tag}.inter"
    if not path.exists():
        rows = ["user_id:token\titem_id:token\ttimestamp:float\n"]
        for user, *items in read_sequences(max_users):
            rows.extend(f"{user}\t{item}\t{t}\n" for t, item in enumerate(items))
        _write_atomic(path, rows)
    return path


def prepare_rectools(max_users: int | None = None) -> Path:
    """Interactions CSV in RecTools' column names; datetime = position in the sequence, in seconds."""
    path = BENCH / "data" / "rectools" / f"{data_tag(max_users)}.csv"
    if not path.exists():
        rows = ["user_id,item_id,weight,datetime\n"]
        for user, *items in read_sequences(max_users):
            rows.extend(f"{user},{item},1,{t}\n" for t, item in enumerate(items))
        _write_atomic(path, rows)
    return path


PREPARE = {"recbole": prepare_recbole, "rectools": prepare_rectools}


# ----------------------------------------------------------------------------------------------------------
# Parent: run one peer in its venv and measure it
# ----------------------------------------------------------------------------------------------------------


def run_peer(
    name: str, epochs: int = 2, max_users: int | None = None, evaluate: bool = True, threads: int = THREADS
) -> dict:
    """Train peer ``name`` for ``epochs`` epochs in a subprocess; return its measurements as a dict.

    ``max_users`` keeps only the first N users (smoke runs).  ``threads`` is 2 for the benchmark; on a
    machine where something else is running, 2 OpenMP threads on 2 cores spin-wait on each other and run
    several times slower than 1 thread, so ``loadavg_before`` is recorded with each result.
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose from {sorted(PEERS)}")
    py = ensure_venv(name)
    data = PREPARE[name](max_users)
    run_dir = BENCH / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    tag = data_tag(max_users)
    out, log = run_dir / f"{tag}.json", run_dir / f"{tag}.log"
    out.unlink(missing_ok=True)
    cmd = [
        str(py),
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--epochs",
        str(epochs),
        "--data",
        str(data),
        "--out",
        str(out),
        "--threads",
        str(threads),
    ]
    if not evaluate:
        cmd.append("--no-eval")
    # Pin every thread pool the peer might use (torch intra-op, OpenMP, BLAS).
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        OPENBLAS_NUM_THREADS=str(threads),
        PYTHONUNBUFFERED="1",
    )
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "w") as logf:
        # cwd = run_dir: RecBole writes saved/ and log_tensorboard/ relative to the working directory.
        proc = subprocess.Popen(cmd, cwd=run_dir, env=env, stdout=logf, stderr=subprocess.STDOUT)
        # wait4 gives this child's own rusage (ru_maxrss in KiB on Linux) rather than all children's.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{name} worker failed (rc={proc.returncode}); log {log}:\n{tail}")
    result = json.loads(out.read_text())
    result.update(
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1),
        wall_s=round(wall, 1),
        data=tag,
        loadavg_before=load_before,
    )
    return result


# ----------------------------------------------------------------------------------------------------------
# Worker side: runs inside the peer's venv; library imports stay inside these functions.
# ----------------------------------------------------------------------------------------------------------


def _summary(epoch_s: list[float], samples: int) -> dict:
    s = statistics.median(epoch_s)
    return {
        "s_per_epoch": round(s, 3),
        "epoch_s": [round(x, 3) for x in epoch_s],
        "sequences_per_s": round(samples / s, 1),
    }


def _worker_recbole(data: Path, epochs: int, evaluate: bool, threads: int) -> dict:
    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.set_num_threads(threads)
    tag = data.stem
    sys.argv = sys.argv[:1]  # RecBole's Config also parses --key=value from the command line
    config = Config(
        model="SASRec",
        dataset=tag,
        config_dict={
            "data_path": str(data.parent.parent),
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "MAX_ITEM_LIST_LENGTH": HP["max_len"],
            "hidden_size": HP["hidden"],
            "inner_size": HP["inner"],
            "hidden_act": "relu",
            "n_layers": HP["blocks"],
            "n_heads": HP["heads"],
            "hidden_dropout_prob": HP["dropout"],
            "attn_dropout_prob": HP["dropout"],
            "loss_type": "CE",
            "train_neg_sample_args": None,  # full softmax, no negative sampling
            "train_batch_size": HP["batch_size"],
            "eval_batch_size": 4096,
            "learner": "adam",
            "learning_rate": HP["lr"],
            "weight_decay": 0.0,
            "epochs": epochs,
            "eval_args": {
                "split": {"LS": "valid_and_test"},
                "order": "TO",
                "mode": "full",
                "group_by": "user",
            },
            "metrics": ["NDCG"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "seed": HP["seed"],
            "reproducibility": True,
            "show_progress": False,
            "worker": 0,
            "checkpoint_dir": "saved",
            "gpu_id": "",  # empty gpu_id: RecBole picks the CPU
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    t0 = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset)
    trainer = Trainer(config, model)
    trainer.eval_collector.data_collect(train_data)  # as Trainer.fit does before its epochs
    setup_s = time.perf_counter() - t0
    torch.set_num_threads(threads)  # re-assert in case a library changed it

    epoch_s, losses = [], []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        losses.append(float(trainer._train_epoch(train_data, epoch, show_progress=False)))
        epoch_s.append(time.perf_counter() - t0)
    samples = len(train_data.dataset)  # one row per training prefix after RecBole's augmentation
    res = {
        "peer": "recbole",
        "version": recbole.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "hp": HP,
        "epochs": epochs,
        "n_users": dataset.user_num - 1,
        "n_items": dataset.item_num - 1,  # minus RecBole's padding id
        "sample_unit": "prefix (one per training position, loss on its last item)",
        "samples_per_epoch": samples,
        "target_positions_per_epoch": samples,
        "batches_per_epoch": len(train_data),
        "setup_s": round(setup_s, 2),
        "train_loss_sum": [round(x, 3) for x in losses],
        **_summary(epoch_s, samples),
    }
    if evaluate:
        t0 = time.perf_counter()
        metrics = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
        res["eval_s"] = round(time.perf_counter() - t0, 2)
        res["valid_ndcg@10"] = round(float(metrics["ndcg@10"]), 5)
    return res


def _worker_rectools(data: Path, epochs: int, evaluate: bool, threads: int) -> dict:
    import numpy as np
    import pandas as pd
    import rectools
    import torch
    from pytorch_lightning import Callback, Trainer, seed_everything
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import SASRecModel

    torch.set_num_threads(threads)
    seed_everything(HP["seed"], workers=True)
    t0 = time.perf_counter()
    df = pd.read_csv(data)
    df[Columns.Datetime] = pd.to_datetime(df[Columns.Datetime], unit="s")
    # Leave-one-out: rows counted from the end of each user's sequence (0 = test, 1 = valid).
    from_end = df.groupby(Columns.User).cumcount(ascending=False)
    train, valid = df[from_end >= 2], df[from_end == 1]
    dataset = Dataset.construct(train[Columns.Interactions])

    class EpochTimer(Callback):
        """Wall time of each training epoch and what it iterated (no validation loop is configured)."""

        def __init__(self):
            self.epoch_s, self.samples, self.targets, self.batches = [], 0, 0, 0

        def on_train_epoch_start(self, trainer, pl_module):
            self.samples = self.targets = self.batches = 0
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.samples += int(batch["x"].shape[0])
            self.targets += int((batch["y"] != 0).sum())
            self.batches += 1

        def on_train_epoch_end(self, trainer, pl_module):
            self.epoch_s.append(time.perf_counter() - self._t0)

    timer = EpochTimer()

    def get_trainer() -> Trainer:
        return Trainer(
            max_epochs=epochs,
            min_epochs=epochs,
            accelerator="cpu",
            devices=1,
            callbacks=[timer],
            enable_checkpointing=False,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    model = SASRecModel(
        n_blocks=HP["blocks"],
        n_heads=HP["heads"],
        n_factors=HP["hidden"],
        dropout_rate=HP["dropout"],
        session_max_len=HP["max_len"],
        loss="softmax",
        lr=HP["lr"],
        batch_size=HP["batch_size"],
        epochs=epochs,
        get_trainer_func=get_trainer,
    )
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.fit(dataset)
    fit_s = time.perf_counter() - t0
    # RecTools trains a deepcopy of our Trainer (model.fit_trainer), so read the copied callback.
    timer = next(cb for cb in model.fit_trainer.callbacks if isinstance(cb, EpochTimer))
    res = {
        "peer": "rectools",
        "version": rectools.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "hp": HP,
        "epochs": epochs,
        "n_users": int(df[Columns.User].nunique()),
        "n_items": int(df[Columns.Item].nunique()),
        "sample_unit": "user sequence (last 51 items shifted; loss on every non-pad position)",
        "samples_per_epoch": timer.samples,
        "target_positions_per_epoch": timer.targets,
        "batches_per_epoch": timer.batches,
        "setup_s": round(setup_s, 2),
        "fit_s": round(fit_s, 2),  # includes RecTools' own data preparation before the epochs
        **_summary(timer.epoch_s, timer.samples),
    }
    if evaluate:
        t0 = time.perf_counter()
        reco = model.recommend(
            users=valid[Columns.User].unique(),
            dataset=dataset,
            k=10,
            filter_viewed=False,
            on_unsupported_targets="warn",
        )
        hits = reco.merge(valid[[Columns.User, Columns.Item]], on=[Columns.User, Columns.Item])
        ndcg = float((1.0 / np.log2(hits[Columns.Rank].to_numpy() + 1.0)).sum()) / len(valid)
        res["eval_s"] = round(time.perf_counter() - t0, 2)
        res["valid_ndcg@10"] = round(ndcg, 5)
    return res


WORKERS = {"recbole": _worker_recbole, "rectools": _worker_rectools}


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def _finite(obj):
    """NaN / infinite floats as None (strict JSON); genrec's own `json_text` is not importable in a peer's venv."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def worker_main() -> None:
    """What the peer's venv runs (this file as a script): one peer's training, its measurements to --out."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=sorted(WORKERS), required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args()
    res = WORKERS[args.worker](args.data, args.epochs, not args.no_eval, args.threads)
    args.out.write_text(json.dumps(_finite(res), allow_nan=False))


def main(argv: list[str] | None = None) -> None:
    from benchmarks._common import Report, parser
    from benchmarks.matmul_peak import report_peaks

    ap = parser(__name__, __doc__)
    ap.add_argument(
        "--peer",
        choices=sorted(PEERS),
        action="append",
        help="peer to run (repeatable); default: all, one after the other",
    )
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-users", type=int, default=None, help="only the first N users (smoke runs)")
    ap.add_argument("--no-eval", action="store_true", help="skip the validation NDCG@10")
    ap.add_argument("--setup-only", action="store_true", help="create venvs and data files, train nothing")
    ap.add_argument("--flops", action="store_true", help="print this machine's matmul peak FLOP/s")
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    if args.flops:
        report_peaks(report, args.threads)
        report.save()
        return
    rows = []
    for name in args.peer or sorted(PEERS):
        if args.setup_only:
            ensure_venv(name, quiet=False)
            report.results[name] = {
                "python": str(venv_python(name)),
                "data": str(PREPARE[name](args.max_users)),
            }
            rows.append((name, report.results[name]["python"], report.results[name]["data"]))
        else:
            res = _finite(run_peer(name, args.epochs, args.max_users, not args.no_eval, args.threads))
            report.results[name] = res
            rows.append(
                (
                    name,
                    res["version"],
                    res["samples_per_epoch"],
                    f"{res['s_per_epoch']:.1f}",
                    f"{res['sequences_per_s']:,.0f}",
                    f"{res['peak_rss_mb']:,.0f}",
                    res.get("valid_ndcg@10", "-"),
                    res["loadavg_before"],
                )
            )
    if args.setup_only:
        report.table(["peer", "python", "data"], rows)
    else:
        columns = (
            "peer | version | samples/epoch | s/epoch | "
            "sequences/s | peak RSS (MB) | valid NDCG@10 | load average before"
        )
        report.table(columns, rows)
    report.save()


if __name__ == "__main__":
    worker_main()
