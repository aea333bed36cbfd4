"""This machine's matmul peak: achieved GFLOP/s of a 2048^3 matmul in float32 and bfloat16 (best of 10).

    python -m benchmarks matmul_peak [--threads 2]

The measure every efficiency share in the docs is taken against (`python -m benchmarks speed` measures it again
before its runs): the best of `--repeats` n x n @ n x n products (2 n^3 FLOPs) after one warm-up, per dtype. A
shared 2-core machine gives anything from about 270 to 410 GFLOP/s in float32 from one hour to the next.
"""

from __future__ import annotations

from benchmarks._common import Report, matmul_peak, parser

DTYPES = ("float32", "bfloat16")


def report_peaks(report: Report, threads: int, n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """Measure each dtype's peak and print the table; returns FLOP/s by dtype."""
    peak = {dtype: matmul_peak(dtype, threads, n, repeats) for dtype in DTYPES}
    report.table(
        ["dtype", "GFLOP/s", "threads", "n", "best of"],
        [(d, f"{f / 1e9:.0f}", threads, n, repeats) for d, f in peak.items()],
    )
    report.results = {"matmul_flops": peak, "threads": threads, "n": n, "repeats": repeats}
    return peak


def main(argv: list[str] | None = None) -> None:
    ap = parser(__name__, __doc__)
    ap.add_argument("-n", type=int, default=2048, help="matrix size")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    report = Report(__name__, args)
    report_peaks(report, args.threads, args.n, args.repeats)
    report.save()
