"""Wire framing and limits shared by every boundary (network streams and the process rings).

A frame is a 4-byte big-endian length followed by a msgspec MessagePack body. The length is
checked against the limit *before* the body is read or allocated (msgspec's asyncio-kv example
trusts the prefix; we do not). Typed message unions live next to their protocol
(`aspen.raft.messages`, `aspen.worker_messages`, ...), and all use the helpers here.
"""

from __future__ import annotations

import struct

from aspen.errors import LimitExceeded, WireDecodeError
from aspen.units import MiB

# DESIGN.md "Bounded everything": the largest RPC message (AppendEntries, snapshot chunk) is
# 10 MiB, as in the Rust Aspen (its MAX_RPC_MESSAGE_SIZE).
MAX_RPC_MESSAGE_SIZE = 10 * MiB
FRAME_HEADER_SIZE = 4
_HEADER = struct.Struct(">I")


def encode_frame_header(body_size: int, *, limit: int = MAX_RPC_MESSAGE_SIZE) -> bytes:
    """The 4-byte header for a body of `body_size` bytes; raises LimitExceeded over `limit`."""
    if body_size > limit:
        raise LimitExceeded("MAX_RPC_MESSAGE_SIZE", body_size, limit)
    return _HEADER.pack(body_size)


def frame(body: bytes, *, limit: int = MAX_RPC_MESSAGE_SIZE) -> bytes:
    """`body` with its length prefix; raises LimitExceeded if the body is over `limit`."""
    return encode_frame_header(len(body), limit=limit) + body


def decode_frame_header(header: bytes, *, limit: int = MAX_RPC_MESSAGE_SIZE) -> int:
    """The body length announced by a 4-byte header, checked against `limit` before any read.

    Raises WireDecodeError for a short header and LimitExceeded for an oversized announcement.
    """
    if len(header) != FRAME_HEADER_SIZE:
        raise WireDecodeError(f"frame header is {FRAME_HEADER_SIZE} bytes, got {len(header)}")
    (size,) = _HEADER.unpack(header)
    if size > limit:
        raise LimitExceeded("MAX_RPC_MESSAGE_SIZE", size, limit)
    return int(size)


__all__ = [
    "MAX_RPC_MESSAGE_SIZE",
    "FRAME_HEADER_SIZE",
    "encode_frame_header",
    "frame",
    "decode_frame_header",
]
