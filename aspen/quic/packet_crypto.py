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

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aioquic._crypto import AEAD_TAG_LENGTH, CryptoError
from aioquic.quic.crypto import CryptoContext, CryptoPair, KeyUnavailableError, next_key_phase
from aioquic.quic.packet import decode_packet_number

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
        aead = self.aead
        hp = self.hp
        assert aead is not None and hp is not None, "Encryption key is not available"
        cipher = aead._aead
        if not isinstance(cipher, AESGCM) or hp._is_chacha20:
            return super().encrypt_packet(plain_header, plain_payload, packet_number)
        header_size = len(plain_header)
        out = bytearray(header_size + len(plain_payload) + AEAD_TAG_LENGTH)
        out[:header_size] = plain_header
        cipher.encrypt_into(aead._nonce(packet_number), plain_payload, plain_header,
                            memoryview(out)[header_size:])
        pn_length = (plain_header[0] & 0x03) + 1
        pn_offset = header_size - pn_length
        sample_at = pn_offset + PN_MAX_LENGTH
        mask = hp._mask(bytes(out[sample_at:sample_at + HP_SAMPLE_LENGTH]))
        out[0] ^= mask[0] & (_LONG_HEADER_MASK if out[0] & _LONG_HEADER_BIT else _SHORT_HEADER_MASK)
        for i in range(pn_length):
            out[pn_offset + i] ^= mask[1 + i]
        # bytes: the packet builder's push_bytes takes read-only buffers only (one copy).
        return bytes(out)

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
        mask = hp._mask(packet[sample_at:sample_at + HP_SAMPLE_LENGTH])
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
            payload = crypto_aead._aead.decrypt(crypto_aead._nonce(packet_number),
                                                memoryview(packet)[len(plain_header):], plain_header)
        except InvalidTag as exc:
            raise CryptoError(str(exc)) from None
        return plain_header, payload, packet_number, crypto is not self


def use_zero_copy_crypto(pair: CryptoPair) -> None:
    """Make `pair`'s send and receive contexts ZeroCopyCryptoContexts (same state, same keys).

    Safe at any time: the class only adds behaviour, it has no state of its own.
    """
    for context in (pair.send, pair.recv):
        if type(context) is CryptoContext:
            context.__class__ = ZeroCopyCryptoContext


__all__ = ["ZeroCopyCryptoContext", "use_zero_copy_crypto"]
