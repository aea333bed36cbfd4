"""Training speed on Amazon Beauty: our SASRec and HSTU against RecBole's and RecTools' SASRec, one machine.

    python -m benchmarks speed                    # everything (peers take ~15 min)
    python -m benchmarks speed --skip-peers       # ours only
    python -m benchmarks speed --epochs 3
    python -m benchmarks speed --skip-peers --variant chunk1024:train.objective.chunk=1024 --adam loop

Matched size (see `python -m benchmarks peers --help`): hidden 64, 2 blocks, 1 head, FFN inner 64 with ReLU, length
50, dropout 0.3, batch 256, full-softmax cross-entropy, lr 1e-3, 2 threads. Each model trains in its own process
(peak RSS is the process's); seconds per epoch (median over `--epochs`) exclude evaluation and data preparation.
Time to best validation comes from the leaderboard runs (runs/leaderboard, the tuned recipes), when present.

Compute efficiency: FLOPs of one epoch of our training (torch's flop formulas over every matmul, the chunked
softmax's included), counted per input dtype, divided by the epoch time, against this machine's matmul peak
measured here (2048^3, best of 10): the float32 peak always; the bfloat16 peak and the "mixed" peak (the time
the epoch's float32 and bfloat16 FLOPs need at their two peaks) only where the CPU runs bfloat16 natively
(AMX or AVX512-BF16 in its flags) and bfloat16 beats float32 there; elsewhere no share is printed for it.
The report names the CPU, torch's vector path (CPU capability) and the dtype each model's matmuls ran in.

Measure on a quiet machine: with 2 threads, any other busy process makes OpenMP threads spin and every
figure wrong (the load average when it started is in the JSON report, `machine.load_average_before`).
"""

from __future__ import annotations

import json
import resource

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from benchmarks._common import ROOT, Report, cpu_facts, fresh_process, matmul_peak, parser, timed
from genrec.config import load_config
from genrec.models import build_model
from genrec.models.next_item import resolve_dtype
from genrec.objectives import build_objective
from genrec.runs import make_split, prepare_dataset
from genrec.training.trainer import build_optimizer

MATCHED = [
    "model.dim=64",
    "model.layers=2",
    "model.heads=1",
    "model.max_len=50",
    "model.dropout=0.3",
    "train.batch_size=256",
    "train.lr=0.001",
]
COLUMNS = (
    "model | s/epoch | sequences/s | peak RSS (MB) | "
    "epoch time vs genrec SASRec | achieved GFLOP/s | of fp32 peak | of mixed peak | time to best valid (s)"
)


class DtypeFlops:
    """FLOPs of every op torch has a flop formula for (matmuls, attention), by the dtype of its first input."""

    def __init__(self) -> None:
        counts: dict[str, int] = {}
        self.counts = counts

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = flop_registry.get(func.overloadpacket)
                if formula is not None:
                    dtype = str(args[0].dtype).removeprefix("torch.")
                    counts[dtype] = counts.get(dtype, 0) + formula(*args, **kwargs, out_val=out)
                return out

        self.mode = Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


ADAM_KERNELS = {"loop": {"foreach": False}, "multi_tensor": {"foreach": True}, "fused": {"fused": True}}


def worker(model: str, epochs: int, threads: int, sets: list[str], adam: str) -> dict:
    """One model's epochs in this process (run in a fresh one): seconds, sequences/s, FLOPs by dtype, peak RSS."""
    torch.set_num_threads(threads)
    extra = ["model.activation=relu"] if model == "sasrec" else []
    cfg = load_config(model, MATCHED + extra + sets, dataset="amazon-beauty")
    split = make_split(prepare_dataset(cfg.data), cfg.data)
    torch.manual_seed(0)
    net = build_model(cfg.model, split.n_items, split.n_users)
    # The optimiser `genrec train` builds (multi_tensor), or another AdamW kernel (--adam).
    opt = build_optimizer(net, cfg.train, **ADAM_KERNELS[adam])
    net.train()
    objective = build_objective(cfg.train.objective, net, split.train.items)

    def step(batch):
        loss = objective(net, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with DtypeFlops() as counter:  # also the warm-up epoch
        for batch in net.training_batches(split, np.random.default_rng(123), cfg.train.batch_size):
            step(batch)
    flops = sum(counter.counts.values())
    per_epoch = [
        list(net.training_batches(split, np.random.default_rng(e), cfg.train.batch_size))
        for e in range(epochs)
    ]
    epoch_batches = iter(per_epoch)
    t = timed(lambda: [step(b) for b in next(epoch_batches)], epochs, warmup=0)
    sequences = sum(int(b[0].shape[0]) for b in per_epoch[-1])
    return {
        "model": f"genrec {model}",
        "s_per_epoch": round(t.median, 2),
        "epoch_s": [round(s, 2) for s in t.seconds],
        "sequences_per_s": round(sequences / t.median, 1),
        "flops_per_epoch": flops,
        "flops_by_dtype": counter.counts,
        "achieved_flops": flops / t.median,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "softmax_dtype": str(resolve_dtype(getattr(cfg.train.objective, "dtype", "float32"))).removeprefix(
            "torch."
        ),
        "adam": adam,
        "sets": sets,
    }


def time_to_best(recipe_prefix: str) -> str:
    runs = sorted((ROOT / "runs" / "leaderboard").glob(f"{recipe_prefix}*--amazon-beauty/metrics.json"))
    if not runs:
        return "-"
    tr = json.loads(runs[-1].read_text())["training"]
    return f"{tr['seconds_to_best']:.0f} (epoch {tr['best_epoch']})"


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--peer-epochs", type=int, default=1)
    ap.add_argument("--adam", default="multi_tensor", choices=list(ADAM_KERNELS))
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:key=value[,key=value]: SASRec again with these settings (a speed-up to compare)",
    )
    ap.add_argument("--models", default="sasrec,hstu")
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    peak = {dt: matmul_peak(dt, threads=args.threads) for dt in ("float32", "bfloat16")}
    cpu = cpu_facts()
    results = [
        fresh_process(worker, m, args.epochs, args.threads, [], args.adam) for m in args.models.split(",")
    ]
    for variant in args.variant:
        name, _, settings = variant.partition(":")
        sets = settings.split(",") if settings else []
        r = fresh_process(worker, "sasrec", args.epochs, args.threads, sets, args.adam)
        r["model"] = f"genrec sasrec [{name}]"
        results.append(r)
    if not args.skip_peers:
        from benchmarks import peers

        for name in ("recbole", "rectools"):
            r = peers.run_peer(name, args.peer_epochs, evaluate=False, threads=args.threads)
            r["model"] = f"{name} SASRec"
            results.append(r)
    for line in header(results, peak, cpu, args.threads):
        report.line(line)
    report.table(COLUMNS, rows(results, peak, cpu))
    report.line(
        "\nSequences: ours and RecTools iterate one sequence per user; RecBole one sample per prefix "
        "(131,413 per epoch), so compare seconds per epoch, not sequences/s, across libraries."
    )
    report.results = {"peak_flops": peak, "models": results}
    report.save()


def native_bf16(cpu: dict, peak: dict) -> bool:
    """Whether a bfloat16 share means anything here: the CPU runs bfloat16 natively (AMX or AVX512-BF16) and
    the measured bfloat16 peak beats float32's (elsewhere bfloat16 is emulated and its peak near zero)."""
    return bool(cpu["native_bf16"]) and peak["bfloat16"] > peak["float32"]


def header(results: list[dict], peak: dict, cpu: dict, threads: int) -> list[str]:
    """The lines above the table: CPU, peaks, each model's matmul dtypes."""
    out = [
        f"CPU: {cpu['cpu']}, {cpu['cores']} cores, {threads} threads; torch {cpu['torch_capability']} "
        f"kernels, oneDNN {'on' if cpu['mkldnn'] else 'off'}; flags: {' '.join(cpu['flags']) or 'none of interest'}"
    ]
    bf16_text = f"{peak['bfloat16'] / 1e9:.0f} GFLOP/s" + (
        "" if native_bf16(cpu, peak) else " (not native on this CPU: no bfloat16 share is printed)"
    )
    out.append(f"Matmul peak: float32 {peak['float32'] / 1e9:.0f} GFLOP/s, bfloat16 {bf16_text}")
    for r in results:
        if "flops_by_dtype" in r:
            parts = ", ".join(f"{d} {f / 1e9:,.0f} GFLOP" for d, f in sorted(r["flops_by_dtype"].items()))
            out.append(
                f"  {r['model']}: matmuls per epoch {parts}; full softmax in {r['softmax_dtype']}; AdamW {r['adam']}"
            )
    return [*out, ""]


def rows(results: list[dict], peak: dict, cpu: dict) -> list[list[str]]:
    """One table row per model (COLUMNS); the first model is the reference of the time ratio."""
    ours = results[0]["s_per_epoch"]
    bf16_ok = native_bf16(cpu, peak)
    out = []
    for r in results:
        achieved = r.get("achieved_flops")
        eff = ["-", "-", "-"]
        if achieved:
            low = r.get("flops_by_dtype", {}).get("bfloat16", 0)
            mixed = "-"
            if low and bf16_ok:  # the time the epoch's FLOPs need at the two peaks
                bound = (r["flops_per_epoch"] - low) / peak["float32"] + low / peak["bfloat16"]
                mixed = f"{achieved / (r['flops_per_epoch'] / bound):.0%}"
            elif not low:
                mixed = "(all fp32)"
            eff = [f"{achieved / 1e9:.0f}", f"{achieved / peak['float32']:.0%}", mixed]
        ttb = time_to_best(r["model"].split()[-1]) if r["model"].startswith("genrec") else "-"
        out.append(
            [
                r["model"],
                f"{r['s_per_epoch']:.1f}",
                f"{r['sequences_per_s']:,.0f}",
                f"{r['peak_rss_mb']:,.0f}",
                f"{r['s_per_epoch'] / ours:.2f}x",
                *eff,
                ttb,
            ]
        )
    return out
