"""Serving: incremental HSTU state, the HTTP API against `genrec recommend`, bad input, FAISS, the CLI command."""

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from genrec.config import load_config
from genrec.data.batching import HistoryBatch
from genrec.models.hstu import HSTU
from genrec.runs import load_run, train_run
from genrec.serve import create_app

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


def cli_item_ids(stdout: str) -> list[int]:
    """item_id column of `genrec recommend`'s table."""
    rows = [re.split(r"\s*[│|]\s*", line.strip()) for line in stdout.splitlines()]
    return [int(r[2]) for r in rows if len(r) > 3 and r[1].isdigit()]


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
    client = TestClient(create_app(runs[name]))
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
    assert [x["item_id"] for x in got["items"]] == run.raw_item_ids(ids)
    assert np.allclose([x["score"] for x in got["items"]], scores, atol=1e-4)
    assert got["history_length"] == len(full)
    if name == "sasrec":
        assert set(kinds) == {"recompute"}  # absolute positions shift: no exact cache
    elif len(hist) >= 20:  # ML-100K users have 20+ items: past max_len 20 every event recomputes the window
        assert all(k.startswith("recompute") for k in kinds)
    else:
        assert kinds[1:] == ["incremental"] * 3


def test_hstu_user_within_window_gets_incremental_updates(runs):
    client = TestClient(create_app(runs["hstu"]))
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
    assert [x["item_id"] for x in got["items"]] == run.raw_item_ids(ids)


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
        ([1, 2], 422, "dictionary"),
    ],
)
def test_bad_recommend_requests_are_clear_4xx(clients, body, status, needle):
    r = clients["hstu"].post("/recommend", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_bad_events_change_nothing_and_the_server_keeps_serving(runs):
    client = TestClient(create_app(runs["hstu"]))
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
    assert not {x["item_id"] for x in got["items"]} & set(hist)  # the whole history is still excluded


@pytest.mark.parametrize("name", ["sasrec", "sasrec_offset"])
def test_rank_scores_candidates_with_the_retrieval_scores(runs, clients, name):
    run = load_run(runs[name])
    user = int(run.users["user_id"][2])
    _, h, t = run.user_history(user)
    cand = run.raw_item_ids([7, 3, 11, 50, *h[-2:]])  # two items from the history: the offset applies
    got = clients[name].post("/rank", json={"user_id": user, "candidates": cand}).json()["items"]
    ids, scores = run.recommend_internal(h, run.model.n_items, False, None, t)
    full = dict(zip(run.raw_item_ids(ids), scores))
    assert sorted(x["item_id"] for x in got) == sorted(cand)
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
    assert [x["item_id"] for x in got["items"]] == run.raw_item_ids(ids)


def test_items_healthz_page_and_docs(runs, clients):
    c = clients["hstu"]
    run = load_run(runs["hstu"])
    raw = run.raw_item_ids([1])[0]
    item = c.get(f"/items/{raw}").json()
    assert item["item_id"] == raw and item["title"] == run.titles([1])[0]
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


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian packages chromium and chromium-driver"
)
def test_browser_demo_page_end_to_end_in_headless_chromium(runs):
    webdriver = pytest.importorskip("selenium.webdriver")
    import uvicorn
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runs["hstu"]), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    # A list re-rendered while a wait condition reads it leaves stale elements: read it again, don't fail.
    wait = WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))
    try:
        while not server.started:
            time.sleep(0.05)
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))

        def shown(list_id):
            return [
                li.get_attribute("data-item-id")
                for li in driver.find_elements(By.CSS_SELECTOR, f"#{list_id} li")
            ]

        history, recs = shown("history"), shown("recs")
        assert history and len(recs) == 10
        run = load_run(runs["hstu"])
        first = driver.find_element(By.CSS_SELECTOR, "#recs li").text
        assert first.startswith(run.titles(run.item_index([int(recs[0])]))[0])  # shown with its title
        # Interact with the top recommendation: the history grows and the recommendations change.
        driver.find_element(By.CSS_SELECTOR, "#recs li button").click()
        wait.until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == str(len(history) + 1)
        )
        assert shown("history")[0] == recs[0]  # newest first
        assert shown("recs") != recs and recs[0] not in shown("recs")
        # An unknown item id: a clear message, and the history is unchanged.
        driver.find_element(By.ID, "item-id").send_keys("999999999")
        driver.find_element(By.ID, "add").click()
        wait.until(lambda d: "unknown item id" in d.find_element(By.ID, "status").text)
        assert len(shown("history")) == len(history) + 1
        Select(driver.find_element(By.ID, "user")).select_by_index(1)  # another user, another history
        wait.until(lambda d: shown("history") and shown("history")[0] != recs[0])
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=10)


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
    assert [x["item_id"] for x in got["items"]] == run.raw_item_ids(ids)
    r = client.post("/rank", json={"user_id": user, "candidates": run.raw_item_ids([1, 2])})
    assert r.status_code == 422 and "cannot score candidates" in r.json()["detail"]
    r = client.post("/events", json={"user_id": user, "items": run.raw_item_ids([1])})
    assert r.status_code == 200 and r.json()["update"] == "recompute"
    ids, _ = run.recommend_internal(np.append(h, 1), 3, True, None, None)
    got = client.post("/recommend", json={"user_id": user, "k": 3}).json()
    assert [x["item_id"] for x in got["items"]] == run.raw_item_ids(ids)


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
