"""HTTP API and demo page for one run directory (FastAPI; `genrec serve RUN_DIR`).

Endpoints: POST /recommend, POST /rank, POST /events, GET /items?q=, GET /items/{item_id}, GET /users,
GET /users/{user_id}, GET /healthz, GET / (web page), GET /docs and /redoc (OpenAPI; their scripts are served
from the installed fastapi-offline package, so they work offline).

Ids: answers carry every user and item id as a JSON string ("50", "B00ABC1234"), whatever the dataset's id type,
since a JavaScript client would round an integer above 2^53 to another id; requests take an id as a string or
an integer. Histories with timestamps are read in (time, position) order, as the data loader orders events.
Live events are committed to an SQLite file (`state`) before /events answers (`genrec.inference.state`).

Errors: every client error is a 4xx whose JSON `detail` is one readable line. Wrong types and missing fields: 422;
unknown item ids in a body, empty histories, k outside 1..min(1000, catalogue): 422; unknown user or item in a
path or an unknown user_id to /recommend: 404; bodies over `max_body` bytes: 413; an event the store could not
write: 503. A rejected request changes nothing. A history longer than the model's window is truncated to its
newest items and the response says so (`history_used`, `notes`); the whole history still counts for
`exclude_seen`.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
import polars as pl
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, model_validator

from genrec.errors import DataError
from genrec.inference.engine import MAX_LIVE_USERS, Engine, Recommendation
from genrec.inference.state import EventStore, StoreError
from genrec.io import json_text
from genrec.runs import Run, load_run

MAX_BODY = 1 << 20  # bytes
MAX_LIST = 10_000  # items in one history / candidate list / event
PAGE = Path(__file__).parent / "static" / "index.html"
STATE_FILE = "live-events.sqlite"  # the default store of live events, inside the run directory


# Times are stored as int64; a larger JSON integer is a 422, not an overflow deeper down.
Int64 = Annotated[int, Field(ge=-(2**63), lt=2**63)]
# Ids are integers or strings, as the run's data gave them (an integer sent for a string id is matched as text).
Id = Int64 | Annotated[str, Field(min_length=1, max_length=512)]
# Whole unix seconds from 1970 on, as the run's data holds them (-1 marks a missing time there); a fractional or
# string time is a 422 rather than a silently rounded value.
UnixSeconds = Annotated[int, Field(ge=0, lt=2**63)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class OneSource(Strict):
    @model_validator(mode="after")
    def one_source(self):
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of user_id or history")
        if self.user_id is not None and self.timestamps is not None:
            raise ValueError("timestamps go with a history; a user's history has its own")
        return self


class RecommendRequest(OneSource):
    user_id: Id | None = Field(None, description="a known user (or one created by /events)")
    history: list[Id] | None = Field(
        None, max_length=MAX_LIST, description="raw item ids, oldest first (with timestamps: in any order)"
    )
    timestamps: list[UnixSeconds] | None = Field(
        None, max_length=MAX_LIST, description="unix seconds, one per item: the history is read in time order"
    )
    k: int = Field(10, description="how many items (1 to min(1000, catalogue size))")
    exclude_seen: bool = True


class RankRequest(OneSource):
    user_id: Id | None = None
    history: list[Id] | None = Field(None, max_length=MAX_LIST)
    timestamps: list[UnixSeconds] | None = Field(None, max_length=MAX_LIST)
    candidates: list[Id] = Field(..., max_length=MAX_LIST, description="raw item ids to score")


class EventsRequest(Strict):
    user_id: Id
    items: list[Id] = Field(..., max_length=MAX_LIST, description="raw item ids, oldest first")
    timestamps: list[UnixSeconds] | None = Field(
        None, max_length=MAX_LIST, description="unix seconds (default: now); an older event goes to its place"
    )


class BodyLimit:
    """ASGI middleware: answer 413 once a request body passes `limit` bytes (declared or streamed)."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send) -> None:
        body = json.dumps({"detail": f"request body is over the limit of {self.limit} bytes"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _items(run: Run, ids, scores=None) -> list[dict]:
    raw, titles = run.raw_item_ids(ids), run.titles(ids)
    out = [{"item_id": str(r), "title": t} for r, t in zip(raw, titles)]
    if scores is not None:
        for row, s in zip(out, scores):
            row["score"] = float(s)
    return out


def shortfall_note(returned: int, k: int, available: int, scores_every_item: bool) -> str:
    """Why a list holds fewer than the k items asked for: the catalogue is exhausted (every allowed item is in
    it), or the model stopped short of the items left (a beam search that ran out, items without a finite score
    or an approximate index that missed them)."""
    if returned >= available:
        return f"catalogue exhausted: only {available} items are left after excluding the history"
    why = "items without a finite score" if scores_every_item else "the beam search ran out"
    return f"{returned} of the {available} items left were returned ({why}); asked for {k}"


class FiniteJSONResponse(JSONResponse):
    """Strict JSON bodies: a NaN or infinite float (a score a broken model gave) is null, never an invalid token
    nor an internal error."""

    def render(self, content) -> bytes:
        return json_text(content, indent=None).encode()


def create_app(
    run: Run | str | Path,
    backend: str = "exact",
    max_body: int = MAX_BODY,
    state: str | Path | EventStore | None = None,
    max_live_users: int = MAX_LIVE_USERS,
    state_sync: str = "full",
) -> FastAPI:
    """The app for one run. `state`: the SQLite file of live events (default `RUN_DIR/live-events.sqlite`; an
    existing database gets genrec's tables beside its own; `":memory:"` keeps nothing) or an open EventStore;
    `state_sync`: "full" or "normal" (`EventStore`); `max_live_users`: users held in memory.
    Raises ConfigError (one line) for a store that cannot be used."""
    if not isinstance(run, Run):
        run = load_run(Path(run))
    store = state if isinstance(state, EventStore) else EventStore(state or run.dir / STATE_FILE, state_sync)
    try:
        engine = Engine(run, backend, max_live_users=max_live_users, store=store)
    except BaseException:
        if store is not state:
            store.close()
        raise

    @asynccontextmanager
    async def lifespan(app):
        yield
        if store is not state:  # a store this app opened: close it (SQLite folds the WAL into the file)
            store.close()

    # /docs and /redoc load Swagger UI / ReDoc from the installed fastapi-offline package (under
    # /static-offline-docs), not from a CDN: the pages work on a machine without internet.
    app = FastAPIOffline(
        default_response_class=FiniteJSONResponse,
        title="genrec",
        description=f"Recommendations from run `{run.dir.name}` ({run.cfg.model.name}, {engine.n_items} items).",
        lifespan=lifespan,
    )
    app.state.engine = engine
    titles = (
        run.items["title"].fill_null("").str.to_lowercase()
        if "title" in run.items.columns
        else pl.Series([""] * run.items.height)
    )

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError):
        status = 404 if str(exc).startswith("unknown user id") else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError):
        return JSONResponse({"detail": str(exc)[:500]}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # A bug, not bad input: say what failed in one line; the server and its state carry on.
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"[:500]}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()))
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return JSONResponse({"detail": "; ".join(parts)[:500]}, status_code=422)

    def response(rec: Recommendation, k: int, extra: dict):
        notes = []
        if rec.history_used < rec.history_length:
            notes.append(
                f"history truncated: the model reads the newest {rec.history_used} of {rec.history_length} items"
            )
        if len(rec.ids) < k:
            notes.append(shortfall_note(len(rec.ids), k, rec.available, "score" in run.model.capabilities))
        return {
            **extra,
            "items": _items(run, rec.ids, rec.scores),
            "history_length": rec.history_length,
            "history_used": rec.history_used,
            "truncated": rec.history_used < rec.history_length,
            "notes": notes,
            "model": run.cfg.model.name,
            "backend": engine.backend_name,
        }

    @app.post("/recommend")
    def recommend(req: RecommendRequest):
        """Top-k items for a user (live history) or an ad-hoc history of raw item ids."""
        if req.user_id is not None:
            rec = engine.recommend_user(req.user_id, req.k, req.exclude_seen)
            return response(rec, req.k, {"user_id": str(engine.user_key(req.user_id))})
        rec = engine.recommend_history(req.history, req.timestamps, req.k, req.exclude_seen)
        return response(rec, req.k, {})

    @app.post("/rank")
    def rank(req: RankRequest):
        """Scores of the candidates for a user or history, best first: a ranking run's like-logits (M-FALCON
        for the generative rankers), or a retrieval model's scores."""
        scores = engine.rank(req.candidates, req.user_id, req.history, req.timestamps)
        idx = engine.run.item_index(req.candidates)
        order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")  # NaN last
        return {"items": _items(run, idx[order], scores[order]), "model": run.cfg.model.name}

    @app.post("/events")
    def events(req: EventsRequest):
        """Add interactions to a user's live history, in time order; the next /recommend reflects them. The
        answer comes once the events are committed to the store."""
        out = engine.add_events(req.user_id, req.items, req.timestamps)
        return {**out, "user_id": str(out["user_id"])}

    @app.get("/items")
    def search_items(
        q: str = Query(..., min_length=1, max_length=200, description="an item id or words of a title"),
        limit: int = Query(20, ge=1, le=100),
    ):
        """Items whose id is `q` or whose title contains it (case-insensitive): the id first, then titles that
        start with it, then the other titles, each in catalogue order."""
        needle = q.strip()
        if not needle:
            raise DataError("q is blank: give an item id or words of a title")
        found = [int(run.item_index([needle])[0]) - 1] if run.item_ids.contains([needle])[0] else []
        starts = titles.str.starts_with(needle.lower()).to_numpy()
        inside = titles.str.contains(needle.lower(), literal=True).to_numpy()
        for i in [*np.flatnonzero(starts)[:limit], *np.flatnonzero(inside & ~starts)[:limit]]:
            if int(i) not in found:
                found.append(int(i))
        return {"items": _items(run, np.array(found[:limit], dtype=np.int64) + 1)}

    @app.get("/items/{item_id}")
    def item(item_id: str):
        try:
            idx = run.item_index([item_id])
        except DataError as e:
            raise HTTPException(404, str(e)) from None
        row = run.items.row(int(idx[0]) - 1, named=True)
        raw = run.raw_item_ids(idx)[0]
        return {"item_id": str(raw), "title": row.get("title"), "categories": row.get("categories")}

    @app.get("/users")
    def users(limit: int = Query(50, ge=1, le=1000)):
        """Some user ids (those with live events first, the most recent first), for the demo page."""
        return {"users": [str(u) for u in engine.users(limit)]}

    @app.get("/users/{user_id}")
    def user(user_id: str):
        """A user's live history with titles, oldest first."""
        items, _, _ = engine.history(user_id)  # unknown user: DataError -> 404
        return {"user_id": str(engine.user_key(user_id)), "history": _items(run, items)}

    @app.get("/healthz")
    def healthz():
        return {
            "status": "ok",
            "model": run.cfg.model.name,
            "items": engine.n_items,
            "users": run.users.height,
            "backend": engine.backend_name,
            "task": run.task.name,
            "incremental_state": engine.incremental,
            "max_k": engine.max_k,
            "window": engine.window,
            "state": store.path,
            "live_users": engine.live_users(),
            "max_live_users": engine.max_live_users,
            "live_memory_bound_mb": round(engine.max_live_users * engine.user_bytes / 2**20, 1),
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text()

    app.add_middleware(BodyLimit, limit=max_body)
    return app
