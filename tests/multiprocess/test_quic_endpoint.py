"""The QUIC endpoint between real processes on loopback (the server is aspen.quic.testserver).

Each test asserts outcomes (who was accepted, what was refused, what each side counted), never
timings. The whole file runs in well under a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio

import pytest

from aspen.errors import LimitExceeded
from aspen.identity import SecretKey
from aspen.quic import HandshakeError, StreamResetError
from aspen.wire import MAX_RPC_MESSAGE_SIZE
from tests.multiprocess.quic_helpers import (
    ECHO_ALPN,
    SINK_ALPN,
    QuicServerProcess,
    make_client,
    run,
    server_stats,
)

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def server() -> QuicServerProcess:
    proc = QuicServerProcess(SecretKey.generate()).start()
    yield proc  # type: ignore[misc]
    proc.stop()


def test_two_processes_exchange_rpcs_and_learn_each_others_key(server: QuicServerProcess) -> None:
    async def main() -> None:
        client = make_client()
        await client.start()
        try:
            conn = await client.connect(server.addr, ECHO_ALPN)
            assert conn.remote_id == server.key.public()
            for i in range(5):
                body = f"hello {i}".encode()
                assert await client.rpc(server.addr, ECHO_ALPN, body, timeout_ms=5_000) == body
            stats = await server_stats(client, server)
            assert stats['aspen_quic_connections_opened_total{alpn="aspen-echo/1",direction="in"}'] >= 1
            opened = client.metrics.connections_opened.labels(alpn=ECHO_ALPN, direction="out")._value.get()
            assert opened == 1
        finally:
            await client.stop()
    run(main)


def test_impostor_server_is_rejected(server: QuicServerProcess) -> None:
    """We dial key A at an address where key B answers: the handshake must fail (bad_key)."""
    async def main() -> None:
        client = make_client()
        await client.start()
        try:
            someone_else = SecretKey.generate().public()
            with pytest.raises(HandshakeError) as info:
                await client.connect(server.addr_as(someone_else), ECHO_ALPN, timeout_ms=5_000)
            assert info.value.reason == "bad_key"
            assert client.metrics.handshake_failures.labels(reason="bad_key")._value.get() == 1
            assert client.connection_count() <= 1  # only the closing one, never handed out
        finally:
            await client.stop()
    run(main)


def test_dialer_cannot_claim_another_key(server: QuicServerProcess) -> None:
    """A dialer presenting a certificate for a key it does not hold, or none, is refused."""
    async def main() -> None:
        victim = SecretKey.generate()
        from aspen.quic.tls_identity import make_identity_certificate
        from cryptography import x509

        victim_cert, _ = make_identity_certificate(victim)
        for forge in ("someone_elses_certificate", "no_certificate"):
            client = make_client()
            await client.start()
            try:
                if forge == "someone_elses_certificate":
                    # The certificate names the victim's key; we sign the handshake with ours.
                    client._certificate = victim_cert
                else:
                    client._certificate = None  # type: ignore[assignment]
                    client._private_key = None  # type: ignore[assignment]
                with pytest.raises(HandshakeError) as info:
                    await client.connect(server.addr, ECHO_ALPN, timeout_ms=5_000)
                assert info.value.reason == "bad_key", (forge, info.value)
            finally:
                await client.stop()
        assert isinstance(victim_cert, x509.Certificate)
        honest = make_client()
        await honest.start()
        try:
            stats = await server_stats(honest, server)
            assert stats['aspen_quic_handshake_failures_total{reason="bad_key"}'] >= 2
        finally:
            await honest.stop()
    run(main)


def test_unknown_alpn_is_refused_in_the_handshake(server: QuicServerProcess) -> None:
    async def main() -> None:
        client = make_client()
        await client.start()
        try:
            with pytest.raises(HandshakeError) as info:
                await client.connect(server.addr, "nobody-serves-this/1", timeout_ms=5_000)
            assert info.value.reason == "unknown_alpn"
            stats = await server_stats(client, server)
            assert stats['aspen_quic_handshake_failures_total{reason="unknown_alpn"}'] >= 1
        finally:
            await client.stop()
    run(main)


def test_100_concurrent_rpcs_share_one_connection(server: QuicServerProcess) -> None:
    async def main() -> None:
        client = make_client()
        await client.start()
        try:
            # Concurrent connects to a peer we have no connection to share one handshake.
            conns = await asyncio.gather(*(client.connect(server.addr, ECHO_ALPN) for _ in range(10)))
            assert all(c is conns[0] for c in conns)
            bodies = [f"rpc {i}".encode() * 4 for i in range(100)]
            replies = await asyncio.gather(*(client.rpc(server.addr, ECHO_ALPN, b, timeout_ms=10_000)
                                             for b in bodies))
            assert replies == bodies
            assert client.metrics.connections_opened.labels(alpn=ECHO_ALPN, direction="out")._value.get() == 1
            assert client.metrics.handshake_failures.labels(reason="timeout")._value.get() == 0
        finally:
            await client.stop()
    run(main)


def test_ten_mib_passes_and_one_byte_more_is_refused_on_both_sides(server: QuicServerProcess) -> None:
    async def main() -> None:
        client = make_client()
        await client.start()
        try:
            exact = bytes(MAX_RPC_MESSAGE_SIZE)
            reply = await client.rpc(server.addr, SINK_ALPN, exact, timeout_ms=20_000)
            assert int.from_bytes(reply, "big") == MAX_RPC_MESSAGE_SIZE

            # Sending side: refused before a byte is queued.
            out_before = client.metrics.bytes_out
            with pytest.raises(LimitExceeded):
                await client.rpc(server.addr, SINK_ALPN, bytes(MAX_RPC_MESSAGE_SIZE + 1), timeout_ms=5_000)
            await asyncio.sleep(0.05)
            out_after = client.metrics.bytes_out
            assert out_after - out_before < 64 * 1024

            # Receiving side: a hand-made header claiming 10 MiB + 1, followed by little data.
            conn = await client.connect(server.addr, SINK_ALPN)
            stream = await conn.open_stream()
            header = (MAX_RPC_MESSAGE_SIZE + 1).to_bytes(4, "big")
            conn.quic.send_stream_data(stream.stream_id, header + bytes(1000))
            conn._wake()
            with pytest.raises(StreamResetError):
                await stream.read_frame(timeout_ms=5_000)
            stats = await server_stats(client, server)
            assert stats['aspen_quic_frames_rejected_total{reason="oversized"}'] >= 1
            assert stats["sink_refused_frames"] >= 1
            # It kept nothing of the announced body (at most a packet's worth, never 10 MiB).
            assert stats["sink_max_refused_stream_buffered_bytes"] < 2048
            # The connection and its other streams carry on.
            assert conn.is_usable
            reply = await client.rpc(server.addr, SINK_ALPN, b"still fine", timeout_ms=5_000)
            assert int.from_bytes(reply, "big") == len(b"still fine")
            assert client.metrics.connections_opened.labels(alpn=SINK_ALPN, direction="out")._value.get() == 1
        finally:
            await client.stop()
    run(main, timeout_s=45)


def test_garbage_frame_closes_only_its_stream(server: QuicServerProcess) -> None:
    async def main() -> None:
        client = make_client()
        await client.start()
        try:
            conn = await client.connect(server.addr, ECHO_ALPN)
            good = await conn.open_stream()
            await good.write_frame(b"first")
            assert await good.read_frame(timeout_ms=5_000) == b"first"

            bad = await conn.open_stream()
            # Half a header, then FIN: a frame cut short.
            conn.quic.send_stream_data(bad.stream_id, b"\x00\x00", end_stream=True)
            conn._wake()
            with pytest.raises(StreamResetError):
                await bad.read_frame(timeout_ms=5_000)

            await good.write_frame(b"second", end_stream=True)
            assert await good.read_frame(timeout_ms=5_000) == b"second"
            assert await good.read_frame(timeout_ms=5_000) is None
            assert conn.is_usable
            stats = await server_stats(client, server)
            assert stats['aspen_quic_frames_rejected_total{reason="malformed"}'] >= 1
        finally:
            await client.stop()
    run(main)


def test_peer_restart_is_survived_by_redialing() -> None:
    key = SecretKey.generate()
    first = QuicServerProcess(key).start()
    port = first.port
    try:
        async def main() -> None:
            client = make_client()
            await client.start()
            try:
                assert await client.rpc(first.addr, ECHO_ALPN, b"before", timeout_ms=5_000) == b"before"
                first.kill()  # crash: no CONNECTION_CLOSE reaches us
                second = QuicServerProcess(key, port=port).start()
                try:
                    reply = await client.rpc(second.addr, ECHO_ALPN, b"after", timeout_ms=10_000)
                    assert reply == b"after"
                    opened = client.metrics.connections_opened.labels(alpn=ECHO_ALPN, direction="out")
                    assert opened._value.get() == 2
                    # The restarted server held no state for our old connection and said so
                    # with a stateless reset (RFC 9000 §10.3) instead of letting us time out.
                    assert client.metrics.stateless_resets.labels(direction="in")._value.get() >= 1
                finally:
                    second.stop()
            finally:
                await client.stop()
        run(main)
    finally:
        first.stop()


def test_idle_connections_are_closed_after_the_timeout() -> None:
    with QuicServerProcess(SecretKey.generate(), extra_args=["--idle-timeout-ms", "1000"]) as server:
        async def main() -> None:
            client = make_client(idle_timeout_ms=1_000, keepalive_interval_ms=300)
            await client.start()
            try:
                conn = await client.connect(server.addr, ECHO_ALPN)
                assert await client.rpc(server.addr, ECHO_ALPN, b"x", timeout_ms=5_000) == b"x"
                await asyncio.wait_for(conn.wait_closed(), 5.0)
                assert not conn.is_usable
                assert client.metrics.connections_closed.labels(alpn=ECHO_ALPN, direction="out")._value.get() == 1
                assert client.metrics.connections_open.labels(alpn=ECHO_ALPN)._value.get() == 0
                # The next call dials again.
                assert await client.rpc(server.addr, ECHO_ALPN, b"y", timeout_ms=5_000) == b"y"
                stats = await server_stats(client, server)
                assert stats['aspen_quic_connections_closed_total{alpn="aspen-echo/1",direction="in"}'] >= 1
            finally:
                await client.stop()
        run(main)


def test_keepalive_holds_a_quiet_stream_open_past_the_idle_timeout() -> None:
    with QuicServerProcess(SecretKey.generate(), extra_args=["--idle-timeout-ms", "1000"]) as server:
        async def main() -> None:
            client = make_client(idle_timeout_ms=1_000, keepalive_interval_ms=300)
            await client.start()
            try:
                conn = await client.connect(server.addr, ECHO_ALPN)
                stream = await conn.open_stream()
                await stream.write_frame(b"one")
                assert await stream.read_frame(timeout_ms=5_000) == b"one"
                await asyncio.sleep(2.5)  # 2.5 idle timeouts with no application traffic
                assert conn.is_usable
                await stream.write_frame(b"two", end_stream=True)
                assert await stream.read_frame(timeout_ms=5_000) == b"two"
            finally:
                await client.stop()
        run(main)
