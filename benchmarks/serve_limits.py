"""Serving limits: the resident memory (RSS) of `genrec serve` while new users arrive through `POST /events`, and
how it copes with slow clients (half-sent requests). Prints Markdown tables.

    python -m benchmarks serve_limits                  # about 4 minutes on 2 cores

The run is the `serve` benchmark's HSTU (Amazon-Beauty recipe shape, `max_len` 200, untrained weights, a
12,101-item catalogue). The server is the real `genrec serve` in a subprocess.

Memory: each new user sends one event of 200 items with times, so its keys/values fill the window: the most
state one user can hold. Measured once per `--max-live-users` value asked for (`--state` in a temporary folder,
`--state-sync normal`), RSS read from /proc after every `--every` users.

Slow clients: the server runs under a limit of 1,024 open files (a common default). (a) One socket sends half a
request line: seconds until the server closes it. (b) 1,100 sockets each send half a request line, then a
client asks `GET /healthz` every 0.5 s: the status of the first answer, and seconds until the first 200.

A `genrec` without these options (an older checkout on PYTHONPATH) is measured once, without them.
"""

from __future__ import annotations

import http.client
import json
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import Report, parser
from benchmarks.serve import N_ITEMS, Server, make_run

HALF = b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Le"


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


def seconds_to_close(port: int, limit: float) -> float | None:
    """Seconds until the server closes a socket that sent half a request (None: still open after `limit`)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(HALF)
        start = time.monotonic()
        sock.settimeout(limit)
        try:
            while sock.recv(4096):
                pass
        except TimeoutError:
            return None
        except ConnectionResetError:
            pass
        return time.monotonic() - start


def under_siege(port: int, sockets: int, limit: float) -> tuple[str, float | None]:
    """Open `sockets` half-sent requests, then poll /healthz: (first answer, seconds until a 200 or None)."""
    hanging = []
    try:
        for _ in range(sockets):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(HALF)
                hanging.append(sock)
            except OSError:
                break
        start, first = time.monotonic(), None
        while time.monotonic() - start < limit:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                status = conn.getresponse().status
                conn.close()
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
            first = first or str(status)
            if status == 200:
                return first, time.monotonic() - start
            time.sleep(0.5)
        return first, None
    finally:
        for sock in hanging:
            sock.close()


def main(argv: list[str] | None = None) -> None:
    p = parser(__name__, __doc__, threads=False)
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--items", type=int, default=200, help="items in each new user's event")
    p.add_argument("--every", type=int, default=1000)
    p.add_argument("--max-live-users", default="100,2000", help="values to measure (2000 is the default)")
    p.add_argument("--sockets", type=int, default=1100, help="half-sent requests at once")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a close or an answer")
    args = p.parse_args(argv)
    report = Report(__name__, args)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.sockets + 256)), hard))
    help_text = subprocess.run(
        [sys.executable, "-m", "genrec", "serve", "--help"], capture_output=True, text=True
    ).stdout
    bounded = "--max-live-users" in help_text
    t0 = time.perf_counter()
    memory, slow = [], []
    with tempfile.TemporaryDirectory(prefix="genrec-serve-limits-") as tmp:
        run_dir = make_run("hstu", Path(tmp))
        for limit in [int(v) for v in args.max_live_users.split(",")] if bounded else [None]:
            extra = []
            if limit is not None:
                state = Path(tmp) / f"live-{limit}.sqlite"
                extra = ["--state", str(state), "--state-sync", "normal", "--max-live-users", str(limit)]
            server = Server(run_dir, extra=extra)
            try:
                marks = feed(server, args.users, args.items, args.every)
            finally:
                server.stop()
            memory.append(("unbounded (no option)" if limit is None else str(limit), marks))
            print(f"max-live-users {limit}: {marks}", file=sys.stderr)
        extra = ["--state", str(Path(tmp) / "slow.sqlite")] if bounded else []
        server = Server(run_dir, extra=extra, open_files=1024)
        try:
            closed = seconds_to_close(server.port, args.wait)
            first, answered = under_siege(server.port, args.sockets, args.wait)
        finally:
            server.stop()
        slow.append(("defaults" if bounded else "no deadline, no cap", closed, first, answered))
        print(f"slow clients: {slow[-1]}", file=sys.stderr)
    counts = [n for n, _ in memory[0][1]]
    report.results = {"memory": memory, "slow_clients": slow}
    report.table(
        ["--max-live-users", *(f"N={n}" for n in counts), "growth"],
        [
            [label, *(f"{mb:.0f}" for _, mb in marks), f"{marks[-1][1] - marks[1][1]:+.0f}"]
            for label, marks in memory
        ],
        title=f"\nRSS of `genrec serve` (MB) after N new users, each with one `POST /events` of {args.items} "
        f"items (HSTU, max_len 200, dim 64, 2 layers); growth from N={args.every} (past the first allocations) "
        f"to N={args.users}.",
    )

    def secs(value):
        return f"{value:.1f}" if value is not None else f"not within {args.wait:g}"

    report.table(
        ["server", "(a) closed after s", "(b) first answer", "(b) first 200 after s"],
        [[label, secs(closed), first, secs(answered)] for label, closed, first, answered in slow],
        title=f"\nSlow clients, server limited to 1,024 open files: (a) seconds until a half-sent request is "
        f"closed; (b) {args.sockets:,} half-sent requests at once, then `GET /healthz` every 0.5 s.",
    )
    report.line(f"\nTotal time {time.perf_counter() - t0:.0f} s.")
    report.save()


if __name__ == "__main__":
    main()
