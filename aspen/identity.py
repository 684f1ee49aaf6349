"""Node identity: an Ed25519 key pair (PyNaCl).

A `SecretKey` is the 32-byte Ed25519 seed; its public half is the node's `EndpointId`, printed as
64 lowercase hex characters (short form: the first 10), or z-base-32 inside DNS names (as iroh
and pkarr do). Key files hold the seed as 64 hex characters plus a newline, mode 0600.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import nacl.exceptions
import nacl.signing

from aspen.errors import ConfigError

SECRET_KEY_SIZE = 32  # Ed25519 seed, RFC 8032 §5.1.5
ENDPOINT_ID_SIZE = 32  # Ed25519 public key, RFC 8032 §5.1.5
SIGNATURE_SIZE = 64  # RFC 8032 §5.1.6
SHORT_ID_HEX_CHARS = 10  # DESIGN.md: short ids in text are the first 10 hex chars
KEY_FILE_MODE = 0o600
KEY_FILE_NAME = "secret.key"

# z-base-32 (Zooko's human-oriented base32), the alphabet pkarr uses for keys in DNS names.
_ZBASE32_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
_ZBASE32_INDEX = {c: i for i, c in enumerate(_ZBASE32_ALPHABET)}


class EndpointId:
    """A node's public identity: an Ed25519 public key. Hashable, comparable, immutable."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != ENDPOINT_ID_SIZE:
            raise ValueError(f"an EndpointId is {ENDPOINT_ID_SIZE} bytes, got {len(raw)}")
        self._raw = bytes(raw)

    @classmethod
    def from_hex(cls, text: str) -> EndpointId:
        """Parse 64 hex characters (case-insensitive); raises ValueError naming the problem."""
        text = text.strip()
        if len(text) != 2 * ENDPOINT_ID_SIZE:
            raise ValueError(f"an EndpointId is {2 * ENDPOINT_ID_SIZE} hex characters, got {len(text)}")
        try:
            return cls(bytes.fromhex(text))
        except ValueError:
            raise ValueError(f"an EndpointId must be hex, got {text!r}") from None

    @classmethod
    def parse(cls, text: str) -> EndpointId:
        """Parse hex (64 chars) or z-base-32 (52 chars), the two forms users meet."""
        text = text.strip()
        if len(text) == 2 * ENDPOINT_ID_SIZE:
            return cls.from_hex(text)
        return cls(zbase32_decode(text.lower(), ENDPOINT_ID_SIZE))

    @property
    def raw(self) -> bytes:
        return self._raw

    def hex(self) -> str:
        return self._raw.hex()

    def short(self) -> str:
        return self._raw.hex()[:SHORT_ID_HEX_CHARS]

    def zbase32(self) -> str:
        return zbase32_encode(self._raw)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when `signature` is this key's Ed25519 signature of `message`."""
        if len(signature) != SIGNATURE_SIZE:
            return False
        try:
            nacl.signing.VerifyKey(self._raw).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EndpointId) and other._raw == self._raw

    def __lt__(self, other: EndpointId) -> bool:
        return self._raw < other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __str__(self) -> str:
        return self.hex()

    def __repr__(self) -> str:
        return f"EndpointId({self.short()})"


class SecretKey:
    """A node's Ed25519 secret (the 32-byte seed). Never logged: repr shows only the public id."""

    __slots__ = ("_seed", "_signing_key", "_public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SECRET_KEY_SIZE:
            raise ValueError(f"a secret key is {SECRET_KEY_SIZE} bytes, got {len(seed)}")
        self._seed = bytes(seed)
        self._signing_key = nacl.signing.SigningKey(self._seed)
        self._public = EndpointId(bytes(self._signing_key.verify_key))

    @classmethod
    def generate(cls) -> SecretKey:
        return cls(secrets.token_bytes(SECRET_KEY_SIZE))

    @classmethod
    def from_hex(cls, text: str) -> SecretKey:
        text = text.strip()
        if len(text) != 2 * SECRET_KEY_SIZE:
            raise ValueError(f"a secret key is {2 * SECRET_KEY_SIZE} hex characters, got {len(text)}")
        try:
            return cls(bytes.fromhex(text))
        except ValueError:
            raise ValueError("a secret key must be hex") from None

    @property
    def seed(self) -> bytes:
        return self._seed

    def hex(self) -> str:
        return self._seed.hex()

    def public(self) -> EndpointId:
        return self._public

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message`."""
        return bytes(self._signing_key.sign(message).signature)

    def __repr__(self) -> str:
        return f"SecretKey(public={self._public.short()})"


def write_key_file(path: Path, key: SecretKey) -> None:
    """Write `key` to `path` as hex, created with mode 0600 (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
    try:
        os.fchmod(fd, KEY_FILE_MODE)  # O_CREAT's mode is filtered by umask; fchmod is not
        os.write(fd, (key.hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_key_file(path: Path) -> SecretKey:
    """Read a key file written by `write_key_file`; raises ConfigError naming the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}", key="secret_key_file",
                          value=str(path)) from exc
    try:
        return SecretKey.from_hex(text)
    except ValueError as exc:
        raise ConfigError(f"key file {path} is not a valid secret key: {exc}", key="secret_key_file",
                          value=str(path)) from exc


def load_or_create_key(data_dir: Path) -> SecretKey:
    """The node's key from `data_dir/secret.key`, created on first start and reused afterwards."""
    path = data_dir / KEY_FILE_NAME
    if path.exists():
        return read_key_file(path)
    key = SecretKey.generate()
    write_key_file(path, key)
    return key


def zbase32_encode(data: bytes) -> str:
    """z-base-32 without padding (5 bits per character, most significant first)."""
    bits = int.from_bytes(data, "big") if data else 0
    nbits = 8 * len(data)
    nchars = (nbits + 4) // 5
    bits <<= nchars * 5 - nbits
    return "".join(_ZBASE32_ALPHABET[(bits >> (5 * (nchars - 1 - i))) & 31] for i in range(nchars))


def zbase32_decode(text: str, size_bytes: int) -> bytes:
    """Decode z-base-32 text that encodes exactly `size_bytes` bytes; ValueError otherwise."""
    nchars = (8 * size_bytes + 4) // 5
    if len(text) != nchars:
        raise ValueError(f"expected {nchars} z-base-32 characters, got {len(text)}")
    bits = 0
    for ch in text:
        try:
            bits = (bits << 5) | _ZBASE32_INDEX[ch]
        except KeyError:
            raise ValueError(f"{ch!r} is not a z-base-32 character") from None
    pad = nchars * 5 - 8 * size_bytes
    if bits & ((1 << pad) - 1):
        raise ValueError("non-zero padding bits in z-base-32 text")
    return (bits >> pad).to_bytes(size_bytes, "big")


__all__ = [
    "EndpointId",
    "SecretKey",
    "SECRET_KEY_SIZE",
    "ENDPOINT_ID_SIZE",
    "SIGNATURE_SIZE",
    "write_key_file",
    "read_key_file",
    "load_or_create_key",
    "zbase32_encode",
    "zbase32_decode",
]
