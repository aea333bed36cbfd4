"""Serving: incremental HSTU state, the HTTP API against `genrec recommend`, bad input, FAISS, the CLI command, live
events in a durable store with a bounded memory, time order, string and 64-bit ids, the demo page in a browser."""

import contextlib
import http.client
import json
import re
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from conftest import REPEATS_CSV, write_p5
from fastapi.testclient import TestClient

from genrec.config import load_config
from genrec.data.batching import HistoryBatch
from genrec.inference.state import time_order
from genrec.models.hstu import HSTU
from genrec.runs import load_run, train_run
from genrec.serve import create_app
from genrec.serve.server import make_server

SMALL = ["train.epochs=1", "model.dim=16", "model.max_len=20", "model.dropout=0.0", "eval.ks=[10]"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs on the bundled ML-100K (it has timestamps, so HSTU's time bias is on)."""
    root = tmp_path_factory.mktemp("serve_runs")
    out = {}
    for name, recipe, sets in [
        ("hstu", "hstu", SMALL),
        ("sasrec", "sasrec", SMALL),
        ("sasrec_offset", "sasrec", [*SMALL, "model.history_bias=true", "train.lr=0.01"]),
        ("popularity", "popularity", []),
    ]:
        train_run(load_config(recipe, sets, dataset="ml-100k"), root / name, progress=False)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def clients(runs):
    return {name: TestClient(create_app(path)) for name, path in runs.items()}


def genrec(*args):
    return subprocess.run(
        [sys.executable, "-m", "genrec", *args], capture_output=True, text=True, timeout=300
    )


def cli_item_ids(stdout: str) -> list[str]:
    """item_id column of `genrec recommend`'s table."""
    rows = [re.split(r"\s*[│|]\s*", line.strip()) for line in stdout.splitlines()]
    return [r[2] for r in rows if len(r) > 3 and r[1].isdigit()]


def raw(run, ids) -> list[str]:
    """Raw item ids of internal ids as the API writes them: strings."""
    return [str(i) for i in run.raw_item_ids(ids)]


def ids_of(answer: dict) -> list[str]:
    return [x["item_id"] for x in answer["items"]]


def test_kv_cache_equals_full_encode_and_recomputes_past_the_window():
    torch.manual_seed(0)
    cfg = load_config("hstu", ["model.dim=16", "model.max_len=8", "model.heads=2", "model.dropout=0.0"]).model
    model = HSTU(cfg, 40, 3).eval()
    with torch.no_grad():
        model.bias.pos.normal_()  # the bias starts at zero; make it matter
        model.bias.time.normal_()
    items = torch.randint(1, 41, (12,))
    ts = torch.cumsum(torch.randint(1, 10**6, (12,)), 0)

    def full(n):
        w = slice(max(0, n - 8), n)
        with torch.no_grad():
            return model.user_embedding(HistoryBatch(items[None, w], None, ts[None, w]))[0]

    cache = model.init_state(items[:3], ts[:3])
    assert torch.allclose(model.state_query(cache), full(3), atol=1e-5)
    for n in range(4, 9):  # one item at a time, inside the window
        cache, incremental = model.extend_state(cache, items[n - 1 : n], ts[n - 1 : n], items[:n], ts[:n])
        assert incremental
        assert torch.allclose(model.state_query(cache), full(n), atol=1e-5)
    two = model.extend_state(model.init_state(items[:5], ts[:5]), items[5:7], ts[5:7], None, None)
    assert two[1] and torch.allclose(model.state_query(two[0]), full(7), atol=1e-5)
    cache, incremental = model.extend_state(cache, items[8:9], ts[8:9], items[:9], ts[:9])
    assert not incremental  # the oldest item left the window: a recompute, still exact
    assert torch.allclose(model.state_query(cache), full(9), atol=1e-5)
    assert not torch.allclose(full(9), full(8))


@pytest.mark.parametrize("name", ["hstu", "sasrec", "sasrec_offset"])
def test_server_returns_the_same_top_k_as_genrec_recommend(runs, clients, name):
    run = load_run(runs[name])
    user = int(run.users["user_id"][3])
    r = genrec("recommend", str(runs[name]), "--user", str(user), "-k", "10")
    assert r.returncode == 0, r.stderr
    got = clients[name].post("/recommend", json={"user_id": user, "k": 10}).json()
    assert [x["item_id"] for x in got["items"]] == cli_item_ids(r.stdout)
    hist = run.raw_item_ids(run.user_history(user)[1][:7])
    r = genrec(
        "recommend", str(runs[name]), "--history", ",".join(map(str, hist)), "-k", "10", "--include-seen"
    )
    got = clients[name].post("/recommend", json={"history": hist, "k": 10, "exclude_seen": False}).json()
    assert [x["item_id"] for x in got["items"]] == cli_item_ids(r.stdout)
    # Same scores as the offline path, too.
    _, h, t = run.user_history(user)
    ids, scores = run.recommend_internal(h, 10, True, None, t)
    got = clients[name].post("/recommend", json={"user_id": user, "k": 10}).json()
    assert np.allclose([x["score"] for x in got["items"]], scores, atol=1e-5)


@pytest.mark.parametrize("name", ["hstu", "sasrec"])
def test_events_update_incrementally_and_equal_a_full_recompute(runs, name):
    client = TestClient(create_app(runs[name], state=":memory:"))
    run = client.app.state.engine.run
    user = int(run.users["user_id"][10])
    _, hist, ts = run.user_history(user)
    new = run.raw_item_ids([5, 17, 29, 41])
    start = int(ts[-1])
    kinds = []
    for j, item in enumerate(new):
        r = client.post(
            "/events", json={"user_id": user, "items": [item], "timestamps": [start + 60 * (j + 1)]}
        )
        assert r.status_code == 200, r.text
        kinds.append(r.json()["update"])
    got = client.post("/recommend", json={"user_id": user, "k": 20}).json()
    full = np.concatenate([hist, run.item_index(new)])
    full_ts = np.concatenate([ts, start + 60 * np.arange(1, 5)])
    ids, scores = run.recommend_internal(full, 20, True, None, full_ts)
    assert ids_of(got) == raw(run, ids)
    assert np.allclose([x["score"] for x in got["items"]], scores, atol=1e-4)
    assert got["history_length"] == len(full)
    if name == "sasrec":
        assert set(kinds) == {"recompute"}  # absolute positions shift: no exact cache
    elif len(hist) >= 20:  # ML-100K users have 20+ items: past max_len 20 every event recomputes the window
        assert all(k.startswith("recompute") for k in kinds)
    else:
        assert kinds[1:] == ["incremental"] * 3


def test_hstu_user_within_window_gets_incremental_updates(runs):
    client = TestClient(create_app(runs["hstu"], state=":memory:"))
    run = client.app.state.engine.run
    item = run.raw_item_ids([3])[0]
    r = client.post("/events", json={"user_id": 99_999, "items": [item], "timestamps": [1000]}).json()
    assert r["new_user"] and r["history_length"] == 1
    for j in range(19):
        r = client.post(
            "/events", json={"user_id": 99_999, "items": [item + 0], "timestamps": [2000 + j]}
        ).json()
        assert r["update"] == "incremental"
    r = client.post("/events", json={"user_id": 99_999, "items": [item]}).json()  # 21 > max_len 20
    assert r["update"].startswith("recompute")
    items, ts, _ = client.app.state.engine.history(99_999)
    ids, _ = run.recommend_internal(items, 10, True, None, ts)
    got = client.post("/recommend", json={"user_id": 99_999, "k": 10}).json()
    assert ids_of(got) == raw(run, ids)


@pytest.mark.parametrize(
    "body,status,needle",
    [
        ({"user_id": 10**9}, 404, "unknown user id"),
        ({"history": []}, 422, "history is empty"),
        ({"history": [1, "x"]}, 422, "unknown item id"),
        ({"history": [10**9]}, 422, "unknown item id"),
        ({"user_id": 1, "k": 10**9}, 422, "k=1000000000 is out of range"),
        ({"user_id": 1, "k": 0}, 422, "out of range"),
        ({"user_id": 1, "history": [1]}, 422, "exactly one of user_id or history"),
        ({"user_id": "abc"}, 404, "unknown user id"),
        ({"history": [1], "timestamps": [1, 2]}, 422, "timestamps has 2 values"),
        ({"user_id": 1, "bogus": 1}, 422, "bogus"),
        ({"user_id": 1, "timestamps": [5]}, 422, "timestamps go with a history"),
        ([1, 2], 422, "dictionary"),
    ],
)
def test_bad_recommend_requests_are_clear_4xx(clients, body, status, needle):
    r = clients["hstu"].post("/recommend", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_bad_events_change_nothing_and_the_server_keeps_serving(runs, tmp_path):
    client = TestClient(create_app(runs["hstu"], state=tmp_path / "live.sqlite"))
    user = int(client.app.state.engine.run.users["user_id"][0])
    before = client.get(f"/users/{user}").json()["history"]
    rec_before = client.post("/recommend", json={"user_id": user}).json()["items"]
    good = before[0]["item_id"]
    for body in [
        {"user_id": user, "items": [good, 10**9]},  # one unknown id: the whole event is refused
        {"user_id": user, "items": []},
        {"user_id": user, "items": [good], "timestamps": [1, 2]},
        {"user_id": user, "items": ["x"]},
        {"items": [good]},
    ]:
        r = client.post("/events", json=body)
        assert r.status_code == 422, r.text
    assert client.get(f"/users/{user}").json()["history"] == before
    assert client.post("/recommend", json={"user_id": user}).json()["items"] == rec_before
    big = b'{"history": [' + b"1," * 600_000 + b"1]}"
    r = client.post("/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    assert client.get("/healthz").json()["status"] == "ok"


def test_over_long_history_is_truncated_and_says_so(runs, clients):
    run = load_run(runs["hstu"])
    hist = run.raw_item_ids(list(range(1, 31)))
    got = clients["hstu"].post("/recommend", json={"history": hist, "k": 5}).json()
    assert got["truncated"] and got["history_used"] == 20 and got["history_length"] == 30
    assert "newest 20 of 30" in got["notes"][0]
    assert not set(ids_of(got)) & set(map(str, hist))  # the whole history is still excluded


@pytest.mark.parametrize("name", ["sasrec", "sasrec_offset"])
def test_rank_scores_candidates_with_the_retrieval_scores(runs, clients, name):
    run = load_run(runs[name])
    user = int(run.users["user_id"][2])
    _, h, t = run.user_history(user)
    cand = run.raw_item_ids([7, 3, 11, 50, *h[-2:]])  # two items from the history: the offset applies
    got = clients[name].post("/rank", json={"user_id": user, "candidates": cand}).json()["items"]
    ids, scores = run.recommend_internal(h, run.model.n_items, False, None, t)
    full = dict(zip(raw(run, ids), scores))
    assert sorted(x["item_id"] for x in got) == sorted(map(str, cand))
    assert [x["score"] for x in got] == sorted((x["score"] for x in got), reverse=True)
    assert np.allclose([x["score"] for x in got], [full[x["item_id"]] for x in got], atol=1e-5)
    bad = clients[name].post("/rank", json={"user_id": user, "candidates": [10**9]})
    assert bad.status_code == 422 and "unknown item id" in bad.json()["detail"]


def test_faiss_backend_finds_nearly_the_exact_top_k(runs):
    exact = TestClient(create_app(runs["sasrec"]))
    ann = TestClient(create_app(runs["sasrec"], backend="faiss"))
    overlap = []
    for u in exact.get("/users?limit=20").json()["users"]:
        a = {x["item_id"] for x in exact.post("/recommend", json={"user_id": u, "k": 10}).json()["items"]}
        b = ann.post("/recommend", json={"user_id": u, "k": 10}).json()
        assert b["backend"] == "faiss"
        overlap.append(len(a & {x["item_id"] for x in b["items"]}) / 10)
    assert np.mean(overlap) >= 0.9


def test_non_embedding_model_is_served_by_its_own_scores(runs, clients):
    run = load_run(runs["popularity"])
    ids, _ = run.recommend_internal(run.item_index(run.raw_item_ids([1, 2])), 5)
    got = clients["popularity"].post("/recommend", json={"history": run.raw_item_ids([1, 2]), "k": 5}).json()
    assert ids_of(got) == raw(run, ids)


def test_items_healthz_page_and_docs(runs, clients):
    c = clients["hstu"]
    run = load_run(runs["hstu"])
    first = run.raw_item_ids([1])[0]
    item = c.get(f"/items/{first}").json()
    assert item["item_id"] == str(first) and item["title"] == run.titles([1])[0]
    assert c.get("/items/999999999").status_code == 404
    assert c.get("/items/abc").status_code == 404  # an integer catalogue has no item "abc"
    health = c.get("/healthz").json()
    assert health["status"] == "ok" and health["items"] == run.meta["n_items"] and health["incremental_state"]
    assert "<script>" in c.get("/").text
    assert "/recommend" in c.get("/openapi.json").json()["paths"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_genrec_serve_command_answers_over_http(runs):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "genrec", "serve", str(runs["hstu"]), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        health = None
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    health = json.load(r)
                break
            except OSError:
                time.sleep(0.1)
        assert health is not None and health["model"] == "hstu"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def serving(app, **limits):
    """The app behind the real HTTP server (`genrec serve`'s, with its limits) in a thread; yields the port."""
    port = free_port()
    server = make_server(app, port=port, **limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def http_json(port: int, method: str, path: str, body=None, timeout: float = 30):
    """(status, JSON answer) of one request to a server on this machine."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data, {"content-type": "application/json"}, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def start_serve(run_dir, *options) -> tuple[subprocess.Popen, int]:
    """`genrec serve RUN_DIR OPTIONS` in a subprocess, once it answers /healthz: (process, port)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "genrec", "serve", str(run_dir), "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(600):
        if proc.poll() is not None:
            raise AssertionError(f"genrec serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if http_json(port, "GET", "/healthz", timeout=1)[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("genrec serve did not answer within 60 s")


def rss_mb(pid: int) -> float:
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


# ---- live events: durable, bounded in memory, in time order ---------------------------------------------------


def test_events_are_committed_before_the_answer_and_evicted_users_reload(runs, tmp_path):
    path = tmp_path / "live.sqlite"
    client = TestClient(create_app(runs["hstu"], state=path, max_live_users=2))
    engine = client.app.state.engine
    run = engine.run
    users = [*(int(u) for u in run.users["user_id"][:3]), "walk-in"]
    expected = {}
    for n, user in enumerate(users):
        known = user != "walk-in"
        _, hist, ts = run.user_history(user) if known else (None, np.zeros(0, int), np.zeros(0, int))
        newest = int(ts[-1]) if len(ts) else 1_000_000
        new = np.array([5 + n, 17 + n])
        times = [newest + 60, newest + 120]
        r = client.post("/events", json={"user_id": user, "items": raw(run, new), "timestamps": times})
        assert r.status_code == 200 and r.json()["new_user"] == (not known)
        # Committed when the answer comes: another connection to the file sees the rows.
        with sqlite3.connect(path) as other:
            rows = other.execute("SELECT item, ts FROM genrec_events WHERE user = ?", (str(user),)).fetchall()
        assert rows == list(zip(raw(run, new), times))
        expected[user] = (np.concatenate([hist, new]), np.concatenate([ts, times]))
    assert engine.live_users() == 2  # the first two users left memory
    for user, (items, ts) in expected.items():
        ids, scores = run.recommend_internal(items, 10, True, None, ts)
        got = client.post("/recommend", json={"user_id": user, "k": 10}).json()
        assert ids_of(got) == raw(run, ids) and np.allclose(
            [x["score"] for x in got["items"]], scores, atol=1e-4
        )
        assert ids_of({"items": client.get(f"/users/{user}").json()["history"]}) == raw(run, items)
        assert engine.live_users() <= 2
    # A reloaded user's next event rebuilds its model state from the history, then extends it.
    user = users[0]
    items, ts = expected[user]
    r = client.post(
        "/events", json={"user_id": user, "items": raw(run, [9]), "timestamps": [int(ts[-1]) + 60]}
    )
    assert r.json()["update"].startswith("recompute")
    ids, _ = run.recommend_internal(np.append(items, 9), 10, True, None, np.append(ts, ts[-1] + 60))
    assert ids_of(client.post("/recommend", json={"user_id": user, "k": 10}).json()) == raw(run, ids)


def test_a_kill_9_and_a_restart_lose_no_acknowledged_event(runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["hstu"], run_dir, ignore=shutil.ignore_patterns("live-events.sqlite*"))
    run = load_run(run_dir)
    known = int(run.users["user_id"][5])
    newest = int(run.user_history(known)[2][-1])
    proc, port = start_serve(run_dir)  # the default store: RUN_DIR/live-events.sqlite, fsync on each commit
    try:
        for items, times in [
            ([3], [newest + 60]),
            ([8, 4], [newest + 200, newest + 120]),
            ([11], [newest - 9]),
        ]:
            body = {"user_id": known, "items": raw(run, items), "timestamps": times}
            assert http_json(port, "POST", "/events", body)[0] == 200
        for item in (2, 30, 7):
            assert (
                http_json(port, "POST", "/events", {"user_id": "walk-in", "items": raw(run, [item])})[0]
                == 200
            )

        def snapshot(port):
            out = {}
            for user in (known, "walk-in"):
                history = http_json(port, "GET", f"/users/{user}")[1]["history"]
                rec = http_json(port, "POST", "/recommend", {"user_id": user, "k": 10})[1]["items"]
                out[user] = (
                    ids_of({"items": history}),
                    [x["item_id"] for x in rec],
                    [x["score"] for x in rec],
                )
            return out

        before = snapshot(port)
    finally:
        proc.kill()  # SIGKILL: no shutdown, no checkpoint
        proc.wait(timeout=30)
    assert (run_dir / "live-events.sqlite").exists()
    proc, port = start_serve(run_dir)
    try:
        after = snapshot(port)
        assert http_json(port, "GET", "/healthz")[1]["state"] == str(run_dir / "live-events.sqlite")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for user in before:
        assert after[user][:2] == before[user][:2]
        assert np.allclose(after[user][2], before[user][2], atol=1e-5)
    assert before["walk-in"][0] == raw(run, [2, 30, 7])
    # In (time, position) order: the late event (newest - 9 s) among the stored history, not at the end.
    _, hist, ts = run.user_history(known)
    items = np.concatenate([hist, [3, 8, 4, 11]])
    times = np.concatenate([ts, [newest + 60, newest + 200, newest + 120, newest - 9]])
    assert before[known][0] == raw(run, items[time_order(times)])
    assert before[known][0][-1] == raw(run, [8])[0] and before[known][0][-4] != raw(run, [11])[0]


def test_the_state_file_may_be_an_existing_database_and_bad_ones_are_one_line_errors(runs, tmp_path):
    from genrec.errors import ConfigError

    own = tmp_path / "app.sqlite"
    with sqlite3.connect(own) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, what TEXT)")
        db.execute("INSERT INTO orders (what) VALUES ('tea')")
    client = TestClient(create_app(runs["sasrec"], state=own))
    run = client.app.state.engine.run
    assert client.post("/events", json={"user_id": "u1", "items": raw(run, [4])}).status_code == 200
    with sqlite3.connect(own) as db:
        assert db.execute("SELECT what FROM orders").fetchall() == [
            ("tea",)
        ]  # the user's own table untouched
        assert db.execute("SELECT user, item FROM genrec_events").fetchall() == [("u1", raw(run, [4])[0])]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # A file whose events name items of another catalogue, a file that is not SQLite, a table of ours with
    # other columns, a folder that does not exist: one line each, before serving.
    other = tmp_path / "other.sqlite"
    TestClient(create_app(runs["sasrec"], state=other)).post(
        "/events", json={"user_id": 1, "items": raw(run, [4])}
    )
    with sqlite3.connect(other) as db:
        db.execute("UPDATE genrec_events SET item = 'not-an-item'")
    (tmp_path / "text.sqlite").write_text("user,item\n1,2\n" * 100)
    with sqlite3.connect(tmp_path / "clash.sqlite") as db:
        db.execute("CREATE TABLE genrec_events (user TEXT, item TEXT)")
    for path, needle in [
        (other, "1 item ids this run's catalogue lacks (e.g. 'not-an-item')"),
        (tmp_path / "text.sqlite", "cannot use it as an SQLite database"),
        (tmp_path / "clash.sqlite", "table genrec_events has columns ['user', 'item']"),
        (tmp_path / "no" / "such" / "x.sqlite", "does not exist"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            create_app(runs["sasrec"], state=path)
    r = genrec("serve", str(runs["sasrec"]), "--state", str(tmp_path / "text.sqlite"))
    assert r.returncode == 2 and r.stderr.startswith("error: --state") and len(r.stderr.splitlines()) == 1


def test_an_event_the_store_cannot_write_is_a_503_and_changes_nothing(runs, tmp_path):
    client = TestClient(create_app(runs["hstu"], state=tmp_path / "live.sqlite"))
    engine = client.app.state.engine
    run = engine.run
    user = int(run.users["user_id"][1])
    before = client.post("/recommend", json={"user_id": user}).json()  # the user is now in memory
    engine.store.close()  # as when the disk or the file fails
    r = client.post("/events", json={"user_id": user, "items": raw(run, [4])})
    assert r.status_code == 503 and "could not store the events" in r.json()["detail"]
    assert client.post("/recommend", json={"user_id": user}).json() == before


def test_memory_stays_bounded_for_5000_new_users(tmp_path):
    """Each new user's event fills HSTU's window (50 positions x 64 dims x 2 layers of keys and values: 51 KB):
    kept for every user, 4,000 users would add over 200 MB; with --max-live-users 100 memory stays flat."""
    rows = [[u, *((u * 7 + 3 * j) % 300 + 1 for j in range(12))] for u in range(1, 41)]
    data = write_p5(tmp_path / "memory-users", rows, {i: f"Item {i}" for i in range(1, 301)})
    sets = ["train.epochs=1", "model.max_len=50", "model.dropout=0.0", "eval.ks=[10]"]
    train_run(load_config("hstu", sets, dataset=str(data)), tmp_path / "run", progress=False)
    proc, port = start_serve(
        tmp_path / "run", "--state", str(tmp_path / "live.sqlite"), "--state-sync", "normal",
        "--max-live-users", "100",
    )  # fmt: skip
    catalogue = load_run(tmp_path / "run").item_ids.ids.tolist()
    rng = np.random.default_rng(0)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for u in range(5000):
            if u == 1000:  # past the first allocations of the process (model, SQLite cache, allocator pools)
                start = rss_mb(proc.pid)
            body = json.dumps({"user_id": f"new-{u}", "items": rng.choice(catalogue, 50).tolist()})
            conn.request("POST", "/events", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            resp.read()
        growth = rss_mb(proc.pid) - start
        health = http_json(port, "GET", "/healthz")[1]
    finally:
        conn.close()
        proc.terminate()
        proc.wait(timeout=30)
    assert health["live_users"] == 100 and health["max_live_users"] == 100
    assert growth < 40, f"RSS grew {growth:.0f} MB over 4,000 new users"
    with sqlite3.connect(tmp_path / "live.sqlite") as db:
        assert db.execute("SELECT count(*), count(DISTINCT user) FROM genrec_events").fetchone() == (
            250_000,
            5000,
        )


@pytest.mark.parametrize("name", ["hstu", "sasrec"])
def test_a_history_is_read_in_time_order_whatever_its_list_order(runs, clients, name):
    """Two descriptions of the same four events (item, time) give the same top-5 and the same /rank scores:
    the one in time order, the other listed in another order."""
    run = load_run(runs[name])
    items, times = [40, 7, 93, 12], [1_000_000, 1_000_600, 1_003_000, 1_009_000]
    shuffled = [2, 0, 3, 1]
    cand = raw(run, [1, 2, 3, 50, 60])
    answers = []
    for order in (range(4), shuffled):
        body = {"history": raw(run, [items[i] for i in order]), "timestamps": [times[i] for i in order]}
        rec = clients[name].post("/recommend", json={**body, "k": 5}).json()
        ranked = clients[name].post("/rank", json={**body, "candidates": cand}).json()["items"]
        answers.append(
            (ids_of(rec), [x["score"] for x in rec["items"]], {x["item_id"]: x["score"] for x in ranked})
        )
    assert answers[0][0] == answers[1][0]
    assert np.allclose(answers[0][1], answers[1][1], atol=1e-5)
    assert answers[0][2] == pytest.approx(answers[1][2], abs=1e-5)
    ids, _ = run.recommend_internal(np.array(items), 5, True, None, np.array(times))
    assert answers[0][0] == raw(run, ids)
    # Equal times keep their list order (the loader's position tie-break).
    tie = {"history": raw(run, [40, 7]), "timestamps": [5, 5], "k": 5}
    ids, _ = run.recommend_internal(np.array([40, 7]), 5, True, None, np.array([5, 5]))
    assert ids_of(clients[name].post("/recommend", json=tie).json()) == raw(run, ids)


def test_a_late_event_goes_to_its_place_in_time(runs):
    client = TestClient(create_app(runs["hstu"], state=":memory:"))
    run = client.app.state.engine.run

    def post(items, times):
        r = client.post("/events", json={"user_id": "late", "items": raw(run, items), "timestamps": times})
        assert r.status_code == 200, r.text
        return r.json()["update"]

    def check(items, times):
        assert ids_of({"items": client.get("/users/late").json()["history"]}) == raw(run, items)
        ids, scores = run.recommend_internal(np.array(items), 10, True, None, np.array(times))
        got = client.post("/recommend", json={"user_id": "late", "k": 10}).json()
        assert ids_of(got) == raw(run, ids)
        assert np.allclose([x["score"] for x in got["items"]], scores, atol=1e-4)

    assert post([10], [1000]) == "recompute"
    assert post([20, 30], [3000, 2000]) == "incremental"  # one request, out of order: sorted first
    check([10, 30, 20], [1000, 2000, 3000])
    assert post([40], [1500]) == "recompute (late event)"  # older than the newest: its place, state rebuilt
    check([10, 40, 30, 20], [1000, 1500, 2000, 3000])
    assert post([50], [3000]) == "incremental"  # the newest time again: after the one already there
    check([10, 40, 30, 20, 50], [1000, 1500, 2000, 3000, 3000])
    # A known user's late event goes among its stored history.
    user = int(run.users["user_id"][7])
    _, hist, ts = run.user_history(user)
    at = int(ts[len(ts) // 2])
    r = client.post("/events", json={"user_id": user, "items": raw(run, [60]), "timestamps": [at]})
    assert r.json()["update"] == "recompute (late event)"
    place = int(np.searchsorted(ts, at, side="right"))
    want = np.insert(hist, place, 60)
    assert ids_of({"items": client.get(f"/users/{user}").json()["history"]}) == raw(run, want)


# ---- slow and numerous clients -----------------------------------------------------------------------------


def answer_and_close(sock, limit: float) -> tuple[bytes, float | None]:
    """(what the server sent, seconds until it closed the connection; None if it was still open after limit)."""
    start, data = time.monotonic(), b""
    sock.settimeout(limit)
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        return data, None
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


def test_half_sent_requests_are_answered_408_and_closed_within_the_deadline(runs):
    app = create_app(runs["hstu"], state=":memory:")
    with serving(app, request_timeout=1.0) as port:
        for half in [
            b"GET /heal",  # half a request line
            b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Len",
            b'POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"user',  # a body cut short
        ]:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(half)
                data, took = answer_and_close(sock, 10)
            assert took is not None and took < 3, half
            assert data.startswith(b"HTTP/1.1 408") and b"within 1 s" in data
        # A connection that sends nothing is closed too, without an answer.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            data, took = answer_and_close(sock, 10)
        assert data == b"" and took is not None and took < 3
        # The clock runs from the first byte: a request trickled a byte every 0.1 s is cut at the deadline.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            start = time.monotonic()
            for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n\r\n":
                if select.select([sock], [], [], 0.1)[0]:
                    break
                sock.send(bytes([byte]))
            data, _ = answer_and_close(sock, 10)
            assert data.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 3
        assert http_json(port, "GET", "/healthz")[0] == 200  # whole requests are still served


def test_the_server_answers_others_while_100_half_open_sockets_hang(runs):
    app = create_app(runs["hstu"], state=":memory:")
    user = int(app.state.engine.run.users["user_id"][0])
    with serving(app, request_timeout=60, max_connections=200) as port:
        hanging = []
        try:
            for _ in range(100):
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Le")
                hanging.append(sock)
            start = time.monotonic()
            assert http_json(port, "GET", "/healthz", timeout=5)[0] == 200
            status, got = http_json(port, "POST", "/recommend", {"user_id": user, "k": 5}, timeout=5)
            assert status == 200 and len(got["items"]) == 5
            assert time.monotonic() - start < 5
        finally:
            for sock in hanging:
                sock.close()


def test_connections_past_the_cap_are_refused_at_once_until_one_closes(runs):
    app = create_app(runs["hstu"], state=":memory:")
    with serving(app, request_timeout=1.5, max_connections=5) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        try:
            time.sleep(0.3)  # the server has accepted all five
            with socket.create_connection(("127.0.0.1", port)) as sock:
                data, took = answer_and_close(sock, 5)
            assert data.startswith(b"HTTP/1.1 503") and b"5 open connections" in data and took < 1
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.3)
        assert http_json(port, "GET", "/healthz")[0] == 200


# ---- ids as strings: string ids and integers above 2^53 ---------------------------------------------------------

BIG = 2**53  # the first integer a JavaScript number cannot tell from its neighbour (2^53 + 1 reads as 2^53)
TITLES = ["Blue Kettle", "Red Teapot", "Green Mug", "Copper Pan", "Oak Spoon", "Steel Whisk", "Glass Jar"]


def id_dataset(folder, kind: str):
    """A next-item log over 7 titled items. kind "string": UUID-like users and ASIN-like items ("007" and "7"
    are two items); "big": users and items numbered from 2^53, so that neighbours collapse in a JS number."""
    folder.mkdir(parents=True)
    if kind == "string":
        users = [f"user-{u:02d}-{'ab' * (u % 3)}" for u in range(24)]
        items = ["B000KETTLE", "B000TEAPOT", "007", "7", "B00PANPAN1", "B00SPOON01", "B00JARJAR1"]
    else:
        users = [BIG + u for u in range(24)]
        items = [BIG + 2 * i for i in range(7)]
    rows = ["user_id,item_id,timestamp"]
    for n, user in enumerate(users):
        for t in range(5):
            rows.append(f"{user},{items[(n + t) % len(items)]},{1_700_000_000 + 60 * t}")
    (folder / "inter.csv").write_text("\n".join(rows) + "\n")
    (folder / "items.csv").write_text(
        "item_id,title\n" + "".join(f"{i},{t}\n" for i, t in zip(items, TITLES))
    )
    return folder / "inter.csv", [str(u) for u in users], [str(i) for i in items]


@pytest.fixture(scope="module")
def id_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("id_runs")
    out = {}
    for kind in ("string", "big"):
        data, users, items = id_dataset(root / f"{kind}-data", kind)
        sets = [*SMALL, "model.max_len=4"]  # 5 events a user: a history longer than the window is truncated
        train_run(load_config("sasrec", sets, dataset=str(data)), root / kind, progress=False)
        out[kind] = (root / kind, users, items)
    return out


@pytest.mark.parametrize("kind", ["string", "big"])
def test_ids_travel_as_the_strings_the_api_returns(id_runs, kind, tmp_path):
    run_dir, users, items = id_runs[kind]
    client = TestClient(create_app(run_dir, state=tmp_path / "live.sqlite"))
    listed = client.get("/users?limit=100").json()["users"]
    assert sorted(listed) == sorted(users)  # every id as a string, none rounded onto a neighbour
    for user in users[:3]:
        history = client.get(f"/users/{user}").json()
        assert history["user_id"] == user and set(ids_of({"items": history["history"]})) <= set(items)
        got = client.post("/recommend", json={"user_id": user, "k": 3}).json()
        assert got["user_id"] == user and set(ids_of(got)) <= set(items)
    # Two neighbouring ids are two users with their own histories.
    a, b = (client.get(f"/users/{u}").json()["history"] for u in users[:2])
    assert a != b
    r = client.post("/events", json={"user_id": users[1], "items": [items[3]]})
    assert r.status_code == 200 and r.json()["user_id"] == users[1]
    assert client.get(f"/users/{users[1]}").json()["history"][-1]["item_id"] == items[3]
    assert client.get(f"/users/{users[0]}").json()["history"] == a
    found = client.get("/items", params={"q": "kettle"}).json()["items"]
    assert found == [{"item_id": items[0], "title": "Blue Kettle"}]
    assert ids_of(client.get("/items", params={"q": items[3]}).json())[0] == items[3]  # an id, then titles
    assert client.get("/items", params={"q": " "}).status_code == 422
    assert client.get("/items", params={"q": "no such thing"}).json()["items"] == []


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "no browser: install Debian's chromium and chromium-driver (.ci/run does) to run this test"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extras")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_window_size(1280, 900)
    yield driver
    driver.quit()


@pytest.mark.parametrize("kind", ["string", "big"])
def test_browser_demo_page_with_string_and_64_bit_ids(id_runs, browser, kind, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    run_dir, users, items = id_runs[kind]
    client = TestClient(create_app(run_dir, state=tmp_path / "live.sqlite"))
    # A list re-rendered while a wait condition reads it leaves stale elements: read it again, don't fail.
    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))

    def shown(list_id):
        return [
            li.get_attribute("data-item-id")
            for li in browser.find_elements(By.CSS_SELECTOR, f"#{list_id} li[data-item-id]")
        ]

    def ready():
        return browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready")

    def text(element_id):
        return browser.find_element(By.ID, element_id).text

    def history_of(user):  # newest first, as the page shows it
        return ids_of({"items": client.get(f"/users/{user}").json()["history"]})[::-1]

    with serving(client.app) as port:
        browser.get(f"http://127.0.0.1:{port}/")
        first = client.get("/users?limit=1").json()["users"][0]
        wait.until(lambda d: ready() == f"{first}:5")
        assert shown("history") == history_of(first)
        # 7 items: "top 10" asks for all 7; 2 are left outside the history.
        assert shown("recs") == ids_of(client.post("/recommend", json={"user_id": first, "k": 7}).json())
        assert len(shown("recs")) == 2
        assert "history truncated" in text("notes") and text("error") == ""  # a note, not an error
        # Type a neighbouring user id: that user's history, not the first one's.
        other = users[1]
        box = browser.find_element(By.ID, "user")
        box.clear()
        box.send_keys(other, Keys.ENTER)
        wait.until(lambda d: ready() == f"{other}:5")
        assert shown("history") == history_of(other) != history_of(first)
        # A new user id starts empty (a note), then search by title and add: its history begins.
        box.clear()
        box.send_keys("newcomer", Keys.ENTER)
        wait.until(lambda d: ready() == "newcomer:0")
        assert "no history yet" in text("notes") and text("error") == ""
        browser.find_element(By.ID, "search").send_keys("kett")
        wait.until(lambda d: shown("results") == [items[0]])
        browser.find_element(By.CSS_SELECTOR, "#results li button").click()
        wait.until(lambda d: ready() == "newcomer:1")
        assert shown("history") == [items[0]] == history_of("newcomer")
        assert shown("recs") and items[0] not in shown("recs") and text("error") == ""
        # Interact with the top recommendation: it becomes the newest history item.
        top = shown("recs")[0]
        browser.find_element(By.CSS_SELECTOR, "#recs li button").click()
        wait.until(lambda d: ready() == "newcomer:2")
        assert shown("history") == [top, items[0]]
        assert browser.execute_script("return document.body.innerText").count("NaN") == 0


def test_semantic_id_model_is_served_by_constrained_beam_search(tiny_p5, monkeypatch, tmp_path):
    from genrec.items import semantic_ids as semantic_ids_module

    # One-hot item vectors stand in for text embeddings (as in test_semantic_ids.py).
    monkeypatch.setattr(
        semantic_ids_module,
        "item_embeddings",
        lambda cfg, it, ids, collab=None: np.eye(len(ids), dtype=np.float32),
    )
    sets = ["model.dim=16", "model.heads=2", "model.tokenizer.codebook_size=3", "train.epochs=2"]
    train_run(load_config("tiger", sets, dataset=str(tiny_p5)), tmp_path / "tiger", progress=False)
    client = TestClient(create_app(tmp_path / "tiger"))
    run = client.app.state.engine.run
    user = int(run.users["user_id"][0])
    _, h, t = run.user_history(user)
    ids, _ = run.recommend_internal(h, 3, True, None, t)
    got = client.post("/recommend", json={"user_id": user, "k": 3}).json()
    assert ids_of(got) == raw(run, ids)
    r = client.post("/rank", json={"user_id": user, "candidates": run.raw_item_ids([1, 2])})
    assert r.status_code == 422 and "cannot score candidates" in r.json()["detail"]
    r = client.post("/events", json={"user_id": user, "items": run.raw_item_ids([1])})
    assert r.status_code == 200 and r.json()["update"] == "recompute"
    ids, _ = run.recommend_internal(np.append(h, 1), 3, True, None, None)
    got = client.post("/recommend", json={"user_id": user, "k": 3}).json()
    assert ids_of(got) == raw(run, ids)


@pytest.mark.parametrize("offset", [-30.0, 30.0])
def test_search_with_history_offset_equals_full_scoring(offset):
    from genrec.inference.retrieval import ExactTopK, search_with_history_offset

    torch.manual_seed(0)
    items = torch.randn(51, 8)
    items[0] = 0
    query = torch.randn(8)
    window = np.array([0, 4, 9, 9, 17])
    full = items @ query
    full[[4, 9, 17]] += offset
    full[0] = float("-inf")
    for exclude in (None, np.array([9])):
        expected = full.clone()
        if exclude is not None:
            expected[torch.from_numpy(exclude)] = float("-inf")
        top = torch.topk(expected, 10)
        ids, scores = search_with_history_offset(ExactTopK(items), items, query, 10, exclude, window, offset)
        assert ids.tolist() == top.indices.tolist()
        assert np.allclose(scores, top.values.numpy(), atol=1e-5)


# ---- the edges: an exhausted catalogue, NaN scores, /docs offline


def test_server_tells_an_exhausted_catalogue_from_a_list_that_stopped_short(tmp_path):
    """6 items; a history of 4 of them leaves 2, so k = 5 gives 2 items and says the catalogue is exhausted."""
    from fastapi.testclient import TestClient

    from genrec.serve import create_app
    from genrec.serve.app import shortfall_note

    data = tmp_path / "inter.csv"
    data.write_text(REPEATS_CSV)
    train_run(load_config("popularity", [], dataset=str(data)), tmp_path / "run", progress=False)
    client = TestClient(create_app(tmp_path / "run"))
    got = client.post("/recommend", json={"history": [1, 2, 3, 4], "k": 5}).json()
    assert sorted(x["item_id"] for x in got["items"]) == ["5", "6"]
    assert got["notes"][-1] == "catalogue exhausted: only 2 items are left after excluding the history"
    assert shortfall_note(4, 5, 7, scores_every_item=False) == (
        "4 of the 7 items left were returned (the beam search ran out); asked for 5"
    )


def test_server_answers_with_null_for_a_nan_score_and_never_lets_nan_take_a_place(tmp_path):
    """Popularity counts [_, 5, NaN, 4, 3, 2, 1]: the top-3 after item 6 is 1, 3, 4 (NaN used to take the first
    place and then be dropped: two items); /rank lists item 2 last with score null (it used to be a 500)."""
    from fastapi.testclient import TestClient

    from genrec.serve import create_app

    data = tmp_path / "inter.csv"
    data.write_text(REPEATS_CSV)
    train_run(load_config("popularity", [], dataset=str(data)), tmp_path / "run", progress=False)
    client = TestClient(create_app(tmp_path / "run"))
    client.app.state.engine.model.counts.copy_(torch.tensor([0, 5, float("nan"), 4, 3, 2, 1]))
    got = client.post("/recommend", json={"history": [6], "k": 3}).json()
    assert [x["item_id"] for x in got["items"]] == ["1", "3", "4"]
    r = client.post("/rank", json={"history": [6], "candidates": [2, 1, 3]})
    assert r.status_code == 200
    assert [(x["item_id"], x["score"]) for x in r.json()["items"]] == [("1", 5.0), ("3", 4.0), ("2", None)]
    r = client.post("/events", json={"user_id": 1, "items": [1], "timestamps": [-5]})
    assert r.status_code == 422 and "greater than or equal to 0" in r.json()["detail"]


def test_docs_pages_load_their_assets_from_the_server_itself(tmp_path):
    """Every script and stylesheet of /docs and /redoc is a path on this server (no CDN), and each is served."""
    import re

    from fastapi.testclient import TestClient

    from genrec.serve import create_app

    data = tmp_path / "inter.csv"
    data.write_text(REPEATS_CSV)
    train_run(load_config("popularity", [], dataset=str(data)), tmp_path / "run", progress=False)
    client = TestClient(create_app(tmp_path / "run"))
    for page, marker in (("/docs", "SwaggerUIBundle"), ("/redoc", "Redoc")):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
        assert assets and all(a.startswith("/") for a in assets), assets
        assert "cdn." not in html and "fonts.googleapis" not in html
        bodies = [client.get(a) for a in assets]
        assert all(b.status_code == 200 and len(b.content) > 10_000 for b in bodies)
        assert any(marker in b.text for b in bodies)
    assert "SwaggerUIBundle(" in client.get("/docs").text  # the page starts Swagger UI with /openapi.json
    assert "/recommend" in client.get("/openapi.json").json()["paths"]
