"""Large datagrams, sans-IO: the STREAM frame length fix and path MTU probing (DPLPMTUD)."""

from __future__ import annotations

from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived

from aspen.identity import SecretKey
from aspen.quic.connection import MAX_PMTU_PROBES, PMTU_SEARCH_PRECISION_BYTES
from tests.unit.quic._pair import advance, config, drain, exchange, handshake, make_pair

PAYLOAD = bytes(range(256)) * 1024  # 256 KiB with a recognisable pattern


def received(conn: QuicConnection, stream_id: int) -> bytes:
    return b"".join(e.data for e in drain(conn) if isinstance(e, StreamDataReceived) and e.stream_id == stream_id)


def test_plain_aioquic_corrupts_stream_frames_longer_than_16383_bytes() -> None:
    """Why raw aioquic fails with big datagrams: the 2-byte STREAM length overflows."""
    sk = SecretKey.generate()
    client = QuicConnection(configuration=config(SecretKey.generate(), is_client=True, alpns=["test/1"],
                                                 datagram_size=30_000))
    server = QuicConnection(configuration=config(sk, is_client=False, alpns=["test/1"], datagram_size=30_000),
                            original_destination_connection_id=client._peer_cid.cid)
    client.connect(("2.3.4.5", 4433), now=0.0)
    now = exchange(client, server)
    client.send_stream_data(0, PAYLOAD, end_stream=True)
    exchange(client, server, now)
    events = drain(server)
    closed = [e for e in events if isinstance(e, ConnectionTerminated)] or [server._close_event]
    assert closed[0] is not None, "expected the receiver to reject the corrupted frame"


def test_aspen_connection_carries_frames_longer_than_16383_bytes() -> None:
    client, server = make_pair(SecretKey.generate(), SecretKey.generate(), datagram_size=30_000)
    now = handshake(client, server)
    client.send_stream_data(0, PAYLOAD, end_stream=True)
    exchange(client, server, now, max_rounds=200)
    assert server._close_event is None
    assert received(server, 0) == PAYLOAD


def test_probing_raises_the_datagram_size_to_the_ceiling_on_a_clean_path() -> None:
    client, server = make_pair(SecretKey.generate(), SecretKey.generate(), pmtu_ceiling=20_000)
    now = handshake(client, server)
    now = advance(client, server, now, 0.1)  # the probe's ACK may be delayed (ACK_DELAY_S)
    assert client.max_datagram_size == 20_000 and client._pmtu_probes_sent == 1
    assert server.max_datagram_size == 20_000
    client.send_stream_data(0, PAYLOAD, end_stream=True)
    sizes = [len(d) for d, _ in client.datagrams_to_send(now + 1)]
    assert max(sizes) == 20_000


def test_probing_finds_a_smaller_path_mtu_and_never_exceeds_it() -> None:
    path_mtu = 9_000
    client, server = make_pair(SecretKey.generate(), SecretKey.generate(), pmtu_ceiling=60_000)
    client.connect(("2.3.4.5", 4433), now=0.0)
    now = advance(client, server, 0.0, 15.0, path_max_size=path_mtu)
    assert client.is_pmtu_search_done
    assert path_mtu - PMTU_SEARCH_PRECISION_BYTES <= client.max_datagram_size <= path_mtu
    assert client._pmtu_probes_sent <= MAX_PMTU_PROBES
    # Data still flows, in datagrams the path carries.
    client.send_stream_data(0, PAYLOAD, end_stream=True)
    advance(client, server, now, 2.0, path_max_size=path_mtu)
    assert received(server, 0) == PAYLOAD
    assert client._close_event is None


def test_no_ceiling_means_no_probe() -> None:
    client, server = make_pair(SecretKey.generate(), SecretKey.generate())
    now = handshake(client, server)
    exchange(client, server, now)
    assert client._pmtu_probes_sent == 0 and client.max_datagram_size == 1200
