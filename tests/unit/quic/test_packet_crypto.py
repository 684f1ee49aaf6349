"""ZeroCopyCryptoContext must put exactly aioquic's bytes on the wire and read aioquic's back."""

from __future__ import annotations

import os

import pytest
from aioquic._crypto import CryptoError
from aioquic.quic.crypto import CryptoContext, CryptoPair
from aioquic.tls import CipherSuite, Epoch

from aspen.identity import SecretKey
from aspen.quic.packet_crypto import ZeroCopyCryptoContext, use_zero_copy_crypto
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
