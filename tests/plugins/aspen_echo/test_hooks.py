"""The echo plugin: its hooks, and the echo behaviour over two in-process endpoints (loopback)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from aspen.identity import SecretKey
from aspen.plugin_api import ProtocolHandler
from aspen.quic import Endpoint
from aspen_echo import hooks
from aspen_echo.handler import ECHO_ALPN, EchoHandler


def test_plugin_info_and_handlers() -> None:
    info = hooks.aspen_plugin_info()
    assert info.kind == "protocol"
    handlers = hooks.aspen_protocol_handlers(node=None)  # type: ignore[arg-type]
    assert [h.alpn for h in handlers] == [ECHO_ALPN]
    assert isinstance(handlers[0], ProtocolHandler)


def test_echo_returns_every_frame_then_ends_and_drains_oneway_streams() -> None:
    async def main() -> None:
        server = Endpoint(SecretKey.generate(), handlers={ECHO_ALPN: EchoHandler()},
                          registry=CollectorRegistry(), bind_host="127.0.0.1")
        client = Endpoint(SecretKey.generate(), registry=CollectorRegistry(), bind_host="127.0.0.1")
        await server.start()
        await client.start()
        try:
            conn = await client.connect(server.endpoint_addr(), ECHO_ALPN)
            stream = await conn.open_stream()
            for body in (b"one", b"", b"three" * 1000):
                await stream.write_frame(body)
                assert await stream.read_frame(timeout_ms=5_000) == body
            await stream.finish()
            assert await stream.read_frame(timeout_ms=5_000) is None
            await client.send_oneway(server.endpoint_addr(), ECHO_ALPN, b"into the sink")
            assert await client.rpc(server.endpoint_addr(), ECHO_ALPN, b"still", timeout_ms=5_000) == b"still"
        finally:
            await client.stop()
            await server.stop()
    asyncio.run(asyncio.wait_for(main(), 20))
