"""Serving the API over HTTP with uvicorn, hardened so that no client can take the node down or
crowd everyone else out.

- **Stack**: handlers run where deep recursion ends in ``RecursionError``, never in a segfault.
  Importing the Ethereum libraries raises the process's recursion limit to 100,000 (``py_ecc``
  does it on import), far more than an 8 MiB thread stack holds for recursive C code such as the
  JSON decoder. ``prepare_process`` sets the limit back to ``RECURSION_LIMIT`` (after importing
  ``py_ecc`` itself, so a later import cannot raise it again; ``run_server`` checks once more) and
  gives every thread started afterwards ``HANDLER_STACK_BYTES`` of stack; ``run_server`` runs the
  event loop in such a thread (the main thread's stack is fixed by ``ulimit -s``). With 10,000 levels in 64 MiB a
  level may use 6.5 KiB of C stack; measured, the heaviest (Python code re-entered through C, e.g.
  ``__repr__``) uses about 0.5 KiB, the JSON decoder 0.13 KiB.
- **Slow clients** (``GuardedH11Protocol``): a request's line and headers must arrive within
  ``header_timeout`` of the connection opening (or of the first byte of a request on a kept-alive
  connection); its body within ``body_timeout`` plus one second per ``body_min_rate`` bytes
  received, so a trickled body is dropped while a large upload at a reasonable rate is not (time
  during which the node itself is not reading does not count). Idle kept-alive connections close
  after ``idle_timeout`` (uvicorn's keep-alive timeout).
- **Connection limit** (``ConnectionBook``): at most ``max_connections`` at once, kept below the
  file-descriptor limit (``connection_limit``; ``prepare_process`` raises the soft limit to the
  hard one). At the limit a new connection evicts the connection that has waited longest without a
  request in progress (half-open, idle, or already answered and only draining its body), or else
  the one whose body is furthest behind ``body_min_rate``, so a crowd of slow connections cannot
  lock out a real request; when every connection is doing real work, the new one is closed. A
  burst of connections beyond the file limit can still fail an ``accept()`` for a moment (asyncio
  accepts a whole batch before any can be evicted, then backs off for a second).
- **Logs**: lines a client can trigger at will (accept failures with their tracebacks, invalid
  requests, refused peer requests, refused connections) are rate-limited per message
  (``RateLimitFilter``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import h11
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

log = logging.getLogger(__name__)

RECURSION_LIMIT = 10_000
"""Recursion limit of the node process (Python's default is 1,000; ``py_ecc`` sets 100,000)."""
HANDLER_STACK_BYTES = 64 * 1024 * 1024
"""Stack of every thread started by the node (event loop, request workers, schedulers): virtual
memory, only touched pages are resident."""
FD_RESERVE = 128
"""File descriptors kept free for the node itself (database, chain RPC, blob files, logs)."""

RATE_LIMITED_LOGGERS = ("asyncio", "uvicorn.error", "node.peers", __name__)
"""Loggers whose lines clients can trigger at will."""


@dataclass(frozen=True)
class HttpLimits:
    """Timeouts and the connection limit of the HTTP server (``NodeSettings.http_*``)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    body_min_rate: int = 16 * 1024
    idle_timeout: int = 5
    max_connections: int = 1000


# -- process ------------------------------------------------------------------------------------


def prepare_process() -> None:
    """Recursion limit, thread stack size and file limit for a serving node, and the objects
    built so far kept out of full garbage collections (process-wide: call once, after the app
    is built and before the node starts its threads)."""
    hold_recursion_limit()
    threading.stack_size(HANDLER_STACK_BYTES)
    raise_file_limit()
    install_log_rate_limits()
    freeze_startup_objects()


def freeze_startup_objects() -> int:
    """Move every object alive now (modules, the app, the runtime: about 200,000 once a node is
    built) out of the cyclic garbage collector's reach, and return how many were moved.

    They live as long as the process, yet each full collection walked them all: 100–170 ms
    pauses that landed on whichever request was running (one search in twenty at 10^6
    archives, docs/benchmarks.md, *Ninth pass*). Startup garbage is collected first; what
    startup leaves in cycles afterwards is never freed, a bounded cost paid once."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def hold_recursion_limit() -> None:
    """Set the recursion limit to ``RECURSION_LIMIT`` for good: ``py_ecc`` raises it to 100,000
    when it is first imported (through ``eth_account``), so it is imported here first."""
    with contextlib.suppress(ImportError):
        import py_ecc  # noqa: F401  (imported for its side effect, undone below)
    sys.setrecursionlimit(RECURSION_LIMIT)


def raise_file_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit where allowed; the soft limit after."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft == resource.RLIM_INFINITY or target <= soft:
        return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return int(soft)
    return int(target)


def connection_limit(requested: int, file_limit: int | None = None) -> int:
    """``requested``, lowered so open connections leave ``FD_RESERVE`` descriptors to the node."""
    if file_limit is None:
        file_limit = raise_file_limit()
    return max(1, min(requested, max(file_limit - FD_RESERVE, file_limit // 2)))


# -- logging ------------------------------------------------------------------------------------


class RateLimitFilter(logging.Filter):
    """Lets through at most ``burst`` records per message and ``window`` seconds; the first
    record after a window in which some were dropped says how many. Messages count as the same
    when their template's first line is (asyncio puts per-call details on the following lines)."""

    MAX_TEMPLATES = 1000

    def __init__(
        self, burst: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # [window start, passed, dropped]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg).split("\n", 1)[0])
        now = self.clock()
        with self._lock:
            state = self._seen.get(key)
            if state is None or now - state[0] >= self.window:
                dropped = int(state[2]) if state is not None else 0
                if state is None and len(self._seen) >= self.MAX_TEMPLATES:
                    self._seen.clear()
                self._seen[key] = [now, 1, 0]
                if dropped:
                    record.msg = (
                        f"{record.getMessage()} ({dropped} similar messages suppressed in the "
                        f"last {self.window:.0f} s)"
                    )
                    record.args = ()
                return True
            if state[1] < self.burst:
                state[1] += 1
                return True
            state[2] += 1
            return False


_RATE_LIMIT = RateLimitFilter()


def install_log_rate_limits() -> None:
    """Attach the shared ``RateLimitFilter`` to ``RATE_LIMITED_LOGGERS`` (idempotent)."""
    for name in RATE_LIMITED_LOGGERS:
        logging.getLogger(name).addFilter(_RATE_LIMIT)


# -- connections --------------------------------------------------------------------------------


class ConnectionBook:
    """The open connections of one server, and which of them wait without a request in progress
    (oldest first): those are evicted first when the limit is reached."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._open: set[GuardedH11Protocol] = set()
        self._idle: dict[GuardedH11Protocol, None] = {}  # insertion order: idle since

    def admit(self, connection: GuardedH11Protocol) -> bool:
        """Make room for ``connection`` if the limit is reached, by closing the connection that
        has waited longest without a request in progress, or else the one whose body is furthest
        behind the minimum rate; False when every open connection is doing real work."""
        if len(self._open) >= self.max_connections:
            victim = next(iter(self._idle), None) or self._slowest_body()
            if victim is None:
                log.warning("connection refused: %d connections open, all busy", len(self._open))
                return False
            log.warning(
                "connection limit (%d) reached: closed an idle or stalled connection",
                self.max_connections,
            )
            self.forget(victim)
            victim.transport.close()
        self._open.add(connection)
        self._idle[connection] = None
        return True

    def _slowest_body(self) -> GuardedH11Protocol | None:
        behind = [c for c in self._open if c.behind_on_body()]
        return min(behind, key=lambda c: c.waiting_since, default=None)

    def idle(self, connection: GuardedH11Protocol) -> None:
        """``connection`` waits for a request (idle from now, unless it already was)."""
        if connection in self._open and connection not in self._idle:
            self._idle[connection] = None

    def busy(self, connection: GuardedH11Protocol) -> None:
        """``connection`` has a request in progress: evicted only if its body stalls."""
        self._idle.pop(connection, None)

    def forget(self, connection: GuardedH11Protocol) -> None:
        self._open.discard(connection)
        self._idle.pop(connection, None)


class GuardedConfig(uvicorn.Config):
    """uvicorn's configuration plus the ``HttpLimits`` and the ``ConnectionBook`` of one server."""

    def __init__(self, app: Any, *, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(
            app,
            http=GuardedH11Protocol,
            # No WebSockets: an upgrade would hand the connection to another protocol object
            # behind the connection book's back; it is answered as plain HTTP instead.
            ws="none",
            timeout_keep_alive=limits.idle_timeout,
            **kwargs,
        )
        self.limits = limits
        self.book = ConnectionBook(limits.max_connections)


INVALID_HTTP_BODY: Final = json.dumps(
    {
        "code": "invalid_http",
        "message": "the request is not valid HTTP/1.1: its request line, a header, its framing "
        "or the size of its head",
    },
    separators=(",", ":"),
).encode("ascii")
"""The body of ``GuardedH11Protocol.send_400_response``."""


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines and the connection limit."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        guarded = cast(GuardedConfig, config)
        self.limits = guarded.limits
        self.book = guarded.book
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_for: Literal["headers", "body"] | None = None
        self._since = 0.0
        self._body_bytes = 0

    # uvicorn's hooks ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.book.admit(self):
            self.transport.close()
            return
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        self.book.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._waiting_for == "body" and not self._responded():
            self._body_bytes += len(data)
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 cannot parse (an invalid ``Content-Length``, a malformed request
        line or header, a head over ``h11_max_incomplete_event_size``) in the API's JSON error
        shape, ``400 invalid_http``, and close the connection (uvicorn answers in plain text)."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):  # an answer is under way
            self.transport.close()
            return
        body = INVALID_HTTP_BODY
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    # deadlines ---------------------------------------------------------------------------------

    def _responded(self) -> bool:
        return self.cycle is not None and self.cycle.response_complete

    @property
    def waiting_since(self) -> float:
        return self._since

    def behind_on_body(self) -> bool:
        """Whether the node has been waiting over a second for this request's body and the
        client is below ``body_min_rate`` (time the node itself does not read does not count)."""
        if self._waiting_for != "body" or self._responded():
            return False
        if self.flow.read_paused or self.cycle.waiting_for_100_continue:
            return False
        elapsed = self.loop.time() - self._since
        return elapsed >= 1.0 and self._body_bytes < self.limits.body_min_rate * elapsed

    def _follow(self) -> None:
        """Track the client's side of the HTTP state machine: which deadline applies now."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:  # no request in progress
            self.book.idle(self)
            if self.timeout_keep_alive_task is not None:
                self._stop_waiting()  # kept alive with no byte yet: uvicorn's idle timeout applies
            elif self._waiting_for != "headers":
                self._wait_for("headers", self.limits.header_timeout)
        elif state is h11.SEND_BODY:
            if self._responded():  # answered already: the rest of the body is only drained
                self.book.idle(self)
            else:
                self.book.busy(self)
            if self._waiting_for != "body":
                self._body_bytes = 0
                self._wait_for("body", self.limits.body_timeout)
        else:  # the request is in (or the connection is ending): the app has it
            self.book.busy(self)
            self._stop_waiting()

    def _wait_for(self, what: Literal["headers", "body"], seconds: float) -> None:
        self._stop_waiting()
        self._waiting_for = what
        self._since = self.loop.time()
        self._timer = self.loop.call_later(seconds, self._deadline_reached)

    def _stop_waiting(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting_for = None

    def _deadline_reached(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if self._waiting_for == "headers" and state is h11.IDLE:
            self._drop("request headers not received in time")
        elif self._waiting_for == "body" and state is h11.SEND_BODY:
            self._check_body_rate()

    def _check_body_rate(self) -> None:
        now = self.loop.time()
        cycle = self.cycle
        if not self._responded() and (self.flow.read_paused or cycle.waiting_for_100_continue):
            # The node is not reading (the app has not asked for more yet): not the client's fault.
            self._since, self._body_bytes = now, 0
            self._timer = self.loop.call_later(self.limits.body_timeout, self._deadline_reached)
            return
        allowed = self.limits.body_timeout + self._body_bytes / self.limits.body_min_rate
        remaining = self._since + allowed - now
        if remaining <= 0:
            self._drop("request body arriving too slowly")
        else:
            self._timer = self.loop.call_later(remaining, self._deadline_reached)

    def _drop(self, reason: str) -> None:
        log.debug("closing connection from %s: %s", self.client, reason)
        self._waiting_for = None
        self.transport.close()


# -- serving ------------------------------------------------------------------------------------


def make_server(
    app: Any,
    *,
    host: str,
    port: int,
    limits: HttpLimits,
    graceful_timeout: int = 30,
) -> uvicorn.Server:
    """A uvicorn server for ``app`` with ``GuardedH11Protocol`` (no access log: request lines can
    carry search terms such as patient ids)."""
    config = GuardedConfig(
        app,
        limits=limits,
        host=host,
        port=port,
        log_config=None,  # keep the process's logging set-up
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=graceful_timeout,
    )
    return uvicorn.Server(config)


def run_server(server: uvicorn.Server) -> None:
    """Run ``server`` in a thread with a ``HANDLER_STACK_BYTES`` stack until it stops (set
    ``server.should_exit`` to stop it, e.g. from a signal handler); re-raise what stopped it,
    including uvicorn's ``SystemExit`` when it cannot start."""
    hold_recursion_limit()
    if threading.stack_size() < HANDLER_STACK_BYTES:
        threading.stack_size(HANDLER_STACK_BYTES)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.run()
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=serve, name="http-server", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if failure:
        raise failure[0]
