"""Cluster tickets: everything a new node needs to join, in one copy-pasteable string.

Format (version 1)
------------------
``"aspen" + base32(payload)``, base32 being RFC 4648 without padding, lowercased (iroh's ticket
convention, iroh-protocols.md §2.2), where

``payload = version (1 byte, = 1) || body || checksum (4 bytes)``

- ``body`` = MessagePack of `TicketBodyV1` (array-like): the topic id (32 bytes), the join key
  (32 bytes, `aspen.cluster_secret`), and up to `MAX_TICKET_BOOTSTRAP_PEERS` bootstrap
  `EndpointAddrWire`s (endpoint id, relay URL, direct addresses).
- ``checksum`` = the first 4 bytes of blake3(CHECKSUM_DOMAIN || version || body): catches typos and
  truncation when a ticket is pasted (it is not a MAC; tickets are secrets to be kept, like the
  cookie they replace).

A ticket never contains the cookie: only blake3(cookie) (the public topic id) and
derive_key(cookie) (the join key), neither of which reveals it. Unlike the Rust Aspen's ticket
(aspen-rust-inventory.md §5: cookie in clear as `cluster_id`, bootstrap ids without addresses, no
version, no checksum) it carries dialable addresses.

Decoding errors raise `TicketError` (a `ConfigError`) whose `reason` says which check failed:
"prefix", "base32", "length", "checksum", "version", "encoding", "too_many_peers". The CLI exits
2 with the message.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

import blake3
import msgspec

from aspen.addr import EndpointAddr, EndpointAddrWire
from aspen.cluster_secret import JOIN_KEY_SIZE, TOPIC_ID_SIZE, ClusterSecret
from aspen.errors import ConfigError

TICKET_PREFIX = "aspen"  # iroh ticket KIND convention; the Rust Aspen's KIND too
TICKET_VERSION = 1
MAX_TICKET_BOOTSTRAP_PEERS = 16  # DESIGN.md: at most 16 ticket bootstrap peers
CHECKSUM_SIZE = 4  # 32 bits: a random typo slips through 1 in 4 billion times
CHECKSUM_DOMAIN = b"aspen ticket checksum\x00"
# Upper bound on a ticket string: 16 peers with a long relay URL and 16 direct addresses each
# stay well below this; anything longer is rejected before decoding.
MAX_TICKET_SIZE = 64 * 1024
# The decoder accepts a longer list than the limit only to report "too many peers" precisely.
_MAX_DECODED_PEERS = 256


class TicketError(ConfigError):
    """A ticket string is malformed; `reason` names the check that failed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"invalid ticket: {message}", key="ticket", source="ticket")
        self.reason = reason


class TicketBodyV1(msgspec.Struct, frozen=True, array_like=True):
    topic_id: Annotated[bytes, msgspec.Meta(min_length=TOPIC_ID_SIZE, max_length=TOPIC_ID_SIZE)]
    join_key: Annotated[bytes, msgspec.Meta(min_length=JOIN_KEY_SIZE, max_length=JOIN_KEY_SIZE)]
    bootstrap: Annotated[list[EndpointAddrWire], msgspec.Meta(max_length=_MAX_DECODED_PEERS)] = []


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(TicketBodyV1)


def _checksum(version_and_body: bytes) -> bytes:
    return blake3.blake3(CHECKSUM_DOMAIN + version_and_body).digest()[:CHECKSUM_SIZE]


class ClusterTicket:
    """Topic id + join key + bootstrap addresses. `str(ticket)` is the `aspen...` string."""

    __slots__ = ("topic_id", "join_key", "bootstrap")

    def __init__(self, topic_id: bytes, join_key: bytes, bootstrap: tuple[EndpointAddr, ...] | list[EndpointAddr] = ()) -> None:
        ClusterSecret(topic_id, join_key)  # validates both sizes
        if len(bootstrap) > MAX_TICKET_BOOTSTRAP_PEERS:
            raise TicketError("too_many_peers", f"{len(bootstrap)} bootstrap peers, at most "
                                                f"{MAX_TICKET_BOOTSTRAP_PEERS} (MAX_TICKET_BOOTSTRAP_PEERS)")
        self.topic_id = bytes(topic_id)
        self.join_key = bytes(join_key)
        self.bootstrap = tuple(bootstrap)

    @classmethod
    def from_secret(cls, secret: ClusterSecret, bootstrap: tuple[EndpointAddr, ...] | list[EndpointAddr] = ()) -> ClusterTicket:
        return cls(secret.topic_id, secret.join_key, bootstrap)

    def secret(self) -> ClusterSecret:
        """The cluster secret a node started from this ticket uses (no cookie needed)."""
        return ClusterSecret(self.topic_id, self.join_key)

    def to_bytes(self) -> bytes:
        body = _ENCODER.encode(TicketBodyV1(self.topic_id, self.join_key, [a.to_wire() for a in self.bootstrap]))
        head = bytes([TICKET_VERSION]) + body
        return head + _checksum(head)

    def encode(self) -> str:
        return TICKET_PREFIX + base64.b32encode(self.to_bytes()).decode("ascii").rstrip("=").lower()

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"ClusterTicket(topic={self.topic_id.hex()[:10]}, peers={len(self.bootstrap)}, join_key=<hidden>)"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ClusterTicket) and other.topic_id == self.topic_id
                and other.join_key == self.join_key and other.bootstrap == self.bootstrap)

    def __hash__(self) -> int:
        return hash((self.topic_id, self.bootstrap))

    @classmethod
    def decode(cls, text: str) -> ClusterTicket:
        """Parse an `aspen...` string; raises TicketError naming the failed check."""
        text = text.strip()
        if len(text) > MAX_TICKET_SIZE:
            raise TicketError("length", f"{len(text)} characters, at most {MAX_TICKET_SIZE}")
        if not text.startswith(TICKET_PREFIX):
            raise TicketError("prefix", f"must start with {TICKET_PREFIX!r}, got {text[:len(TICKET_PREFIX)]!r}")
        data = text[len(TICKET_PREFIX):]
        if data != data.lower():
            raise TicketError("base32", "the base32 part must be lowercase")
        try:
            payload = base64.b32decode(data.upper() + "=" * (-len(data) % 8))
        except (binascii.Error, ValueError):
            raise TicketError("base32", "the text after 'aspen' is not valid base32 (a-z, 2-7)") from None
        return cls.from_bytes(payload)

    @classmethod
    def from_bytes(cls, payload: bytes) -> ClusterTicket:
        if len(payload) < 1 + CHECKSUM_SIZE:
            raise TicketError("length", f"{len(payload)} bytes is too short to be a ticket")
        head, checksum = payload[:-CHECKSUM_SIZE], payload[-CHECKSUM_SIZE:]
        if _checksum(head) != checksum:
            raise TicketError("checksum", "checksum mismatch (the ticket was mistyped or truncated)")
        version = head[0]
        if version != TICKET_VERSION:
            raise TicketError("version", f"ticket version {version} is not supported (this node reads "
                                         f"version {TICKET_VERSION})")
        try:
            body = _DECODER.decode(head[1:])
        except msgspec.ValidationError as exc:
            raise TicketError("encoding", f"bad ticket contents: {exc}") from None
        except msgspec.DecodeError as exc:
            raise TicketError("encoding", f"undecodable ticket contents: {exc}") from None
        if len(body.bootstrap) > MAX_TICKET_BOOTSTRAP_PEERS:
            raise TicketError("too_many_peers", f"{len(body.bootstrap)} bootstrap peers, at most "
                                                f"{MAX_TICKET_BOOTSTRAP_PEERS} (MAX_TICKET_BOOTSTRAP_PEERS)")
        try:
            peers = tuple(EndpointAddr.from_wire(w) for w in body.bootstrap)
        except ValueError as exc:
            raise TicketError("encoding", f"bad bootstrap address: {exc}") from None
        return cls(body.topic_id, body.join_key, peers)


__all__ = ["ClusterTicket", "TicketError", "TICKET_PREFIX", "TICKET_VERSION", "MAX_TICKET_BOOTSTRAP_PEERS"]
