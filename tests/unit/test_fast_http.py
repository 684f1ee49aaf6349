"""The KV fast path in front of aiohttp (aspen.fast_http): on the wire, over raw sockets.

What a client relies on: the same answers as aiohttp gives (status and body, byte for byte),
answers in request order on a pipelined connection, any request the fast path does not serve
(another route, chunked body, Expect, HTTP/1.0, bad framing, oversized) still answered by
aiohttp on the same connection, idle connections closed, and answers in flight delivered when
the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from aspen import fast_http
from aspen.control_plane import add_routes
from aspen.raft import kv
from tests.unit.test_control_plane import FakeCluster, front_server

WAIT_S = 5.0  # bound on every read from a socket


def request(path: str, body: bytes, *, method: str = "POST", extra: bytes = b"",
            content_type: bytes | None = b"application/json", version: bytes = b"HTTP/1.1") -> bytes:
    head = b"%s %s %s\r\nHost: test\r\n" % (method.encode(), path.encode(), version)
    if content_type is not None:
        head += b"Content-Type: " + content_type + b"\r\n"
    return head + b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


def json_body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


SET_A = json_body({"command": {"Set": {"key": "a", "value": "1"}}})
READ_A = json_body({"key": "a"})


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader) -> Response:
    """One HTTP/1.1 response with a Content-Length body (what both servers send here)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), WAIT_S)
    return Response(status, headers, body)


Check = Callable[[int, FakeCluster, CollectorRegistry], Awaitable[None]]


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy"})


def serve(check: Check, *, fast: bool = True, token: str | None = None,
          cluster: FakeCluster | None = None) -> None:
    """Run `check(port, cluster, registry)` against the node's front (or aiohttp alone)."""
    async def main() -> None:
        app = web.Application(client_max_size=fast_http.MAX_REQUEST_BODY_SIZE)
        app.router.add_get("/health", health)
        fake = cluster or FakeCluster()
        registry = CollectorRegistry()
        kv_service = add_routes(app, fake, registry, token)
        if fast:
            async with front_server(app, kv_service, registry) as (front, port):
                FRONTS[port] = front
                try:
                    await check(port, fake, registry)
                finally:
                    del FRONTS[port]
            return
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            await check(int(runner.addresses[0][1]), fake, registry)
        finally:
            await runner.cleanup()

    asyncio.run(main())


FRONTS: dict[int, fast_http.FastHttpServer] = {}  # port -> the front serving it (for inspection)


def front_conns(port: int) -> list[fast_http.FastHttpProtocol]:
    return list(FRONTS[port].connections)


@contextlib.asynccontextmanager
async def connection(port: int, **kwargs: Any) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A client connection to the server under test, closed afterwards."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, **kwargs)
    try:
        yield reader, writer
    finally:
        writer.close()


async def exchange(port: int, data: bytes, count: int) -> list[Response]:
    async with connection(port) as (reader, writer):
        writer.write(data)
        return [await read_response(reader) for _ in range(count)]


def handovers(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("aspen_http_handovers_total") or 0.0


# Each case is one raw request; the fast front must answer exactly as aiohttp alone does.
SAME_AS_AIOHTTP = [
    request("/write", SET_A),
    request("/write", json_body({"command": {"SetMulti": {"pairs": [["a", "1"], ["b", "2"]]}}})),
    request("/write", json_body({"command": {"CompareAndSwap": {"key": "a", "expected": "0", "new": "2"}}})),
    request("/read", json_body({"key": "missing"})),
    request("/read", json_body({"key": "a", "consistency": "stale"})),
    request("/scan", json_body({"prefix": "", "limit": 10})),
    request("/write", SET_A, content_type=None),
    request("/write", SET_A, content_type=b"text/plain"),
    request("/write", SET_A, content_type=b"Application/JSON; charset=utf-8"),
    request("/write", SET_A, content_type=b""),
    request("/write", SET_A, content_type=b"textplain"),
    request("/write", b'{"command": '),
    request("/write", json_body({"command": {"Set": {"key": 5, "value": "b"}}})),
    request("/write", json_body({"command": {}})),
    request("/read", b"[]"),
    request("/write", json_body({"command": {"Set": {"key": "k", "value": "x" * (kv.MAX_VALUE_SIZE + 1)}}})),
]


@pytest.mark.parametrize("raw", SAME_AS_AIOHTTP, ids=range(len(SAME_AS_AIOHTTP)))
def test_kv_routes_answer_exactly_as_aiohttp_does(raw: bytes) -> None:
    answers: dict[bool, tuple[int, bytes, str]] = {}
    for fast in (False, True):
        async def check(port: int, fake: FakeCluster, registry: CollectorRegistry, fast: bool = fast) -> None:
            await exchange(port, request("/write", SET_A), 1)  # the same state to start from
            (response,) = await exchange(port, raw, 1)
            answers[fast] = (response.status, response.body, response.headers["content-type"])
        serve(check, fast=fast)
    assert answers[True] == answers[False]


class DelayedWrites(FakeCluster):
    """Writes take a while, reads none: a read pipelined behind a write could overtake it."""

    async def write(self, command: kv.KvCommand) -> kv.KvResult:
        await asyncio.sleep(0.05)
        return await super().write(command)


def test_pipelined_requests_are_answered_in_order_across_a_hand_over() -> None:
    async def check(port: int, fake: FakeCluster, registry: CollectorRegistry) -> None:
        burst = (request("/write", SET_A) + request("/read", READ_A) + b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
                 + request("/write", json_body({"command": {"Set": {"key": "a", "value": "2"}}}))
                 + request("/read", READ_A))
        answers = await exchange(port, burst, 5)
        assert [a.status for a in answers] == [200] * 5
        assert answers[1].json() == {"key": "a", "value": "1"}
        assert answers[2].json() == {"status": "healthy"}
        assert answers[4].json() == {"key": "a", "value": "2"}
        assert handovers(registry) == 1  # aiohttp kept the connection from /health on
        assert registry.get_sample_value("aspen_http_requests_total", {"route": "/read", "status": "200"}) == 2
    serve(check, cluster=DelayedWrites())


def test_a_request_sent_while_another_is_in_flight_waits_its_turn() -> None:
    async def check(port: int, fake: FakeCluster, registry: CollectorRegistry) -> None:
        async with connection(port) as (reader, writer):
            writer.write(request("/write", SET_A))
            await writer.drain()
            await asyncio.sleep(0.01)  # the write is in flight (it takes 50 ms)
            writer.write(request("/read", READ_A))
            first, second = await read_response(reader), await read_response(reader)
            assert first.json() == {"command": {"Set": {"key": "a", "value": "1"}}}
            assert second.json() == {"key": "a", "value": "1"}
    serve(check, cluster=DelayedWrites())


def test_reading_pauses_while_busy_and_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client pipelining more than the buffer bound behind a slow answer is paused, not
    dropped: every request is answered, including one aiohttp serves after the hand-over."""
    monkeypatch.setattr(fast_http, "MAX_BUFFERED_WHILE_BUSY", 64)

    async def check(port: int, fake: FakeCluster, registry: CollectorRegistry) -> None:
        async with connection(port) as (reader, writer):
            writer.write(request("/write", SET_A))
            await writer.drain()
            await asyncio.sleep(0.01)
            health = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
            writer.write(request("/read", READ_A) * 3 + health)  # > 64 bytes while the write is in flight
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(request("/read", READ_A) + health)  # arrives for aiohttp, after the hand-over
            answers = [await read_response(reader) for _ in range(7)]
            assert [a.status for a in answers] == [200] * 7
            assert answers[4].json() == answers[6].json() == {"status": "healthy"}
            assert answers[5].json() == {"key": "a", "value": "1"}
    serve(check, cluster=DelayedWrites())


def test_a_request_arriving_byte_by_byte_is_answered_once() -> None:
    async def check(port: int, fake: FakeCluster, registry: CollectorRegistry) -> None:
        async with connection(port) as (reader, writer):
            for byte in request("/write", SET_A):
                writer.write(bytes([byte]))
                await writer.drain()
            response = await read_response(reader)
            assert response.status == 200 and fake.calls == 1
            assert handovers(registry) == 0
    serve(check)


@pytest.mark.parametrize(("raw", "status"), [
    # curl sends Expect: 100-continue for bodies over 1 KiB: aiohttp answers 100, then 200.
    (request("/write", SET_A, extra=b"Expect: 100-continue\r\n"), 100),
    (b"POST /write HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"%x\r\n" % len(SET_A) + SET_A + b"\r\n0\r\n\r\n", 200),
    (request("/write", SET_A, version=b"HTTP/1.0"), 200),
    (request("/write?x=1", SET_A), 200),
    (request("/write", SET_A, method="PUT"), 405),
    (request("/nope", SET_A), 404),
    (request("/write", SET_A).replace(b"Content-Length: ", b"Content-Length: +"), 400),
    (request("/write", SET_A).replace(b"Host: test\r\n", b""), 400),
    (request("/write", SET_A).replace(b"Host: test\r\n", b"Host: test\r\n folded\r\n"), 400),
    (request("/write", SET_A, extra=b"X-Big: " + b"y" * fast_http.MAX_REQUEST_HEAD_SIZE + b"\r\n"), 400),
    (request("/write", SET_A).replace(b"Host: test\r\n", b"Host: test\nX-A: 1\r\n"), 400),  # bare LF
    (request("/write", SET_A).replace(b"Host: test\r\n", b"Host: test\rX-A: 1\r\n"), 400),  # bare CR
    (b"GET /health HTTP/1.1\nHost: t\n\n", 400),  # bare LF only: the head never "ends" in CRLFCRLF
    (request("/write", SET_A, extra=b"X(A): 1\r\n"), 400),  # not a token
    (request("/write", SET_A, extra=b"X-A: a\x00b\r\n"), 400),  # NUL in a value
    (request("/write", SET_A, extra=b"Transfer-Encoding\x0b: chunked\r\n"), 400),  # smuggling-shaped
    (request("/write", SET_A, extra=b"Host: other\r\n"), 400),  # two Hosts
    (request("/write", SET_A, extra=b"X-Long: " + b"y" * (fast_http.MAX_HEADER_LINE_SIZE + 10) + b"\r\n"), 400),
    (request("/write", SET_A, content_type=b"text/plain"), 415),  # refused in aiohttp's words
])
def test_requests_the_fast_path_does_not_serve_are_answered_by_aiohttp(raw: bytes, status: int) -> None:
    async def check(port: int, fake: FakeCluster, registry: CollectorRegistry) -> None:
        (response,) = await exchange(port, raw, 1)
        assert response.status == status
        assert handovers(registry) == 1
    serve(check)


def test_an_oversized_body_gets_413_and_reaches_nothing() -> None:
    async def check(port: int, fake: FakeCluster, registry: CollectorRegistry) -> None:
        head = (b"POST /write HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (fast_http.MAX_REQUEST_BODY_SIZE + 1))
        async with connection(port) as (reader, writer):
            writer.write(head + b"x" * (fast_http.MAX_REQUEST_BODY_SIZE + 1))
            response = await read_response(reader)
            assert response.status == 413 and "error" in response.json()
            assert fake.calls == 0 and handovers(registry) == 1
            assert registry.get_sample_value("aspen_http_bad_requests_total", {"reason": "too_large"}) == 1
    serve(check)


def test_bearer_token_is_checked_on_the_fast_path() -> None:
    async def check(port: int, fake: FakeCluster, registry: CollectorRegistry) -> None:
        (no, wrong, right) = await exchange(port, request("/write", SET_A)
                                            + request("/write", SET_A, extra=b"Authorization: Bearer nope\r\n")
                                            + request("/write", SET_A, extra=b"Authorization: Bearer s3cret\r\n"), 3)
        assert (no.status, wrong.status, right.status) == (401, 401, 200)
        assert fake.calls == 1 and handovers(registry) == 0
    serve(check, token="s3cret")


def test_a_client_that_does_not_read_its_answers_is_not_answered_without_bound() -> None:
    """Pipelined reads of a 100 KB value that the client does not read: the server stops
    answering once the socket's send buffer is full (write back-pressure), then answers
    everything once the client reads."""
    big = json_body({"command": {"Set": {"key": "big", "value": "x" * 100_000}}})
    count = 200  # 20 MB of answers if nothing held them back

    async def check(port: int, fake: FakeCluster, registry: CollectorRegistry) -> None:
        (stored,) = await exchange(port, request("/write", big), 1)
        assert stored.status == 200
        async with connection(port, limit=2**20) as (reader, writer):
            writer.write(request("/read", json_body({"key": "big"})) * count)
            await writer.drain()
            await asyncio.sleep(0.3)  # the server answers what fits, then waits
            ours = [c for c in front_conns(port)]
            assert ours and all(c._transport.get_write_buffer_size() < 2 * 2**20 for c in ours)
            answers = [await read_response(reader) for _ in range(count)]
            assert all(a.status == 200 and len(a.body) > 100_000 for a in answers)
    serve(check)


def test_connection_close_is_honoured() -> None:
    async def check(port: int, fake: FakeCluster, registry: CollectorRegistry) -> None:
        async with connection(port) as (reader, writer):
            writer.write(request("/write", SET_A, extra=b"Connection: close\r\n"))
            response = await read_response(reader)
            assert response.status == 200 and response.headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), WAIT_S) == b""  # the server closed
    serve(check)


def test_only_a_close_token_closes_and_any_connection_header_may_carry_it() -> None:
    async def check(port: int, fake: FakeCluster, registry: CollectorRegistry) -> None:
        async with connection(port) as (reader, writer):
            writer.write(request("/write", SET_A, extra=b"Connection: x-closed, keep-alive\r\n")
                         + request("/read", READ_A, extra=b"Connection: keep-alive\r\nConnection: Close\r\n"))
            first, second = await read_response(reader), await read_response(reader)
            assert "connection" not in first.headers and second.headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), WAIT_S) == b""
    serve(check)


def test_a_non_ascii_bearer_token_is_compared_as_utf8_as_aiohttp_does() -> None:
    for fast in (False, True):
        async def check(port: int, fake: FakeCluster, registry: CollectorRegistry) -> None:
            auth = "Authorization: Bearer é\r\n".encode()
            (right, wrong) = await exchange(port, request("/write", SET_A, extra=auth)
                                            + request("/write", SET_A, extra=b"Authorization: Bearer \xe9\r\n"), 2)
            assert (right.status, wrong.status) == (200, 401)
        serve(check, fast=fast, token="é")


def test_idle_connections_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_http, "KEEPALIVE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(fast_http, "IDLE_SWEEP_INTERVAL_S", 0.05)

    async def check(port: int, fake: FakeCluster, registry: CollectorRegistry) -> None:
        async with connection(port) as (reader, writer):
            writer.write(request("/write", SET_A))
            assert (await read_response(reader)).status == 200
            assert await asyncio.wait_for(reader.read(), WAIT_S) == b""  # closed once idle
    serve(check)


class SlowCluster(FakeCluster):
    """Writes wait until released: an answer stays in flight as long as a test needs."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started = 0

    async def write(self, command: kv.KvCommand) -> kv.KvResult:
        self.started += 1
        await self.release.wait()
        return await super().write(command)


def test_stop_answers_what_is_in_flight_and_starts_nothing_new() -> None:
    """stop(): an idle keep-alive connection closes at once; a connection with an answer in
    flight gets it, then closes; a request pipelined behind that answer is not started."""
    cluster = SlowCluster()

    async def main() -> None:
        app = web.Application()
        registry = CollectorRegistry()
        kv_service = add_routes(app, cluster, registry, None)
        async with front_server(app, kv_service, registry) as (front, port):
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
            idle_writer.write(request("/read", READ_A))
            assert (await read_response(idle_reader)).status == 404  # now idle, kept alive
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request("/write", SET_A) + request("/write", json_body(
                {"command": {"Set": {"key": "late", "value": "1"}}})))
            for _ in range(int(WAIT_S / 0.01)):
                if cluster.started:
                    break
                await asyncio.sleep(0.01)
            stopping = asyncio.create_task(front.stop())
            assert await asyncio.wait_for(idle_reader.read(), WAIT_S) == b""  # closed at once
            assert not stopping.done()  # waiting for the write in flight
            cluster.release.set()
            assert (await read_response(reader)).status == 200
            assert await asyncio.wait_for(reader.read(), WAIT_S) == b""  # the second never started
            await asyncio.wait_for(stopping, WAIT_S)
            assert cluster.started == 1 and cluster.sm.read(kv.Get("late")) == kv.GetResult(None)
            writer.close()
            idle_writer.close()

    asyncio.run(main())
