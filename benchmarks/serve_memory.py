"""Serving memory: the resident memory (RSS) of `genrec serve` while new users arrive through `POST /events`.
Prints a Markdown table.

    .venv/bin/python benchmarks/serve_memory.py                  # about 3 minutes on 2 cores

The run is `benchmarks/serve.py`'s HSTU (Amazon-Beauty recipe shape, `max_len` 200, untrained weights, a
12,101-item catalogue). Each new user sends one event of 200 items with times, so its keys/values fill the
window: the most state one user can hold in memory. The server is the real `genrec serve` in a subprocess, once
per `--max-live-users` value asked for (`--state` in a temporary folder, `--state-sync normal`); its RSS is read
from /proc after every `--every` users. A `genrec` without live-user bounds (an older checkout on PYTHONPATH) is
measured once, without those options.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from serve import N_ITEMS, Server, make_run


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def feed(server: Server, users: int, items: int, every: int) -> list[tuple[int, float]]:
    """Send one event of `items` items for each of `users` new users; RSS after each `every` users."""
    rng = np.random.default_rng(0)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    marks = [(0, rss_mb(server.proc.pid))]
    for u in range(users):
        body = {
            "user_id": f"new-{u}",
            "items": rng.integers(1, N_ITEMS + 1, items).tolist(),
            "timestamps": (1_700_000_000 + 60 * np.arange(items)).tolist(),
        }
        conn.request("POST", "/events", json.dumps(body), {"content-type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"/events answered {resp.status}: {data[:200]!r}")
        if (u + 1) % every == 0:
            marks.append((u + 1, rss_mb(server.proc.pid)))
    return marks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--items", type=int, default=200, help="items in each new user's event")
    p.add_argument("--every", type=int, default=1000)
    p.add_argument("--max-live-users", default="100,2000", help="values to measure (2000 is the default)")
    args = p.parse_args()
    help_text = subprocess.run(
        [sys.executable, "-m", "genrec", "serve", "--help"], capture_output=True, text=True
    ).stdout
    bounded = "--max-live-users" in help_text
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="genrec-serve-memory-") as tmp:
        run_dir = make_run("hstu", Path(tmp))
        settings = [int(v) for v in args.max_live_users.split(",")] if bounded else [None]
        for limit in settings:
            extra = []
            if limit is not None:
                state = Path(tmp) / f"live-{limit}.sqlite"
                extra = ["--state", str(state), "--state-sync", "normal", "--max-live-users", str(limit)]
            server = Server(run_dir, extra=extra)
            try:
                marks = feed(server, args.users, args.items, args.every)
            finally:
                server.stop()
            rows.append(("unbounded (no option)" if limit is None else str(limit), marks))
            print(f"max-live-users {limit}: {marks}", file=sys.stderr)
    counts = [n for n, _ in rows[0][1]]
    print(
        f"\nRSS of `genrec serve` (MB) after N new users, each with one `POST /events` of {args.items} items "
        f"(HSTU, max_len 200, dim 64, 2 layers); growth = last - first.\n"
    )
    print("| --max-live-users | " + " | ".join(f"N={n}" for n in counts) + " | growth |")
    print("|---|" + "---|" * (len(counts) + 1))
    for label, marks in rows:
        cells = " | ".join(f"{mb:.0f}" for _, mb in marks)
        print(f"| {label} | {cells} | {marks[-1][1] - marks[0][1]:+.0f} |")
    print(f"\nTotal time {time.perf_counter() - t0:.0f} s.")


if __name__ == "__main__":
    main()
