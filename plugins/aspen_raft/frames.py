"""Wire frames of `raft-rpc`: a batch of encoded Raft messages from one node.

The I/O process never decodes the Raft messages themselves (the worker does); it checks only
that `from_node` is the node the connection's key belongs to. Bounded: a frame is at most
MAX_RPC_MESSAGE_SIZE (checked by the stream reader before the body is read) and carries at most
MAX_MESSAGES_PER_FRAME messages.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from aspen.errors import WireDecodeError

RAFT_ALPN = "raft-rpc"
MAX_MESSAGES_PER_FRAME = 4096  # = MAX_RAFT_BATCH_MESSAGES of the worker protocol
# Small messages are coalesced into frames of at most this many bytes: big enough to batch a
# burst of appends, small enough that the small-message lane stays low-latency. guess: revisit.
SMALL_FRAME_TARGET_SIZE = 256 * 1024


class RaftFrame(msgspec.Struct, tag="raft_frame", frozen=True, array_like=True):
    from_node: int
    payloads: Annotated[list[bytes], msgspec.Meta(max_length=MAX_MESSAGES_PER_FRAME)]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(RaftFrame)


def encode_frame(frame: RaftFrame) -> bytes:
    return _encoder.encode(frame)


def decode_frame(body: bytes) -> RaftFrame:
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise WireDecodeError(f"bad raft-rpc frame: {exc}") from None
