"""A slow reader makes the sender wait (MAX_STREAM_DATA follows what was read); nothing is reset.

Two endpoints in one process over loopback. Before flow control followed the reader, the
receiver buffered whatever arrived and reset the stream at MAX_STREAM_RECEIVE_BUFFER_SIZE.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from aspen.identity import SecretKey
from aspen.quic import Endpoint
from aspen.quic.endpoint import DEFAULT_STREAM_WINDOW_SIZE
from aspen.quic.peer import MAX_STREAM_RECEIVE_BUFFER_SIZE, QuicPeerConnection, QuicPeerStream
from aspen.units import MiB
from aspen.wire import MAX_RPC_MESSAGE_SIZE

ALPN = "test-slow-reader/1"
FRAMES = 3  # 30 MiB: more than MAX_STREAM_RECEIVE_BUFFER_SIZE (~20 MiB)
DATAGRAM_SIZE = 60_000  # loopback carries it; keeps the test fast
PAUSE_S = 0.5
TIMEOUT_S = 30.0


class SlowReader:
    alpn = ALPN

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.held_while_paused = 0
        self.error: BaseException | None = None
        self.done = asyncio.Event()

    async def handle_connection(self, conn: QuicPeerConnection) -> None:
        stream = await conn.accept_stream()
        assert isinstance(stream, QuicPeerStream)
        await asyncio.sleep(PAUSE_S)  # the application is busy; data keeps arriving
        self.held_while_paused = stream._frames_bytes + stream._decoder.buffered_bytes
        try:
            while (body := await stream.read_frame()) is not None:
                self.frames.append(body)
                await asyncio.sleep(0.05)  # and it stays slow
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            self.error = exc
        self.done.set()
        await conn.wait_closed()


def test_a_slow_reader_gets_every_frame_and_the_sender_waits() -> None:
    assert FRAMES * MAX_RPC_MESSAGE_SIZE > MAX_STREAM_RECEIVE_BUFFER_SIZE

    async def main() -> None:
        reader = SlowReader()
        server = Endpoint(SecretKey.generate(), handlers={ALPN: reader}, registry=CollectorRegistry(),
                          bind_host="127.0.0.1", max_datagram_size_bytes=DATAGRAM_SIZE, pmtu_probe=False)
        client = Endpoint(SecretKey.generate(), registry=CollectorRegistry(), bind_host="127.0.0.1",
                          max_datagram_size_bytes=DATAGRAM_SIZE, pmtu_probe=False)
        await server.start()
        await client.start()
        try:
            conn = await client.connect(server.endpoint_addr("127.0.0.1"), ALPN)
            stream = await conn.open_stream(unidirectional=True)
            bodies = [bytes([i]) * MAX_RPC_MESSAGE_SIZE for i in range(FRAMES)]
            for i, body in enumerate(bodies):
                await stream.write_frame(body, end_stream=i == FRAMES - 1, timeout_ms=int(TIMEOUT_S * 1000))
            await asyncio.wait_for(reader.done.wait(), TIMEOUT_S)
            assert reader.error is None
            assert reader.frames == bodies
            # While the reader slept, the sender stopped at the window instead of overrunning it.
            assert 0 < reader.held_while_paused <= DEFAULT_STREAM_WINDOW_SIZE
            rejected = server.metrics.frames_rejected.labels(reason="buffer_full")._value.get()
            assert rejected == 0
        finally:
            await client.stop()
            await server.stop()

    asyncio.run(main())


def test_window_must_hold_a_largest_frame_and_fit_the_receive_bound() -> None:
    import pytest

    from aspen.errors import ConfigError
    for window in (MAX_RPC_MESSAGE_SIZE, MAX_STREAM_RECEIVE_BUFFER_SIZE + 1):
        with pytest.raises(ConfigError):
            Endpoint(SecretKey.generate(), registry=CollectorRegistry(), stream_window_size_bytes=window)
    Endpoint(SecretKey.generate(), registry=CollectorRegistry(), stream_window_size_bytes=12 * MiB)
