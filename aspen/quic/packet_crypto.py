"""1-RTT packet protection without aioquic's extra copies of every packet.

aioquic's `CryptoContext` protects a packet by encrypting the payload into a new bytes object,
then concatenating header + payload, copying that into a bytearray to flip the header bits and
copying it back to bytes (`_crypto.HeaderProtection.apply`): four copies of every byte sent. On
receipt it copies the whole packet into a bytearray to unmask a header of a few bytes, then
slices the ciphertext off (another copy) before decrypting. With 65,000-byte datagrams those
copies cost more than AES-GCM itself (measured: ~8 us per copy vs ~9 us per AES-GCM pass).

`ZeroCopyCryptoContext` is the same context (same keys, same key-phase handling: aioquic's
`apply_key_phase` swaps `self.aead` in place) with two methods replaced:

* `encrypt_packet` encrypts straight into a packet-sized buffer (`encrypt_into`), masks the
  header bytes in place and returns it as bytes: one AES pass and one copy instead of four.
* `decrypt_packet` unmasks only the header bytes and decrypts from a memoryview of the packet.

Only AES-GCM with AES header protection takes the fast path (TLS_AES_128_GCM_SHA256 and
TLS_AES_256_GCM_SHA384, what aioquic negotiates by default); ChaCha20 falls back to aioquic.
The wire bytes are identical either way (tests/unit/quic/test_packet_crypto.py checks that
against aioquic's own implementation). Installed per connection by `use_zero_copy_crypto`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aioquic._crypto import AEAD_NONCE_LENGTH, AEAD_TAG_LENGTH, CryptoError
from aioquic.quic.crypto import CryptoContext, CryptoPair, KeyUnavailableError, next_key_phase
from aioquic.quic import connection as _aioquic_connection
from aioquic.quic.packet import PACKET_FIXED_BIT, PACKET_NUMBER_MAX_SIZE, QuicPacketType, decode_packet_number
from aioquic.quic.packet_builder import PACKET_NUMBER_SEND_SIZE, QuicPacketBuilder

# RFC 9001 §5.4.2: the header protection sample starts 4 bytes after the packet number field
# and is 16 bytes long.
PN_MAX_LENGTH = 4
HP_SAMPLE_LENGTH = 16
_LONG_HEADER_BIT = 0x80
_LONG_HEADER_MASK = 0x0F  # RFC 9001 §5.4.1: low 4 bits of a long header's first byte
_SHORT_HEADER_MASK = 0x1F  # ...low 5 bits of a short header's first byte
_KEY_PHASE_BIT = 0x04


class ZeroCopyCryptoContext(CryptoContext):
    """aioquic's CryptoContext with copy-free AES-GCM packet protection (module docstring)."""

    def encrypt_packet(self, plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytes:
        packet = self.seal(plain_header, plain_payload, packet_number)
        if packet is None:
            return super().encrypt_packet(plain_header, plain_payload, packet_number)
        # bytes: the packet builder's push_bytes takes read-only buffers only (one copy).
        return bytes(packet)

    def can_seal(self) -> bool:
        """True when `seal` applies: the key is AES-GCM with AES header protection."""
        aead = self.aead
        hp = self.hp
        return aead is not None and hp is not None and isinstance(aead._aead, AESGCM) and not hp._is_chacha20

    def seal(self, plain_header: bytes, plain_payload: bytes, packet_number: int) -> bytearray | None:
        """The protected packet in a new bytearray (one AES pass, no copy of the payload), or
        None where only aioquic's path applies (ChaCha20)."""
        aead = self.aead
        hp = self.hp
        assert aead is not None and hp is not None, "Encryption key is not available"
        cipher = aead._aead
        if not isinstance(cipher, AESGCM) or hp._is_chacha20:
            return None
        header_size = len(plain_header)
        out = bytearray(header_size + len(plain_payload) + AEAD_TAG_LENGTH)
        out[:header_size] = plain_header
        nonce = (aead._iv ^ packet_number).to_bytes(AEAD_NONCE_LENGTH, "big")  # aead._nonce, inlined
        cipher.encrypt_into(nonce, plain_payload, plain_header,
                            memoryview(out)[header_size:])
        pn_length = (plain_header[0] & 0x03) + 1
        pn_offset = header_size - pn_length
        sample_at = pn_offset + PN_MAX_LENGTH
        mask = hp._encryptor.update(bytes(out[sample_at:sample_at + HP_SAMPLE_LENGTH]))  # hp._mask, AES
        out[0] ^= mask[0] & (_LONG_HEADER_MASK if out[0] & _LONG_HEADER_BIT else _SHORT_HEADER_MASK)
        for i in range(pn_length):
            out[pn_offset + i] ^= mask[1 + i]
        return out

    def decrypt_packet(self, packet: bytes, encrypted_offset: int,
                       expected_packet_number: int) -> tuple[bytes, bytes, int, bool]:
        aead = self.aead
        hp = self.hp
        if aead is None or hp is None:
            raise KeyUnavailableError("Decryption key is not available")
        if not isinstance(aead._aead, AESGCM) or hp._is_chacha20:
            return super().decrypt_packet(packet, encrypted_offset, expected_packet_number)
        sample_at = encrypted_offset + PN_MAX_LENGTH
        if sample_at + HP_SAMPLE_LENGTH > len(packet):
            raise CryptoError("Packet is too short to sample")
        mask = hp._encryptor.update(packet[sample_at:sample_at + HP_SAMPLE_LENGTH])  # hp._mask, AES
        first_byte = packet[0]
        first_byte ^= mask[0] & (_LONG_HEADER_MASK if first_byte & _LONG_HEADER_BIT else _SHORT_HEADER_MASK)
        pn_length = (first_byte & 0x03) + 1
        header = bytearray(packet[:encrypted_offset + pn_length])
        header[0] = first_byte
        truncated = 0
        for i in range(pn_length):
            byte = header[encrypted_offset + i] ^ mask[1 + i]
            header[encrypted_offset + i] = byte
            truncated = (truncated << 8) | byte
        plain_header = bytes(header)
        packet_number = decode_packet_number(truncated, pn_length * 8, expected_packet_number)
        crypto: CryptoContext = self
        if not first_byte & _LONG_HEADER_BIT and ((first_byte & _KEY_PHASE_BIT) >> 2) != self.key_phase:
            crypto = next_key_phase(self)
        crypto_aead = crypto.aead
        assert crypto_aead is not None
        try:
            nonce = (crypto_aead._iv ^ packet_number).to_bytes(AEAD_NONCE_LENGTH, "big")  # _nonce, inlined
            payload = crypto_aead._aead.decrypt(nonce,
                                                memoryview(packet)[len(plain_header):], plain_header)
        except InvalidTag as exc:
            raise CryptoError(str(exc)) from None
        return plain_header, payload, packet_number, crypto is not self


class AspenPacketBuilder(QuicPacketBuilder):
    """aioquic's QuicPacketBuilder; a 1-RTT packet alone in its datagram (every application
    packet after the handshake) skips four copies of itself.

    aioquic ends a packet by copying it out of its Buffer, slicing header and payload apart,
    encrypting, copying the result back into the Buffer and finally copying the Buffer out as
    the datagram. Here the payload is copied out once and sealed into a bytearray that *is* the
    datagram. Same bytes on the wire, same bookkeeping (sent packets, flight and total bytes,
    packet numbers); anything else (long headers, coalesced or padded datagrams, a qlog
    logger, ChaCha20) goes through aioquic's `_end_packet` unchanged.
    """

    def _end_packet(self) -> None:
        packet = self._packet
        pair = self._packet_crypto
        buf = self._buffer
        packet_size = buf.tell()
        header_size = self._header_size
        if (packet is None or pair is None or self._packet_type != QuicPacketType.ONE_RTT or self._packet_start != 0
                or self._datagram_needs_padding or self._quic_logger is not None
                or packet_size - header_size < PACKET_NUMBER_MAX_SIZE - PACKET_NUMBER_SEND_SIZE
                or type(pair.send) is not ZeroCopyCryptoContext):
            super()._end_packet()
            return
        datagram = seal_short_header_packet(pair, self._spin_bit, self._peer_cid, self._packet_number,
                                            buf.data_slice(header_size, packet_size))
        if datagram is None:  # pragma: no cover - ZeroCopyCryptoContext with a ChaCha20 key
            super()._end_packet()
            return
        packet.sent_bytes = len(datagram)
        self._packets.append(packet)
        if packet.in_flight:
            self._datagram_flight_bytes += packet.sent_bytes
        # _flush_current_datagram, for a datagram that needs no padding
        self._datagrams.append(datagram)  # type: ignore[arg-type]  # sent as is, like bytes
        self._flight_bytes += self._datagram_flight_bytes
        self._total_bytes += len(datagram)
        self._datagram_init = True
        buf.seek(0)
        self._packet_number += 1
        self._packet = None
        self.quic_logger_frames = None


def seal_short_header_packet(pair: CryptoPair, spin_bit: bool, peer_cid: bytes, packet_number: int,
                             payload: bytes) -> bytearray | None:
    """A protected 1-RTT packet (the whole datagram) with aioquic's short header: 2-byte packet
    number, `pair`'s key phase. Starts a key update the application asked for, as
    CryptoPair.encrypt_packet does. None (and no key update) when only aioquic's path applies."""
    send = pair.send
    if type(send) is not ZeroCopyCryptoContext or not send.can_seal():
        return None
    # What aioquic writes for a short header (packet_builder._end_packet); pair.key_phase, inlined.
    key_phase = pair.recv.key_phase ^ 1 if pair._update_key_requested else pair.recv.key_phase
    header = bytes((PACKET_FIXED_BIT | (spin_bit << 5) | (key_phase << 2)
                    | (PACKET_NUMBER_SEND_SIZE - 1),)) + peer_cid + (
        packet_number & 0xFFFF).to_bytes(PACKET_NUMBER_SEND_SIZE, "big")
    if pair._update_key_requested:
        pair._update_key("local_update")
    return send.seal(header, payload, packet_number)  # the same context, rekeyed in place


@contextlib.contextmanager
def aspen_packet_builder() -> Iterator[None]:
    """While active, aioquic's QuicConnection builds packets with AspenPacketBuilder.

    aioquic constructs its builder by module-global name inside `datagrams_to_send`; the name
    is swapped for the duration of one call of ours (single-threaded event loop: no other
    connection runs meanwhile), so plain aioquic connections in the same process are untouched.
    """
    setattr(_aioquic_connection, "QuicPacketBuilder", AspenPacketBuilder)
    try:
        yield
    finally:
        setattr(_aioquic_connection, "QuicPacketBuilder", QuicPacketBuilder)


def use_zero_copy_crypto(pair: CryptoPair) -> None:
    """Make `pair`'s send and receive contexts ZeroCopyCryptoContexts (same state, same keys).

    Safe at any time: the class only adds behaviour, it has no state of its own.
    """
    for context in (pair.send, pair.recv):
        if type(context) is CryptoContext:
            context.__class__ = ZeroCopyCryptoContext


__all__ = ["AspenPacketBuilder", "ZeroCopyCryptoContext", "aspen_packet_builder", "seal_short_header_packet",
           "use_zero_copy_crypto"]
