"""An Aspen endpoint speaks QUIC v1 only and says so to a v2 dialer (Version Negotiation)."""

from __future__ import annotations

import asyncio
import socket
import ssl

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, QuicProtocolVersion, pull_quic_header
from prometheus_client import CollectorRegistry

from aspen.identity import SecretKey
from aspen.plugin_api import PeerConnection
from aspen.quic import Endpoint

REPLY_TIMEOUT_S = 5.0


class Idle:
    alpn = "test/1"

    async def handle_connection(self, conn: PeerConnection) -> None:
        await asyncio.sleep(0)


def test_a_v2_initial_gets_version_negotiation_listing_only_v1() -> None:
    async def main() -> list[int]:
        endpoint = Endpoint(SecretKey.generate(), handlers={"test/1": Idle()},
                            registry=CollectorRegistry(), bind_host="127.0.0.1")
        await endpoint.start()
        try:
            dialer = QuicConnection(configuration=QuicConfiguration(
                is_client=True, alpn_protocols=["test/1"], verify_mode=ssl.CERT_NONE,
                supported_versions=[QuicProtocolVersion.VERSION_2]))
            port = endpoint.local_addr().port
            dialer.connect(("127.0.0.1", port), now=0.0)
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                for data, _ in dialer.datagrams_to_send(now=0.0):
                    sock.sendto(data, ("127.0.0.1", port))
                reply = await asyncio.wait_for(loop.sock_recv(sock, 2048), REPLY_TIMEOUT_S)
            header = pull_quic_header(Buffer(data=reply), host_cid_length=8)
            assert header.packet_type == QuicPacketType.VERSION_NEGOTIATION
            return list(header.supported_versions)
        finally:
            await endpoint.stop()

    assert asyncio.run(main()) == [QuicProtocolVersion.VERSION_1]
