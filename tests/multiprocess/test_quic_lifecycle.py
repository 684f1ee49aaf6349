"""Endpoint lifecycle and the ping helper, over loopback (in-process endpoints + a testserver)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from aspen.addr import EndpointAddr, SocketAddr
from aspen.errors import ConfigError, UsageError
from aspen.identity import SecretKey
from aspen.plugin_api import PeerConnection
from aspen.quic import ConnectionLostError, Endpoint
from aspen.quic.ping import cmd_ping, ping
from tests.multiprocess.quic_helpers import ECHO_ALPN, QuicServerProcess, run

pytestmark = pytest.mark.multiprocess


class HoldHandler:
    """Accepts connections and holds them open until cancelled (to test stop())."""

    alpn = "hold/1"

    def __init__(self) -> None:
        self.accepted: list[PeerConnection] = []
        self.cancelled = 0

    async def handle_connection(self, conn: PeerConnection) -> None:
        self.accepted.append(conn)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def test_stop_closes_connections_and_cancels_handlers() -> None:
    async def main() -> None:
        hold = HoldHandler()
        server = Endpoint(SecretKey.generate(), handlers={hold.alpn: hold}, registry=CollectorRegistry())
        client = Endpoint(SecretKey.generate(), registry=CollectorRegistry())
        await server.start()
        await client.start()
        conn = await client.connect(server.endpoint_addr("127.0.0.1"), hold.alpn)
        for _ in range(100):
            if hold.accepted:
                break
            await asyncio.sleep(0.01)
        assert hold.accepted and hold.accepted[0].remote_id == client.endpoint_id
        await server.stop()
        assert hold.cancelled == 1
        assert server.connection_count() == 0
        # The CONNECTION_CLOSE reaches the dialer: it learns at once, not after an idle timeout.
        await asyncio.wait_for(conn.wait_closed(), 5)
        with pytest.raises(ConnectionLostError):
            await conn.open_stream()
        await server.stop()  # idempotent
        await client.stop()
        with pytest.raises(UsageError):
            await client.connect(server.endpoint_addr("127.0.0.1"), hold.alpn)
    run(main)


def test_ipv6_loopback_and_bad_configuration() -> None:
    async def main() -> None:
        with QuicServerProcess(SecretKey.generate()) as server:
            client = Endpoint(SecretKey.generate(), registry=CollectorRegistry())
            await client.start()
            try:
                addr6 = EndpointAddr(server.key.public(), None, (SocketAddr("::1", server.port),))
                assert await client.rpc(addr6, ECHO_ALPN, b"v6", timeout_ms=5_000) == b"v6"
            finally:
                await client.stop()
        with pytest.raises(ConfigError):
            Endpoint(SecretKey.generate(), registry=CollectorRegistry(), idle_timeout_ms=1000,
                     keepalive_interval_ms=2000)
        with pytest.raises(ConfigError):
            Endpoint(SecretKey.generate(), registry=CollectorRegistry(), max_datagram_size_bytes=1000)
        with pytest.raises(ConfigError):
            await Endpoint(SecretKey.generate(), registry=CollectorRegistry(), bind_host="nohost").start()
    run(main)


def test_ping_measures_round_trips() -> None:
    with QuicServerProcess(SecretKey.generate()) as server:
        target = f"{server.key.public().hex()}@127.0.0.1:{server.port}"
        seen: list[int] = []
        stats = run(lambda: ping(target, 3, interval_ms=0, on_reply=lambda seq, _rtt: seen.append(seq)))
        assert stats.sent == 3 and stats.received == 3 and not stats.errors
        assert seen == [0, 1, 2]
        assert stats.handshake_ms > 0 and stats.min_ms > 0


def test_ping_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with QuicServerProcess(SecretKey.generate()) as server:
        target = f"{server.key.public().hex()}@127.0.0.1:{server.port}"
        assert cmd_ping([target, "-c", "2", "-i", "0"]) == 0
        out = capsys.readouterr().out
        assert "seq=1" in out and "2 sent, 2 received, 0% loss" in out
        # Someone else's key at that address: the handshake fails, exit status 1.
        impostor = f"{SecretKey.generate().public().hex()}@127.0.0.1:{server.port}"
        assert cmd_ping([impostor, "-c", "1", "--timeout-ms", "3000"]) == 1
    assert cmd_ping(["not-a-target"]) == 2


class SilentHandler:
    """Reads requests and never answers (to test RPC timeouts)."""

    alpn = "silent/1"

    async def handle_connection(self, conn: PeerConnection) -> None:
        held = []
        while (stream := await conn.accept_stream()) is not None:
            held.append(stream)


def test_rpc_times_out_and_the_connection_carries_on() -> None:
    async def main() -> None:
        from aspen.quic import QuicTimeoutError
        from aspen_echo.handler import EchoHandler

        server = Endpoint(SecretKey.generate(), registry=CollectorRegistry(),
                          handlers={"silent/1": SilentHandler(), ECHO_ALPN: EchoHandler()})
        client = Endpoint(SecretKey.generate(), registry=CollectorRegistry())
        await server.start()
        await client.start()
        try:
            addr = server.endpoint_addr("127.0.0.1")
            with pytest.raises(QuicTimeoutError):
                await client.rpc(addr, "silent/1", b"anyone?", timeout_ms=300)
            conn = await client.connect(addr, "silent/1")
            assert conn.is_usable and conn.open_stream_count == 0  # the stream was released
            assert await client.rpc(addr, ECHO_ALPN, b"echo", timeout_ms=5_000) == b"echo"
        finally:
            await client.stop()
            await server.stop()
    run(main)
