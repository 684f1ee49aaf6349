"""Two sans-IO AspenQuicConnections wired by hand (aioquic's `client_and_server()` idea).

No sockets, no event loop: datagrams are moved with `exchange()`, time is a number we step.
"""

from __future__ import annotations

import ssl

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

from aspen.identity import EndpointId, SecretKey
from aspen.quic.connection import AspenQuicConnection, derive_reset_key
from aspen.quic.tls_identity import make_identity_certificate

CLIENT_ADDR = ("1.2.3.4", 1234)
SERVER_ADDR = ("2.3.4.5", 4433)
MAX_ROUNDS = 20  # a handshake needs ~4 flights; anything more is a bug


def config(key: SecretKey | None, *, is_client: bool, alpns: list[str]) -> QuicConfiguration:
    cert = private = None
    if key is not None:
        cert, private = make_identity_certificate(key)
    return QuicConfiguration(is_client=is_client, alpn_protocols=alpns, certificate=cert,
                             private_key=private, verify_mode=ssl.CERT_NONE)


def make_pair(client_key: SecretKey | None, server_key: SecretKey, *, dial: EndpointId | None = None,
              client_alpn: str = "test/1", server_alpns: tuple[str, ...] = ("test/1",),
              client_config: QuicConfiguration | None = None,
              max_concurrent_streams: int = 128) -> tuple[AspenQuicConnection, AspenQuicConnection]:
    client = AspenQuicConnection(
        configuration=client_config or config(client_key, is_client=True, alpns=[client_alpn]),
        reset_key=derive_reset_key(client_key.seed if client_key else bytes(32)),
        expected_peer_id=dial or server_key.public())
    server = AspenQuicConnection(
        configuration=config(server_key, is_client=False, alpns=list(server_alpns)),
        reset_key=derive_reset_key(server_key.seed),
        original_destination_connection_id=client._peer_cid.cid,
        max_concurrent_streams=max_concurrent_streams)
    return client, server


def transfer(sender: AspenQuicConnection, receiver: AspenQuicConnection, now: float) -> int:
    addr = CLIENT_ADDR if sender._is_client else SERVER_ADDR  # the source, as the receiver sees it
    count = 0
    for data, _ in sender.datagrams_to_send(now):
        receiver.receive_datagram(data, addr, now)
        count += 1
    return count


def exchange(client: AspenQuicConnection, server: AspenQuicConnection, now: float = 0.0) -> float:
    """Move datagrams both ways until both are quiet; returns the final time."""
    for _ in range(MAX_ROUNDS):
        now += 0.001
        moved = transfer(client, server, now) + transfer(server, client, now)
        if moved == 0:
            return now
    raise AssertionError("connections never went quiet")


def handshake(client: AspenQuicConnection, server: AspenQuicConnection) -> float:
    client.connect(SERVER_ADDR, now=0.0)
    return exchange(client, server, 0.0)


def drain(conn: AspenQuicConnection) -> list[QuicEvent]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events
