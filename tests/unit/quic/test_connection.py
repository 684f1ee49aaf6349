"""AspenQuicConnection's own additions, sans-IO: stream limits and stateless reset tokens."""

from __future__ import annotations

import pytest

from aspen.identity import SecretKey
from aspen.quic.connection import (
    MIN_STATELESS_RESET_SIZE,
    derive_reset_key,
    stateless_reset_token,
)
from tests.unit.quic._pair import exchange, handshake, make_pair


def test_reset_tokens_are_derived_from_the_node_key_and_the_connection_id() -> None:
    ck, sk = SecretKey.generate(), SecretKey.generate()
    client, server = make_pair(ck, sk)
    handshake(client, server)
    exchange(client, server, 1.0)  # NEW_CONNECTION_ID frames
    key = derive_reset_key(sk.seed)
    for cid in server._host_cids:
        assert cid.stateless_reset_token == stateless_reset_token(key, cid.cid)
    # A restarted incarnation (same key) computes the same token for the client's current id:
    assert client._peer_cid.stateless_reset_token == stateless_reset_token(
        derive_reset_key(sk.seed), client._peer_cid.cid)


def test_client_recognises_a_stateless_reset_from_its_server_only() -> None:
    ck, sk = SecretKey.generate(), SecretKey.generate()
    client, server = make_pair(ck, sk)
    handshake(client, server)
    token = stateless_reset_token(derive_reset_key(sk.seed), client._peer_cid.cid)
    reset = bytes([0x41]) + bytes(26) + token
    assert client.is_stateless_reset(reset)
    assert not client.is_stateless_reset(bytes([0x41]) + bytes(26) + bytes(16))
    assert not client.is_stateless_reset(token)  # shorter than any reset (RFC 9000 §10.3)
    assert len(reset) >= MIN_STATELESS_RESET_SIZE
    assert not client.is_stateless_reset(bytes([0xC1]) + bytes(26) + token)  # long header


def test_the_peer_may_open_only_max_concurrent_streams() -> None:
    ck, sk = SecretKey.generate(), SecretKey.generate()
    client, server = make_pair(ck, sk, max_concurrent_streams=3)
    handshake(client, server)
    assert client._remote_max_streams_bidi == 3
    assert client._remote_max_streams_uni == 3


def test_a_client_needs_the_key_it_dials() -> None:
    from aspen.quic.connection import AspenQuicConnection
    from tests.unit.quic._pair import config
    with pytest.raises(ValueError):
        AspenQuicConnection(configuration=config(SecretKey.generate(), is_client=True, alpns=["x"]),
                            reset_key=bytes(32))


def test_acks_wait_for_a_packet_to_ride_on_but_not_for_a_bulk_sender() -> None:
    from aioquic import tls

    from aspen.quic.connection import ACK_DELAY_S, ACK_ELICITING_THRESHOLD
    from tests.unit.quic._pair import advance, transfer
    client, server = make_pair(SecretKey.generate(), SecretKey.generate())
    now = handshake(client, server)
    now = advance(client, server, now, 0.1)  # settle: handshake ACKs, HANDSHAKE_DONE
    space = server._spaces[tls.Epoch.ONE_RTT]
    client.send_stream_data(0, b"request")
    transfer(client, server, now)
    assert space.ack_at is not None and abs(space.ack_at - (now + ACK_DELAY_S)) < 1e-9
    # A burst of ack-eliciting packets: acknowledged without waiting out the delay.
    client.send_stream_data(0, bytes(1100 * (ACK_ELICITING_THRESHOLD + 2)))
    sent = 0
    for _ in range(40):  # the client paces its packets out; the server does not answer yet
        now += 0.0005
        sent += transfer(client, server, now)
        if sent >= ACK_ELICITING_THRESHOLD:
            break
    assert sent >= ACK_ELICITING_THRESHOLD - 1
    assert space.ack_at is not None and space.ack_at <= now


def test_a_pending_ack_rides_on_the_reply_instead_of_going_alone() -> None:
    """Request, then reply within the ACK delay: the reply's packet acknowledges the request,
    and no ACK-only datagram follows when the delay runs out."""
    from aioquic import tls

    from aspen.quic.connection import ACK_DELAY_S
    from tests.unit.quic._pair import advance, transfer
    client, server = make_pair(SecretKey.generate(), SecretKey.generate())
    now = handshake(client, server)
    now = advance(client, server, now, 0.1)  # settle: handshake ACKs, HANDSHAKE_DONE
    space = server._spaces[tls.Epoch.ONE_RTT]
    client.send_stream_data(0, b"request")
    assert transfer(client, server, now) == 1
    assert space.ack_at is not None  # delayed: waiting for something to ride on
    now += ACK_DELAY_S / 4
    server.send_stream_data(0, b"reply")
    server.ack_with_next_packet()
    assert transfer(server, client, now) == 1
    assert space.ack_at is None  # the reply carried it
    assert server.datagrams_to_send(now + 2 * ACK_DELAY_S) == []  # nothing left to send alone
    # Without the hint (what aioquic does), the reply leaves the ACK behind for its timer.
    client.send_stream_data(0, b"request 2")
    transfer(client, server, now)
    server.send_stream_data(0, b"reply 2")
    transfer(server, client, now)
    assert space.ack_at is not None
