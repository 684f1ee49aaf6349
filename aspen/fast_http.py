"""A lean HTTP/1.1 path for the KV routes, in front of aiohttp on the same port.

Why: aiohttp spends ~0.13 ms of CPU per request on this kind of machine (a Request and a
Response object, header multidicts, a task, the router and middleware), about a fifth of etcd's
whole CPU per operation in perf/kv_bench.py. The KV routes (`control_plane.KV_ROUTES`) carry
nearly every request a cluster gets and are simple: a POST with a JSON body. Served here they
cost ~0.04 ms (measured with the same client: see the issue notes).

How: every accepted connection starts with `FastHttpProtocol`. A request is served here when
it is exactly `POST <kv route> HTTP/1.1` with one Content-Length of at most
`MAX_REQUEST_BODY_SIZE` and no Transfer-Encoding, Expect or Upgrade header; its head is split
with bytes methods (C speed) and the route runs the same code as aiohttp's handler
(`control_plane.check_token`, `decode_json`, the route function), so answers, error messages and
counters are the same. Anything else -- another route or method, a chunked body, `Expect:
100-continue` (curl sends it for bodies over 1 KiB), HTTP/1.0, a malformed or oversized head --
hands the connection to aiohttp for good: aiohttp's RequestHandler (its documented low-level
`web.Server` protocol) takes the transport and every byte not yet answered, and gives its usual
answers (404, 405, 413, 400 ...). A connection's requests are answered one at a time, in order
(as aiohttp does), so a pipelined request never overtakes the one before it and a hand-over
waits for the answer in flight.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from http import HTTPStatus
from typing import cast

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from aspen.control_plane import (
    KV_ROUTES,
    MAX_REQUEST_BODY_SIZE,
    ApiError,
    KvRoute,
    KvService,
    check_token,
    decode_json,
)

log = logging.getLogger(__name__)

# A head (request line + headers) longer than this is left to aiohttp, whose own limits
# (8190 bytes per line or field) then answer it.
MAX_REQUEST_HEAD_SIZE = 16 * 1024
# While a request is being answered, reading pauses once this much of the next ones is buffered.
MAX_BUFFERED_WHILE_BUSY = MAX_REQUEST_BODY_SIZE + MAX_REQUEST_HEAD_SIZE
KEEPALIVE_TIMEOUT_S = 75.0  # an idle keep-alive connection is closed after this (aiohttp's default)
IDLE_SWEEP_INTERVAL_S = 5.0  # one timer checks every connection's idleness this often
STOP_GRACE_S = 5.0  # on stop, answers in flight get this long before their connections close

# aiohttp's own bound on one request or header line (max_line_size, max_field_size): a longer
# line goes to aiohttp, which refuses it.
MAX_HEADER_LINE_SIZE = 8190

_HEAD_END = b"\r\n\r\n"
_JSON = "application/json"
# Header lines aiohttp's strict parser accepts: a token name (RFC 9110 tchar), a colon, a value
# of visible characters, spaces and tabs. Anything else (control characters, NUL, obs-fold,
# whitespace before the colon) goes to aiohttp, which refuses it.
_HEADER_LINES = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")


class _HandOver(Exception):
    """This request is for aiohttp (raised by the framer, never escapes the protocol)."""


class FastHttpServer:
    """Listens on the control plane's port; serves the KV routes, hands the rest to aiohttp."""

    def __init__(self, aiohttp_server: web.Server, kv: KvService | None, registry: CollectorRegistry) -> None:
        self._aiohttp_server = aiohttp_server
        self.kv = kv
        # Routes by their exact request-target bytes; empty when the node has no cluster.
        self.routes: dict[bytes, tuple[str, type, KvRoute]] = {
            path.encode(): (path, typ, route) for path, (typ, route) in KV_ROUTES.items()} if kv else {}
        self.connections: set[FastHttpProtocol] = set()
        self.handovers = Counter("aspen_http_handovers", "connections handed from the KV fast path to aiohttp",
                                 registry=registry)
        self._listener: asyncio.AbstractServer | None = None
        self.stopping = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._date_second = -1
        self._date_line = b""

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (`port` may be 0)."""
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(lambda: FastHttpProtocol(self), host, port, reuse_address=True)
        self._sweeper = loop.call_later(IDLE_SWEEP_INTERVAL_S, self._sweep)
        return int(self._listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and serving: idle connections close now, a connection answering a
        request closes once that answer is written (bounded by STOP_GRACE_S); no further request
        is started. Connections already handed over are aiohttp's to close (AppRunner.cleanup)."""
        self.stopping = True
        if self._listener is not None:
            self._listener.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            if conn.task is None:
                conn.close()
        busy = [c.task for c in self.connections if c.task is not None]
        if busy:
            await asyncio.wait(busy, timeout=STOP_GRACE_S)
        for conn in list(self.connections):
            conn.close()

    def aiohttp_protocol(self) -> asyncio.Protocol:
        """A new aiohttp RequestHandler (web.Server is its protocol factory)."""
        return self._aiohttp_server()

    def date_line(self) -> bytes:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date_line = b"Date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._date_line

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        idle_since = loop.time() - KEEPALIVE_TIMEOUT_S
        for conn in list(self.connections):
            if conn.task is None and conn.last_active < idle_since:
                conn.close()
        self._sweeper = loop.call_later(IDLE_SWEEP_INTERVAL_S, self._sweep)


_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


class FastHttpProtocol(asyncio.Protocol):
    """One connection, until (if ever) it is handed to aiohttp."""

    def __init__(self, server: FastHttpServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self.task: asyncio.Task[None] | None = None  # the request being answered
        self.last_active = self._loop.time()
        self._paused = False  # reading paused: too much input waits behind an answer
        self._write_paused = False  # the transport's write buffer is full: the client reads slowly
        self._eof = False
        self._close_after = False  # the request being answered said `Connection: close`
        # A parsed head whose body is still arriving: (total bytes, request) -- not parsed twice.
        self._pending: tuple[int, tuple[str, type, KvRoute, str, str, int]] | None = None
        self._gone = False  # handed over or lost: this object no longer owns the transport

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        self._server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self.last_active = self._loop.time()
        if self.task is None and not self._write_paused:
            self._next_request()
        elif len(self._buf) > MAX_BUFFERED_WHILE_BUSY and not self._paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._paused = True

    def pause_writing(self) -> None:
        # The client does not read its answers: answer nothing more until it does (else one
        # pipelining client could make this process buffer answers without bound).
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.task is None:
            self._next_request()

    def eof_received(self) -> bool:
        self._eof = True
        # Keep the transport open for the answer in flight; with nothing in flight, close.
        return self.task is not None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._gone = True
        self._server.connections.discard(self)

    # ------------------------------------------------------------------ requests

    def close(self) -> None:
        if self._transport is not None and not self._gone:
            self._transport.close()

    def _next_request(self) -> None:
        """Serve the next complete request in the buffer, if any (one at a time)."""
        if self._gone or self._write_paused:
            return
        if self._server.stopping:
            self.close()
            return
        hand_over = False
        try:
            request = self._frame()
        except _HandOver:
            hand_over = True
        if hand_over:  # outside the except block: aiohttp's errors are not "during" ours
            self._hand_over()
            return
        if request is None:
            if self._paused and self._transport is not None:
                self._transport.resume_reading()
                self._paused = False
            if self._eof:
                self.close()
            return
        self.task = self._loop.create_task(self._serve(*request))

    def _frame(self) -> tuple[str, type, KvRoute, str, str, bytes] | None:
        """The next request if it is whole and ours; None if incomplete; _HandOver otherwise."""
        buf = self._buf
        if self._pending is None:
            self._pending = self._parse_head(buf)
            if self._pending is None:
                return None
        total, (path, typ, handler, content_type, authorization, body_start) = self._pending
        if len(buf) < total:
            return None
        self._pending = None
        body = bytes(buf[body_start:total])
        del buf[:total]
        return path, typ, handler, content_type, authorization, body

    def _parse_head(self, buf: bytearray) -> tuple[int, tuple[str, type, KvRoute, str, str, int]] | None:
        if not buf:
            return None
        end = buf.find(_HEAD_END, 0, MAX_REQUEST_HEAD_SIZE)
        if end < 0:
            # Incomplete -- unless it never can be: too long, or lines ended by a bare LF or CR
            # (the last byte may be the CR of a CRLF still on its way).
            if len(buf) >= MAX_REQUEST_HEAD_SIZE or buf.count(b"\n") != buf.count(b"\r\n") or \
                    buf.count(b"\r", 0, len(buf) - 1) != buf.count(b"\r\n"):
                raise _HandOver
            return None
        # A bare CR or LF fails below: the request line then no longer matches exactly, or a
        # header line fails _HEADER_LINES (values exclude CR and LF).
        request_line, _, header_block = bytes(buf[:end]).partition(b"\r\n")
        method, _, rest = request_line.partition(b" ")
        target, _, version = rest.partition(b" ")
        route = self._server.routes.get(target)
        if method != b"POST" or route is None or version != b"HTTP/1.1":
            raise _HandOver
        if _HEADER_LINES.fullmatch(header_block + b"\r\n") is None:
            raise _HandOver  # a header aiohttp would refuse: let it
        lines = header_block.split(b"\r\n")
        if end > MAX_HEADER_LINE_SIZE and max(map(len, lines)) > MAX_HEADER_LINE_SIZE:
            raise _HandOver
        length = -1
        content_type = ""
        authorization = ""
        seen_type = seen_auth = seen_host = False
        self._close_after = False
        for line in lines:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                value = value.strip(b" \t")
                if length >= 0 or not value.isdigit():
                    raise _HandOver
                length = int(value)
            elif name == b"content-type" and not seen_type:
                seen_type = True
                content_type = value.partition(b";")[0].strip(b" \t").lower().decode("latin-1")
            elif name == b"authorization" and not seen_auth:
                seen_auth = True
                authorization = value.strip(b" \t").decode("utf-8", "surrogateescape")  # as aiohttp
            elif name == b"host":
                if seen_host:
                    raise _HandOver  # two Hosts: aiohttp refuses the request
                seen_host = True
            elif name == b"connection":
                if b"close" in [token.strip(b" \t") for token in value.lower().split(b",")]:
                    self._close_after = True
            elif name in (b"transfer-encoding", b"expect", b"upgrade"):
                raise _HandOver
        if length < 0 or length > MAX_REQUEST_BODY_SIZE or not seen_host or content_type != _JSON:
            # No length (aiohttp reads no body, or refuses), too large (413 there), no Host
            # (HTTP/1.1 requires one: 400 there), not JSON (415 there, in aiohttp's words).
            raise _HandOver
        path, typ, handler = route
        body_start = end + len(_HEAD_END)
        return body_start + length, (path, typ, handler, content_type, authorization, body_start)

    async def _serve(self, path: str, typ: type, handler: KvRoute, content_type: str, authorization: str,
                     body: bytes) -> None:
        kv = self._server.kv
        assert kv is not None
        try:
            check_token(kv.metrics, kv.token, "POST", authorization)
            payload = msgspec.json.encode(await handler(kv.api, kv.metrics, decode_json(kv.metrics, content_type,
                                                                                        body, typ)))
            status = 200
        except ApiError as exc:
            status, payload = exc.status, msgspec.json.encode({"error": exc.message})
        except Exception as exc:  # a bug: answer it like any error instead of dropping the connection
            log.exception("KV route %s failed", path)
            status, payload = 500, msgspec.json.encode({"error": f"internal error: {exc!r}"})
        kv.metrics.count_request(path, status)
        self._respond(status, payload)
        self.task = None
        if self._close_after:
            self.close()
            return
        self._next_request()  # (it closes the connection instead when the server is stopping)

    def _respond(self, status: int, payload: bytes) -> None:
        transport = self._transport
        if transport is None or self._gone or transport.is_closing():
            return
        self.last_active = self._loop.time()
        transport.write(b"".join((
            _status_line(status),
            b"Content-Type: application/json\r\nContent-Length: ",
            str(len(payload)).encode(), b"\r\n",
            self._server.date_line(),
            b"Connection: close\r\n\r\n" if self._close_after else b"\r\n",
            payload)))

    def _hand_over(self) -> None:
        """Give the transport, and every byte not yet answered, to aiohttp for good."""
        transport = self._transport
        assert transport is not None and self.task is None
        self._gone = True
        self._server.connections.discard(self)
        self._server.handovers.inc()
        handler = self._server.aiohttp_protocol()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._paused:
            transport.resume_reading()
        data, self._buf = bytes(self._buf), bytearray()
        if data:
            handler.data_received(data)
        if self._eof:
            handler.eof_received()
