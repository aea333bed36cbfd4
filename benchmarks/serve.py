"""Serving: latency and throughput of `POST /recommend`, a 60 s load test, and an incremental event update's cost.

Over loopback; the update is compared with a full recompute. Prints Markdown tables.

    python -m benchmarks serve            # about 4 minutes on 2 cores

What it builds (so it runs from a clean clone, no dataset needed): for SASRec and HSTU, a run directory with the
Amazon-Beauty recipe's model shape (`sasrec-amazon-beauty`, `hstu-amazon-beauty`) but `model.max_len=200`, a
12,101-item catalogue (Beauty's size) and untrained weights, plus synthetic users with 200-item histories and
timestamps (so HSTU's time bias is on). Latency does not depend on the weights' values or on which items are
asked for: the work per request is the same encoder pass and one scoring matmul over the catalogue.

Each server is the real `genrec serve RUN_DIR` in a subprocess; clients are threads with keep-alive
connections in this process, on the same machine (they share its cores with the server). Requests send an
ad-hoc history (`{"history": [...], "timestamps": [...], "k": 10}`), so every request encodes the whole
history: the worst case (a known user's request reuses the cached query instead).
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmarks._common import Report, parser, timed
from genrec.config import dump_config, load_config
from genrec.data.batching import HistoryBatch
from genrec.io import write_json, write_text
from genrec.models import build_model
from genrec.runs import load_run
from genrec.training.checkpoint import save_weights

N_ITEMS = 12_101  # Amazon Beauty after the P5 preprocessing
N_USERS = 1_000
MAX_LEN = 200


def make_run(model: str, root: Path, seed: int = 0) -> Path:
    """A loadable run directory of the recipe's shape with untrained weights and synthetic users."""
    cfg = load_config(f"{model}-amazon-beauty", [f"model.max_len={MAX_LEN}"])
    out = root / model
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = build_model(cfg.model, N_ITEMS, N_USERS)
    save_weights(out / "model.safetensors", net.state_dict())
    write_text(out / "config.yaml", dump_config(cfg))
    write_json(out / "meta.json", {"model": model, "n_items": N_ITEMS, "n_users": N_USERS, "synthetic": True})
    pl.DataFrame(
        {"item_id": np.arange(1, N_ITEMS + 1), "title": [f"item {i}" for i in range(1, N_ITEMS + 1)]}
    ).with_columns(pl.lit(None, dtype=pl.List(pl.List(pl.String))).alias("categories")).write_parquet(
        out / "items.parquet"
    )
    histories = rng.integers(1, N_ITEMS + 1, (N_USERS, MAX_LEN))
    times = 1_400_000_000 + np.cumsum(rng.integers(60, 86_400 * 30, (N_USERS, MAX_LEN)), axis=1)
    pl.DataFrame(
        {
            "user": np.arange(N_USERS),
            "user_id": np.arange(1, N_USERS + 1),
            "history": histories.tolist(),
            "timestamps": times.tolist(),
        }
    ).write_parquet(out / "users.parquet")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(
        self,
        run_dir: Path,
        backend: str = "exact",
        extra: list[str] | tuple = (),
        open_files: int | None = None,
    ) -> None:
        """`genrec serve RUN_DIR` with `extra` options, under a limit of `open_files` descriptors if given."""
        self.port = free_port()
        cmd = [sys.executable, "-m", "genrec", "serve", str(run_dir), "--port", str(self.port)]
        limit = (
            None
            if open_files is None
            else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files,) * 2))
        )
        self.proc = subprocess.Popen(
            [*cmd, "--backend", backend, *extra], stdout=subprocess.DEVNULL, preexec_fn=limit
        )
        for _ in range(600):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def load(port: int, make_request, clients: int, seconds: float, warmup: float = 1.0) -> dict:
    """`clients` threads, each with one keep-alive connection, sending requests back to back."""
    stop_at = time.perf_counter() + warmup + seconds
    measure_from = time.perf_counter() + warmup
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    samples: list[str] = []

    def worker(i: int) -> None:
        rng = np.random.default_rng(i)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while (now := time.perf_counter()) < stop_at:
            method, path, body = make_request(rng)
            try:
                conn.request(method, path, body=body, headers={"content-type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200
                if not ok and len(samples) < 3:
                    samples.append(f"{resp.status} {data[:200]!r}")
            except (OSError, http.client.HTTPException) as e:
                ok = False
                if len(samples) < 3:
                    samples.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            done = time.perf_counter()
            if now >= measure_from:
                latencies[i].append(done - now)
                errors[i] += not ok

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.concatenate([np.array(x) for x in latencies]) * 1000
    return {
        "requests": len(lat),
        "rps": len(lat) / seconds,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "errors": sum(errors),
        "samples": samples,
    }


def history_request(users: pl.DataFrame, length: int, k: int = 10):
    hist = np.array(users["history"].to_list())[:, -length:]
    times = np.array(users["timestamps"].to_list())[:, -length:]

    def make(rng):
        u = int(rng.integers(len(hist)))
        body = {"history": hist[u].tolist(), "timestamps": times[u].tolist(), "k": k}
        return "POST", "/recommend", json.dumps(body)

    return make


def mixed_request(users: pl.DataFrame, k: int = 10):
    """The load phase: ad-hoc histories, known users, and events (live histories grow past the window)."""
    by_history = history_request(users, MAX_LEN, k)

    def make(rng):
        r = rng.random()
        if r < 0.6:
            return by_history(rng)
        user = int(rng.integers(1, N_USERS + 1))
        if r < 0.85:
            return "POST", "/recommend", json.dumps({"user_id": user, "k": k})
        body = {"user_id": user, "items": [int(rng.integers(1, N_ITEMS + 1))]}
        return "POST", "/events", json.dumps(body)

    return make


def bench_update(run_dir: Path, repeats: int) -> dict:
    """Median ms to update a user's query after one event at history 200: incremental (HSTU cache) vs recompute."""
    model = load_run(run_dir).model
    users = pl.read_parquet(run_dir / "users.parquet")
    items = torch.tensor(users["history"][0].to_list())
    ts = torch.tensor(users["timestamps"][0].to_list())
    cache = model.init_state(items[:-1], ts[:-1])  # 199 items cached, the event is the 200th

    torch.set_num_threads(1)  # as `genrec serve` runs (--threads 1)

    def ms(call) -> float:
        return timed(call, repeats).median * 1000

    with torch.no_grad():
        inc = ms(lambda: model.extend_state(cache, items[-1:], ts[-1:], items, ts))
        full = ms(lambda: model.user_embedding(HistoryBatch(items[None], None, ts[None])))
        prefill = ms(lambda: model.init_state(items, ts))
        new, incremental = model.extend_state(cache, items[-1:], ts[-1:], items, ts)
        ref = model.user_embedding(HistoryBatch(items[None], None, ts[None]))[0]
        err = float((model.state_query(new) - ref).abs().max())
    return {
        "incremental": inc,
        "recompute": full,
        "prefill": prefill,
        "exact": incremental,
        "max_abs_diff": err,
    }


def main(argv: list[str] | None = None) -> None:
    p = parser(__name__, __doc__, threads=False)
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per cell")
    p.add_argument("--load-seconds", type=float, default=60.0, help="length of the load phase")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--histories", default="50,200")
    p.add_argument("--models", default="sasrec,hstu")
    p.add_argument("--update-repeats", type=int, default=200, help="timings of the event update (median)")
    args = p.parse_args(argv)
    report = Report(__name__, args)
    clients = [int(c) for c in args.clients.split(",")]
    lengths = [int(h) for h in args.histories.split(",")]
    t_start = time.perf_counter()
    rows, load_row, update = [], None, None
    with tempfile.TemporaryDirectory(prefix="genrec-serve-bench-") as tmp:
        for model in args.models.split(","):
            run_dir = make_run(model, Path(tmp))
            users = pl.read_parquet(run_dir / "users.parquet")
            server = Server(run_dir)
            try:
                for length in lengths:
                    for c in clients:
                        r = load(server.port, history_request(users, length), c, args.seconds)
                        rows.append((model, length, c, r))
                        print(f"{model} history {length} clients {c}: {r}", file=sys.stderr)
                if model == "hstu" and args.load_seconds > 0:
                    load_row = load(server.port, mixed_request(users), max(clients), args.load_seconds)
                    print(f"load: {load_row}", file=sys.stderr)
            finally:
                server.stop()
            if model == "hstu":
                update = bench_update(run_dir, repeats=args.update_repeats)
    report.results = {
        "cells": [{"model": m, "history": h, "clients": c, **r} for m, h, c, r in rows],
        "load": load_row,
        "update": update,
    }
    report.line(
        f"\n`POST /recommend`, top-10, {N_ITEMS:,}-item catalogue, ad-hoc history of the given length (encoded "
        f"on every request), exact top-K; recipe shapes with max_len {MAX_LEN}, untrained weights; server "
        f"`genrec serve` (1 torch thread per request) and client threads on the same {os.cpu_count()}-core CPU, "
        f"{args.seconds:g} s per cell after 1 s warm-up.\n"
    )
    report.table(
        ["model", "history", "clients", "requests", "req/s", "p50 (ms)", "p99 (ms)", "errors"],
        [
            [m, h, c, r["requests"], f"{r['rps']:.0f}", f"{r['p50']:.1f}", f"{r['p99']:.1f}", r["errors"]]
            for m, h, c, r in rows
        ],
    )
    if load_row is not None:
        report.line(
            f"\nLoad phase: HSTU, {max(clients)} clients, {args.load_seconds:g} s, mixed requests (60% ad-hoc "
            f"history of {MAX_LEN}, 25% known user, 15% `POST /events`): {load_row['requests']} requests, "
            f"{load_row['rps']:.0f} req/s, p50 {load_row['p50']:.1f} ms, p99 {load_row['p99']:.1f} ms, "
            f"**{load_row['errors']} errors**"
            + (f" (e.g. {load_row['samples']})" if load_row["errors"] else "")
        )
    if update is not None:
        report.line(
            f"\nEvent update at history {MAX_LEN} (HSTU, in process, 1 torch thread, median of "
            f"{args.update_repeats}): the user's query after one new item.\n"
        )
        labels = [
            ("incremental", "incremental (cached keys/values, 199 -> 200 items)"),
            ("recompute", "full recompute (encode 200 items, as without a cache)"),
            ("prefill", "rebuild the cache (encode 200 items keeping keys/values)"),
        ]
        report.table(
            ["update", "ms", "vs incremental"],
            [
                [label, f"{update[key]:.2f}", f"{update[key] / update['incremental']:.1f}x"]
                for key, label in labels
            ],
        )
        report.line(
            f"\nIncremental equals recompute: max |difference| of the query {update['max_abs_diff']:.1e} "
            f"(incremental: {update['exact']})."
        )
    report.line(f"\nTotal time {time.perf_counter() - t_start:.0f} s.")
    report.save()
