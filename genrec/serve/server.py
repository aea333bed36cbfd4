"""The HTTP server of `genrec serve`: uvicorn (HTTP/1.1 through h11) with a deadline per request and a cap on open
connections, so that slow or numerous clients cannot hold the server.

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but nothing closes a connection that
was opened and never sent a whole request: a client that sends half a request line, or a body byte by byte,
holds a socket (a file descriptor) for ever, and about a thousand of them exhaust a process's descriptors.
`uvicorn.Config(limit_concurrency=...)` does not help: it answers 503 only once a request's headers are complete.
`GuardedH11Protocol` adds what is missing, on uvicorn's own h11 protocol:
- a deadline: a request must arrive whole (request line, headers and body) within `request_timeout` seconds of
  the connection opening or of its first byte on a kept-alive connection. Past it the server answers
  408 Request Timeout (a connection that sent nothing is closed without an answer, as a keep-alive timeout
  does) and closes the connection. The clock runs from the start, not from the last byte, so a client that
  trickles a byte a second is closed too;
- a cap: while `max_connections` connections are open, a new one is answered 503 at once and closed, before
  anything is read, so the process never holds more sockets than that (plus the listening one).
"""

from __future__ import annotations

import asyncio
import json
import resource

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from genrec.errors import ConfigError

MAX_CONNECTIONS = 512  # below the usual limit of 1024 open files, with room to spare
REQUEST_TIMEOUT = 10.0  # seconds for a whole request: a 1 MiB body at 100 KB/s still fits
_SPARE_DESCRIPTORS = 64  # the model, the store, the listening socket, logs


def _answer(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each whole request and a cap on open connections (see the
    module docstring). Subclasses set `max_connections` and `request_timeout` (`guarded_protocol`)."""

    max_connections = MAX_CONNECTIONS
    request_timeout = REQUEST_TIMEOUT
    _refused = False
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        if len(self.connections) >= self.max_connections:
            self._refused = True
            transport.write(
                _answer(
                    503,
                    "Service Unavailable",
                    f"the server has {self.max_connections} open connections, its limit: retry later",
                )
            )
            transport.close()
            return
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        if not self._refused:  # a refused connection never joined uvicorn's bookkeeping
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):  # a request begun and not yet whole
            if self._deadline is None:
                self._arm()
        else:
            self._disarm()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        begun = self.conn.their_state is h11.SEND_BODY or bool(self.conn.trailing_data[0])
        answered = self.cycle is not None and self.cycle.response_started
        if begun and not answered:
            detail = f"the request did not arrive whole within {self.request_timeout:g} s"
            self.transport.write(_answer(408, "Request Timeout", detail))
        self.transport.close()


def guarded_protocol(max_connections: int, request_timeout: float) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class with these limits (uvicorn builds one protocol object per connection)."""
    if max_connections < 1:
        raise ConfigError(f"--max-connections must be at least 1, got {max_connections}")
    if not request_timeout > 0:
        raise ConfigError(f"--request-timeout must be a positive number of seconds, got {request_timeout}")
    limits = {"max_connections": max_connections, "request_timeout": float(request_timeout)}
    return type("GuardedH11Protocol", (GuardedH11Protocol,), limits)


def ensure_descriptors(max_connections: int) -> None:
    """Raise the process's soft limit on open files to fit `max_connections` sockets plus spares, within the
    hard limit. Raises ConfigError (one line) when the hard limit is too low."""
    need = max_connections + _SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise ConfigError(
                f"--max-connections {max_connections} needs {need} open files; this process may open "
                f"{hard} (ulimit -Hn): lower --max-connections to {max(1, hard - _SPARE_DESCRIPTORS)}"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def make_server(
    app,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_connections: int = MAX_CONNECTIONS,
    request_timeout: float = REQUEST_TIMEOUT,
    log_level: str = "warning",
) -> uvicorn.Server:
    """A uvicorn server for `app` with the request deadline and connection cap; `.run()` serves until stopped."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(max_connections, request_timeout),
        log_level=log_level,
    )
    return uvicorn.Server(config)
