"""The HTTP server: uvicorn with httptools, plus the limits on connections and request heads that
uvicorn lacks, answered in the API's error envelope and counted in the metrics.

What uvicorn 0.55 does by itself (uvicorn/protocols/http/httptools_impl.py, config.py) and what
this module adds:

- `timeout_keep_alive` closes a connection idle after a response: used as is
  (`EMBED_KEEP_ALIVE_TIMEOUT_SECONDS`). But the timer is armed only once a response is complete
  and cancelled by any byte received (`_unset_keepalive_if_required`), so a connection that never
  sends, or sends its request line and headers a byte at a time (slowloris), stays open forever:
  here a request's head must be complete within `header_timeout_seconds` of the connection's start
  or of the first byte after the previous request (408 in the envelope; a silent connection is
  just closed). Any byte counts, not only a request's start: llhttp skips the empty lines (CRLF)
  RFC 9112 2.2 lets a client send before a request line without calling `on_message_begin`, so a
  client sending CRLF every few seconds after its first request kept the connection forever.
- No bound on the size or number of header fields: httptools buffers a header value whole before
  its callback, so a 10 MB value was read into memory, and 100,000 fields became 100,000 tuples.
  Here the bytes of a head are counted as they arrive and the fields after each read: 431.
- `limit_concurrency` counts connections and tasks, but is checked only once a request's headers
  are complete (a slow or silent connection never reaches it) and answers a plain-text 503. Here
  `max_connections` is checked as a connection is accepted: past it the connection that has waited
  longest for a request is closed if it has waited too long to be a client's (one still sending
  its head for over SLOW_HEAD_SECONDS first, then an idle keep-alive one), so a flood of slow
  connections can neither exhaust the process nor lock out new clients; otherwise the newcomer is
  refused, at once, with 503 `too_many_connections` and Retry-After (evicting a head that is still
  arriving would trade one legitimate client for another in a burst). The kubelet's probes and
  Prometheus do not depend on this: they have their own listener (`MetricsListener`, on
  `EMBED_METRICS_PORT`), which serves nothing that holds a connection.
- Protocol errors (a malformed request line, a duplicate Content-Length) got uvicorn's plain-text
  400 and no metric; here the envelope (`malformed_request`, with the parser's reason), counted.
- No timeout on a request body: here the body must be complete within `body_timeout_seconds` of
  its headers.
- At shutdown uvicorn closes a connection still sending its head without an answer, and waits
  for one still sending its body until its graceful-shutdown timeout, then cancels the handler
  with an ERROR line. Here a head under way is answered 503 `shutting_down`, and a body under way
  is cut off with that answer when the drain ends (`cut_off`, called by service.__main__).

Whenever this layer stops reading a request's body (late, malformed, shutdown) the route is already
answering it (service.front reads the body): this layer wakes the route's `receive()` with the
scope flagged (BODY_REFUSED, the error) and the route answers it, counted, logged and with its
request id like any answer of that route.

Every refusal is counted in `inference_http_rejections_total{reason}`, open connections in
`inference_connections_open`, the connection limit in effect in `inference_max_connections`. A
normal request costs no timer: the head and body timers are armed only when a read ends with the
head (or the body) still incomplete.

Why a protocol subclass and not another server or a proxy in the pod (bench/NOTES.md, "Issue
#18"): granian 2.8.7, tried with the same abuse, answers malformed requests and oversized heads
with empty bodies the app never sees (no envelope, no metric), closes a slowloris connection only
after its 30 s header timeout and a silent one not at all, and has no connection limit; a proxy
sidecar answers in its own format too and adds a hop per request; and the drain on SIGTERM
(service.__main__) is built on uvicorn's Server. This layer costs ~4 us of CPU per request
(in-process A/B against uvicorn's own protocol), about 1 % of a request's CPU in the server.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from service import logs
from service.batcher import BatcherStopped
from service.errors import (
    ApiError,
    HeadersTooLargeError,
    MalformedRequestError,
    RequestTimeoutError,
    TooManyConnectionsError,
    error_body,
    kind_of,
)
from service.settings import Settings

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger(__name__)
access_log = logging.getLogger("service.access")

BODY_REFUSED = "gpu_inference.body_refused"
"""Scope key this layer sets to the error (an exception of service.errors' table) when it stops
reading a request's body (late, malformed, the server shutting down); service.front raises it."""
SLOW_HEAD_SECONDS = 1.0
"""A connection still sending its request head after this long may be closed to admit a new one
when the connection limit is reached: a client's head arrives in one write, within milliseconds.
A younger head is a client's in a burst: the newcomer is refused instead."""
ANSWER_MARGIN_SECONDS = 2
"""After the drain timeout the batcher answers what it could not run (503); uvicorn waits this much
longer for those answers to be written before it cancels handlers (a plain-text 500). Within
infra's SHUTDOWN_MARGIN_SECONDS, so the pod exits before SIGKILL."""
METRICS_PORT_CONNECTIONS = 64
"""Connections of the metrics listener (Prometheus and the kubelet's probes; the NetworkPolicy
admits nobody else): its requests are answered at once, so a handful is ever open."""
RESERVED_FILES = 128 + METRICS_PORT_CONNECTIONS
"""File descriptors kept for everything but the API port's connections (model files, logs, the
metrics listener and its connections)."""
SHUTTING_DOWN = "the server is shutting down: retry on another replica"


class ConnectionObserver(Protocol):
    """What the metrics need from this layer (service.metrics.Metrics implements it)."""

    def http_rejected(self, reason: str) -> None: ...

    def connections_changed(self, open_connections: int) -> None: ...


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_headers: int
    max_connections: int
    access_log: bool

    @classmethod
    def from_settings(cls, settings: Settings, max_connections: int) -> HttpLimits:
        return cls(
            header_timeout_s=settings.header_timeout_seconds,
            body_timeout_s=settings.body_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            max_connections=max_connections,
            access_log=settings.access_log,
        )


class _RefusedError(Exception):
    """Raised inside a parser callback: httptools stops and re-raises it as the context of an
    HttpParserCallbackError (its C callbacks cannot return a status)."""

    def __init__(self, error: ApiError, reason: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.reason = reason


class ConnectionGuard:
    """The limits shared by every connection of one server, and the connections that may be
    closed to admit a new one: those waiting for a request's head (`heads`) and those idle
    between requests (`idle`), each in the order they started waiting (dicts keep insertion
    order; a connection leaves one before entering the other); `heads` maps each to when its
    head started."""

    def __init__(self, limits: HttpLimits, observer: ConnectionObserver) -> None:
        self.limits = limits
        self.observer = observer
        self.heads: dict[LimitedHttpToolsProtocol, float] = {}
        self.idle: dict[LimitedHttpToolsProtocol, None] = {}

    def admit(self, connection: LimitedHttpToolsProtocol, open_connections: int) -> bool:
        """Whether `connection`, just accepted, may stay: within the limit, or once another has
        been closed to make room."""
        if open_connections <= self.limits.max_connections:
            return True
        victim = self._victim(connection.loop.time())
        if victim is None:
            return False
        self.forget(victim)
        self.observer.http_rejected("evicted")
        victim.close_quietly()
        return True

    def _victim(self, now: float) -> LimitedHttpToolsProtocol | None:
        """The connection to close for a newcomer: the oldest head if it has taken longer than
        any client's, else the oldest idle connection, else none (the newcomer is refused)."""
        oldest_head = next(iter(self.heads.items()), None)
        if oldest_head is not None and now - oldest_head[1] > SLOW_HEAD_SECONDS:
            return oldest_head[0]
        return next(iter(self.idle), None)

    def forget(self, connection: LimitedHttpToolsProtocol) -> None:
        self.heads.pop(connection, None)
        self.idle.pop(connection, None)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; one instance per connection.

    `bound(guard)` makes the subclass a server uses (uvicorn builds protocols from a class)."""

    guard: ClassVar[ConnectionGuard]

    @classmethod
    def bound(cls, guard: ConnectionGuard) -> type[LimitedHttpToolsProtocol]:
        return type("BoundLimitedHttpToolsProtocol", (cls,), {"guard": guard})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = self.guard.limits
        self._heads = self.guard.heads
        self._idle = self.guard.idle
        self._in_head = False
        """Between the first byte after the previous request (or the connection's start) and a
        request's headers."""
        self._head_started = 0.0
        self._head_bytes = 0
        """Bytes read since the head started: at most one read more than the head itself."""
        self._message_begun = False
        """The parser has started this head's request: `self.headers` are its own."""
        self._read_size = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_body = False
        """Between a request's headers and the end of its body (uvicorn's cycle.more_body stays
        set when the route answered before the body ended)."""
        self._body_timer: asyncio.TimerHandle | None = None
        self._stopped = False
        """Nothing more is read: the request being read was refused (the parser may be in its
        error state), and the connection closes once that is answered."""

    # --- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.guard.observer.connections_changed(len(self.connections))
        if not self.guard.admit(self, len(self.connections)):
            self.guard.observer.http_rejected("connection_limit")
            self._answer(
                TooManyConnectionsError(
                    f"this server's {self.limits.max_connections} connections are all busy; "
                    "retry shortly"
                ),
                "connection_limit",
                retry_after=True,
            )
            return
        self._start_head(self.loop.time())
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.guard.forget(self)
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self.guard.observer.connections_changed(len(self.connections))

    def data_received(self, data: bytes) -> None:
        """uvicorn's, with the parser's errors answered in the envelope and the head bounded."""
        if self._stopped:
            return
        self._unset_keepalive_if_required()
        self._read_size = len(data)
        if not (self._in_head or self._in_body):
            # Any byte after a request starts the next head, whether or not the parser calls it
            # a message yet (empty lines are not).
            self._start_head(self.loop.time())
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _RefusedError):
                self._refuse(refusal.error, refusal.reason)
            else:
                # httptools' reasons name the fault ("Duplicate Content-Length", "Invalid method
                # encountered") and quote no request bytes.
                self._refuse(MalformedRequestError(f"malformed HTTP request: {exc}"), "malformed")
            return
        if self.transport.is_closing():
            return
        if self._in_head:
            self._check_head()
        elif self._in_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_late)

    def shutdown(self) -> None:
        """uvicorn's server asks every connection to finish (SIGTERM): a head under way is
        answered 503 instead of cut off without a word; the rest as uvicorn does (idle ones
        close, busy ones close after their answer)."""
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self._in_head and self._head_bytes and not self.transport.is_closing():
            self._refuse(BatcherStopped(SHUTTING_DOWN), "shutdown")
            return
        super().shutdown()

    def cut_off(self) -> None:
        """The drain is over: a request still arriving is answered 503 `shutting_down` now,
        instead of holding the shutdown until uvicorn cancels its handler (an ERROR line)."""
        if self.transport.is_closing():
            return
        reading_body = self._in_body and self.cycle is not None and not self.cycle.response_complete
        if reading_body or (self._in_head and self._head_bytes):
            self._refuse(BatcherStopped(SHUTTING_DOWN), "shutdown")

    # --- httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a pipelined request, in the read that ended the one before
            self._start_head(self.loop.time())
            self._head_bytes = self._read_size
        self._message_begun = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:  # a former request's
            self._body_timer.cancel()
            self._body_timer = None
        if len(self.headers) > self.limits.max_headers:
            raise _RefusedError(self._too_many(), "too_many_headers")
        # The count of bytes read can include body bytes of the same read: measure exactly.
        if self._head_bytes > self.limits.max_header_bytes and (
            self._exact_head_bytes() > self.limits.max_header_bytes
        ):
            raise _RefusedError(self._too_large(), "headers_too_large")
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle when uvicorn armed its keep-alive timer (no pipelined request started).
        if not self._in_head and self.timeout_keep_alive_task is not None:
            self._idle[self] = None

    # --- limits ----------------------------------------------------------------------------------
    def _start_head(self, now: float) -> None:
        """A request's head starts: timed from now, and a candidate for eviction once slow."""
        self._in_head = True
        self._head_started = now
        self._head_bytes = 0
        self._message_begun = False
        self._idle.pop(self, None)
        self._heads[self] = now

    def _arm_head_timer(self) -> None:
        deadline = self._head_started + self.limits.header_timeout_s
        self._head_timer = self.loop.call_at(deadline, self._head_late)

    def _check_head(self) -> None:
        """After a read that left the head incomplete: within the limits so far, and timed."""
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse(self._too_large(), "headers_too_large")
        elif (
            self._message_begun
            and self.headers is not None
            and len(self.headers) > self.limits.max_headers
        ):
            self._refuse(self._too_many(), "too_many_headers")
        elif self._head_timer is None:
            self._arm_head_timer()

    def _too_large(self) -> HeadersTooLargeError:
        return HeadersTooLargeError(
            "the request line and headers are over this server's limit of "
            f"{self.limits.max_header_bytes} bytes"
        )

    def _too_many(self) -> HeadersTooLargeError:
        return HeadersTooLargeError(
            f"the request has more than this server's limit of {self.limits.max_headers} "
            "header fields"
        )

    def _exact_head_bytes(self) -> int:
        # "METHOD URL HTTP/1.1\r\n" + "name: value\r\n" per field + "\r\n"
        fields = sum(len(name) + len(value) + 4 for name, value in self.headers)
        return len(self.parser.get_method()) + len(self.url) + 11 + fields + 2

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self._head_bytes == 0:  # nothing sent: nothing to answer
            self.guard.observer.http_rejected("header_timeout")
            self.guard.forget(self)
            self.close_quietly()
            return
        self._refuse(
            RequestTimeoutError(
                "the request line and headers did not arrive within "
                f"{self.limits.header_timeout_s:g} s"
            ),
            "header_timeout",
        )

    def _body_late(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not self._in_body or self.transport.is_closing():
            return
        if cycle.response_complete:  # answered without reading it: nobody is waiting for it
            self.guard.observer.http_rejected("body_timeout")
            self.close_quietly()
            return
        self._refuse(
            RequestTimeoutError(
                f"the request body did not arrive within {self.limits.body_timeout_s:g} s"
            ),
            "body_timeout",
        )

    def close_quietly(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, error: Exception, reason: str) -> None:
        self.guard.observer.http_rejected(reason)
        self.guard.forget(self)
        self._stopped = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # whatever is answered, the connection closes after it
            if not self._in_body:
                # The refused bytes follow a request still being answered (pipelined): close
                # once that answer is out instead of writing into it.
                return
            if cycle.response_started:  # the body was bad, and an answer is under way
                self.close_quietly()
                return
            # The route is reading this body (service.front): wake its receive() with the
            # scope flagged, so the route answers the error in the envelope, counted on its
            # route, logged once, with the request's own id.
            cycle.scope[BODY_REFUSED] = error  # type: ignore[literal-required]
            cycle.message_event.set()
            return
        self._answer(error, reason)

    def _answer(self, error: Exception, reason: str, retry_after: bool = False) -> None:
        """Write the error in the envelope with `Connection: close`, and close. No route saw the
        request: its X-Request-ID, when its headers were read and it is valid, is echoed."""
        kind = kind_of(error)
        body = error_body(kind, str(error))
        headers = self.headers if self._message_begun and self.headers is not None else []
        rid = logs.request_id_of(headers)
        head = [STATUS_LINE[kind.status]]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
            b"x-request-id: " + rid.encode() + b"\r\n",
        ]
        if retry_after:
            head.append(b"retry-after: 1\r\n")
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()
        if self.limits.access_log:
            token = logs.request_id.set(rid)
            access_log.info("- - %d %s", kind.status, reason)
            logs.request_id.reset(token)


def cut_off(connections: Any) -> None:
    """At the drain's end: every request still arriving on `connections` (a uvicorn server's)
    is answered 503 `shutting_down` (LimitedHttpToolsProtocol.cut_off)."""
    for connection in list(connections):
        if isinstance(connection, LimitedHttpToolsProtocol):
            connection.cut_off()


def usable_connections(wanted: int) -> int:
    """`wanted`, or fewer if the process may not open that many files. The soft limit is raised
    toward the hard one first, as Go programs do at start since Go 1.19 (a process may start with
    a soft limit of 1024 and a far higher hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    usable = max(1, soft - RESERVED_FILES)
    log.warning(
        "max_connections %d lowered to %d: the process may open %d files (ulimit -n)",
        wanted,
        usable,
        soft,
    )
    return usable


def server_config(app: Any, runtime: Runtime) -> uvicorn.Config:
    """The uvicorn configuration `python -m service` (and the tests' live servers) run; the
    connection limit it settles on goes to /info and `inference_max_connections`."""
    settings = runtime.settings
    limits = HttpLimits.from_settings(settings, usable_connections(settings.max_connections))
    runtime.connection_limit_set(limits.max_connections)
    guard = ConnectionGuard(limits, runtime.metrics)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=LimitedHttpToolsProtocol.bound(guard),
        workers=1,
        log_config=None,  # ours (service.logs): every line carries the request id
        access_log=False,  # ours (service.front): with the request id and the duration
        # Nothing here reads the client address, and the NLB (layer 4) sets no X-Forwarded-For:
        # uvicorn's proxy-header middleware would only add a layer to every request.
        proxy_headers=False,
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        # Whole seconds (uvicorn's type), never None (wait forever): the drain, then the answers.
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_seconds) + ANSWER_MARGIN_SECONDS,
        lifespan="on",
    )


class _Rejections:
    """The metrics listener's observer: its refusals are counted with the API port's (by
    reason); `inference_connections_open` stays the API port's."""

    def __init__(self, observer: ConnectionObserver) -> None:
        self._observer = observer

    def http_rejected(self, reason: str) -> None:
        self._observer.http_rejected(reason)

    def connections_changed(self, open_connections: int) -> None:
        pass


class MetricsListener:
    """The second listener, on EMBED_METRICS_PORT: /metrics for Prometheus and the probes for
    the kubelet, on the event loop that serves the API (so /health still fails when the loop is
    stuck), with the same limits on heads and connections but apart from the API port's
    connections. However many API connections are busy (slow bodies, a flood of queued
    requests), the kubelet's probes get a connection here: the NetworkPolicy admits only
    Prometheus (and the node, which NetworkPolicy cannot refuse), and every request it serves is
    answered at once, so a connection here is never held by a request."""

    def __init__(self, server: asyncio.Server, state: ServerState) -> None:
        self._server = server
        self._state = state

    @classmethod
    async def start(
        cls, app: Any, settings: Settings, observer: ConnectionObserver
    ) -> MetricsListener:
        """Listen on settings.host:settings.metrics_port; `app` serves what is asked there."""
        limits = HttpLimits.from_settings(settings, METRICS_PORT_CONNECTIONS)
        guard = ConnectionGuard(limits, _Rejections(observer))
        config = uvicorn.Config(
            app,
            http=LimitedHttpToolsProtocol.bound(guard),
            ws="none",
            interface="asgi3",
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            timeout_keep_alive=settings.keep_alive_timeout_seconds,
        )
        config.load()
        state = ServerState()
        protocol = config.http_protocol_class

        def connection() -> asyncio.Protocol:
            return protocol(config=config, server_state=state, app_state={})  # type: ignore[call-arg]

        loop = asyncio.get_running_loop()
        server = await loop.create_server(connection, settings.host, settings.metrics_port)
        return cls(server, state)

    @property
    def port(self) -> int:
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else 0

    def close(self) -> None:
        """Stop listening and close every connection (its answers are already written)."""
        self._server.close()
        for connection in list(self._state.connections):
            connection.transport.close()
