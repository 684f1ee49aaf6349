"""ZeroCopyCryptoContext and AspenPacketBuilder must put exactly aioquic's bytes on the wire."""

from __future__ import annotations

import os

import pytest
from aioquic._crypto import CryptoError
from aioquic.quic.crypto import CryptoContext, CryptoPair
from aioquic.quic.events import StreamDataReceived
from aioquic.quic.packet import QuicFrameType, QuicPacketType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.tls import CipherSuite, Epoch

from aspen.identity import SecretKey
from aspen.quic.connection import AspenQuicConnection
from aspen.quic.packet_crypto import (
    AspenPacketBuilder,
    ZeroCopyCryptoContext,
    aspen_packet_builder,
    use_zero_copy_crypto,
)
from tests.unit.quic._pair import exchange, make_pair

VERSION_1 = 0x00000001
SHORT_HEADER = bytes([0x41]) + bytes(8) + b"\x00\x07"  # fixed bit, 2-byte pn, 8-byte DCID
LONG_HEADER = bytes([0xC1, 0, 0, 0, 1, 8]) + bytes(8) + b"\x08" + bytes(8) + b"\x40\x20\x00\x07"
SUITES = [CipherSuite.AES_128_GCM_SHA256, CipherSuite.AES_256_GCM_SHA384,
          CipherSuite.CHACHA20_POLY1305_SHA256]


def contexts(suite: CipherSuite) -> tuple[CryptoContext, CryptoContext]:
    secret = os.urandom(48 if suite == CipherSuite.AES_256_GCM_SHA384 else 32)
    plain, fast = CryptoContext(), ZeroCopyCryptoContext()
    for ctx in (plain, fast):
        ctx.setup(cipher_suite=suite, secret=secret, version=VERSION_1)
    return plain, fast


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("header", [SHORT_HEADER, LONG_HEADER], ids=["short", "long"])
@pytest.mark.parametrize("size", [20, 1200, 65_000])
def test_same_ciphertext_as_aioquic_and_each_reads_the_other(suite: CipherSuite, header: bytes,
                                                             size: int) -> None:
    plain, fast = contexts(suite)
    payload = os.urandom(size)
    packet = fast.encrypt_packet(header, payload, 7)
    assert type(packet) is bytes
    assert packet == plain.encrypt_packet(header, payload, 7)
    offset = len(header) - 2  # where the packet number starts
    for reader in (plain, fast):
        got_header, got_payload, number, key_update = reader.decrypt_packet(packet, offset, 7)
        assert (got_header, got_payload, number, key_update) == (header, payload, 7, False)


def test_a_tampered_or_truncated_packet_is_refused() -> None:
    _, fast = contexts(CipherSuite.AES_128_GCM_SHA256)
    packet = bytearray(fast.encrypt_packet(SHORT_HEADER, bytes(100), 3))
    packet[-1] ^= 1
    with pytest.raises(CryptoError):
        fast.decrypt_packet(bytes(packet), len(SHORT_HEADER) - 2, 3)
    with pytest.raises(CryptoError):
        fast.decrypt_packet(bytes(packet[:20]), len(SHORT_HEADER) - 2, 3)


def test_connections_use_it_and_survive_a_key_update() -> None:
    client, server = make_pair(SecretKey.generate(), SecretKey.generate())
    client.connect(("2.3.4.5", 4433), now=0.0)
    now = exchange(client, server)
    for conn in (client, server):
        pair = conn._cryptos[Epoch.ONE_RTT]
        assert type(pair.send) is ZeroCopyCryptoContext and type(pair.recv) is ZeroCopyCryptoContext
    client.request_key_update()
    stream_id = client.get_next_available_stream_id()
    client.send_stream_data(stream_id, b"after the key update", end_stream=True)
    exchange(client, server, now)
    received = b""
    while (event := server.next_event()) is not None:
        received += getattr(event, "data", b"")
    assert received == b"after the key update"
    assert server._cryptos[Epoch.ONE_RTT].recv.key_phase == 1


def test_install_is_idempotent_and_leaves_state_alone() -> None:
    pair = CryptoPair()
    pair.setup_initial(cid=bytes(8), is_client=True, version=VERSION_1)
    aead = pair.send.aead
    use_zero_copy_crypto(pair)
    use_zero_copy_crypto(pair)
    assert type(pair.send) is ZeroCopyCryptoContext and pair.send.aead is aead


def build(builder_class: type[QuicPacketBuilder], pair: CryptoPair, payloads: list[bytes],
          datagram_size: int) -> tuple[list[bytes], list[tuple[int, int, bool]], int, int]:
    """Packets of one STREAM frame each (plus a tiny ACK-like one that needs padding, and a PING
    packet that pads the datagram), the way aioquic's connection drives its builder."""
    builder = builder_class(host_cid=bytes(8), peer_cid=bytes(range(8)), version=VERSION_1,
                            is_client=True, max_datagram_size=datagram_size, packet_number=9)
    offset = 0
    for payload in payloads:
        builder.start_packet(QuicPacketType.ONE_RTT, pair)
        buf = builder.start_frame(QuicFrameType.STREAM_BASE | 6, capacity=16)
        buf.push_uint_var(0)
        buf.push_uint_var(offset)
        buf.push_uint_var(len(payload))
        buf.push_bytes(payload)
        offset += len(payload)
    builder.start_packet(QuicPacketType.ONE_RTT, pair)
    builder.start_frame(QuicFrameType.PADDING)  # 1 byte: needs padding for the HP sample
    builder.start_packet(QuicPacketType.ONE_RTT, pair)
    builder.start_frame(QuicFrameType.PING)
    builder._datagram_needs_padding = True  # as a PMTU probe does
    datagrams, packets = builder.flush()
    return ([bytes(d) for d in datagrams], [(p.packet_number, p.sent_bytes, p.in_flight) for p in packets],
            builder._flight_bytes, builder._total_bytes)


@pytest.mark.parametrize("datagram_size", [1200, 65_000])
@pytest.mark.parametrize("key_update", [False, True])
def test_aspen_packet_builder_puts_the_same_bytes_on_the_wire(datagram_size: int, key_update: bool) -> None:
    secret = os.urandom(32)
    pairs = []
    for _ in range(2):
        pair = CryptoPair()
        for ctx in (pair.send, pair.recv):
            ctx.setup(cipher_suite=CipherSuite.AES_128_GCM_SHA256, secret=secret, version=VERSION_1)
        if key_update:
            pair.update_key()
        pairs.append(pair)
    use_zero_copy_crypto(pairs[1])
    payloads = [os.urandom(size) for size in (datagram_size - 100, 500, 30)]
    plain = build(QuicPacketBuilder, pairs[0], payloads, datagram_size)
    ours = build(AspenPacketBuilder, pairs[1], payloads, datagram_size)
    assert ours == plain
    assert len(plain[0]) == 5 and pairs[1].send.key_phase == pairs[0].send.key_phase


def test_the_builder_swap_only_lasts_for_one_call() -> None:
    from aioquic.quic import connection as aioquic_connection
    with aspen_packet_builder():
        assert aioquic_connection.QuicPacketBuilder is AspenPacketBuilder  # type: ignore[attr-defined]
    assert aioquic_connection.QuicPacketBuilder is QuicPacketBuilder  # type: ignore[attr-defined]


def stream_packet(sender: AspenQuicConnection, frame: bytes) -> bytes:
    """A 1-RTT packet from `sender` carrying `frame` as is (valid or not)."""
    builder = QuicPacketBuilder(host_cid=sender.host_cid, peer_cid=sender._peer_cid.cid,
                                version=VERSION_1, is_client=True, max_datagram_size=1200,
                                packet_number=sender._packet_number)
    builder.start_packet(QuicPacketType.ONE_RTT, sender._cryptos[Epoch.ONE_RTT])
    frame_type, body = frame[0], frame[1:]
    builder.start_frame(frame_type, capacity=len(body)).push_bytes(body)
    sender._packet_number += 1
    datagrams, _ = builder.flush()
    return bytes(datagrams[0])


@pytest.mark.parametrize("claimed_length, error", [(5, None), (1000, 0x7)])  # 0x7 FRAME_ENCODING_ERROR
def test_stream_frames_are_read_from_the_payload_and_an_overlong_one_closes(
        claimed_length: int, error: int | None) -> None:
    client, server = make_pair(SecretKey.generate(), SecretKey.generate())
    client.connect(("2.3.4.5", 4433), now=0.0)
    now = exchange(client, server)
    while server.next_event() is not None:
        pass
    # STREAM with offset 0, a length field and FIN on stream 0: "hello"
    frame = bytes([0x0B, 0x00, 0x40 | (claimed_length >> 8), claimed_length & 0xFF]) + b"hello"
    server.receive_datagram(stream_packet(client, frame), ("1.2.3.4", 1234), now)
    events = []
    while (event := server.next_event()) is not None:
        events.append(event)
    if error is None:
        assert [(e.stream_id, bytes(e.data), e.end_stream) for e in events
                if isinstance(e, StreamDataReceived)] == [(0, b"hello", True)]
    else:
        assert server._close_event is not None and server._close_event.error_code == error
