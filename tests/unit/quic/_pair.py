"""Two sans-IO AspenQuicConnections wired by hand (aioquic's `client_and_server()` idea).

No sockets, no event loop: datagrams are moved with `exchange()`, time is a number we step.
"""

from __future__ import annotations

import ssl

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent

from aspen.identity import EndpointId, SecretKey
from aspen.quic.connection import AspenQuicConnection, derive_reset_key
from aspen.quic.tls_identity import make_identity_certificate

CLIENT_ADDR = ("1.2.3.4", 1234)
SERVER_ADDR = ("2.3.4.5", 4433)
MAX_ROUNDS = 20  # a handshake needs ~4 flights; anything more is a bug


def config(key: SecretKey | None, *, is_client: bool, alpns: list[str],
           datagram_size: int = 1200) -> QuicConfiguration:
    cert = private = None
    if key is not None:
        cert, private = make_identity_certificate(key)
    return QuicConfiguration(is_client=is_client, alpn_protocols=alpns, certificate=cert,
                             private_key=private, verify_mode=ssl.CERT_NONE,
                             max_datagram_size=datagram_size, max_data=64 << 20,
                             max_stream_data=64 << 20)


def make_pair(client_key: SecretKey | None, server_key: SecretKey, *, dial: EndpointId | None = None,
              client_alpn: str = "test/1", server_alpns: tuple[str, ...] = ("test/1",),
              client_config: QuicConfiguration | None = None,
              max_concurrent_streams: int = 128, datagram_size: int = 1200,
              pmtu_ceiling: int = 0) -> tuple[AspenQuicConnection, AspenQuicConnection]:
    client = AspenQuicConnection(
        configuration=client_config or config(client_key, is_client=True, alpns=[client_alpn],
                                              datagram_size=datagram_size),
        reset_key=derive_reset_key(client_key.seed if client_key else bytes(32)),
        expected_peer_id=dial or server_key.public(), pmtu_ceiling_bytes=pmtu_ceiling)
    server = AspenQuicConnection(
        configuration=config(server_key, is_client=False, alpns=list(server_alpns),
                             datagram_size=datagram_size),
        reset_key=derive_reset_key(server_key.seed),
        original_destination_connection_id=client._peer_cid.cid,
        max_concurrent_streams=max_concurrent_streams, pmtu_ceiling_bytes=pmtu_ceiling)
    return client, server


def transfer(sender: QuicConnection, receiver: QuicConnection, now: float,
             path_max_size: int | None = None) -> int:
    """Deliver everything `sender` wants to send; datagrams over `path_max_size` are dropped
    (a path with a smaller MTU). Returns how many datagrams were sent."""
    addr = CLIENT_ADDR if sender._is_client else SERVER_ADDR  # the source, as the receiver sees it
    count = 0
    for data, _ in sender.datagrams_to_send(now):
        if path_max_size is None or len(data) <= path_max_size:
            # bytes(): what a socket delivers (Aspen's sender may hand out bytearrays)
            receiver.receive_datagram(bytes(data), addr, now)
        count += 1
    return count


def exchange(client: QuicConnection, server: QuicConnection, now: float = 0.0,
             path_max_size: int | None = None, max_rounds: int = MAX_ROUNDS) -> float:
    """Move datagrams both ways (firing due timers) until both are quiet; returns the time."""
    for _ in range(max_rounds):
        now += 0.001
        for conn in (client, server):
            timer = conn.get_timer()
            if timer is not None and timer <= now:
                conn.handle_timer(now)
        moved = transfer(client, server, now, path_max_size) + transfer(server, client, now, path_max_size)
        if moved == 0:
            return now
    raise AssertionError("connections never went quiet")


def advance(client: QuicConnection, server: QuicConnection, now: float, seconds: float,
            path_max_size: int | None = None) -> float:
    """Let `seconds` pass in 10 ms steps, firing timers and moving datagrams."""
    end = now + seconds
    while now < end:
        now += 0.01
        for conn in (client, server):
            timer = conn.get_timer()
            if timer is not None and timer <= now:
                conn.handle_timer(now)
        transfer(client, server, now, path_max_size)
        transfer(server, client, now, path_max_size)
    return now


def handshake(client: AspenQuicConnection, server: AspenQuicConnection) -> float:
    client.connect(SERVER_ADDR, now=0.0)
    return exchange(client, server, 0.0)


def drain(conn: AspenQuicConnection) -> list[QuicEvent]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events
