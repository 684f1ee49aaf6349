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


AUTH_TAG_SIZE = 32  # aspen.cluster_secret.MEMBERSHIP_TAG_SIZE


class RaftAuth(msgspec.Struct, tag="raft_auth", frozen=True, array_like=True):
    """First frame of every raft-rpc stream, from the side that opened it: the keyed-blake3 tag
    `ClusterSecret.membership_tag(opener, other side, PURPOSE_RAFT_RPC)`, proving that the
    opener holds the cluster secret. Bound to both endpoint ids, so it cannot be replayed by
    the receiver (or anyone) towards a third node; it travels inside the encrypted connection."""

    tag: Annotated[bytes, msgspec.Meta(min_length=AUTH_TAG_SIZE, max_length=AUTH_TAG_SIZE)]


class RaftFrame(msgspec.Struct, tag="raft_frame", frozen=True, array_like=True):
    from_node: int
    payloads: Annotated[list[bytes], msgspec.Meta(max_length=MAX_MESSAGES_PER_FRAME)]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(RaftFrame)
_auth_decoder = msgspec.msgpack.Decoder(RaftAuth)


def encode_auth(auth: RaftAuth) -> bytes:
    return _encoder.encode(auth)


def decode_auth(body: bytes) -> RaftAuth:
    try:
        return _auth_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise WireDecodeError(f"bad raft-rpc auth frame: {exc}") from None


def encode_frame(frame: RaftFrame) -> bytes:
    return _encoder.encode(frame)


def decode_frame(body: bytes) -> RaftFrame:
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise WireDecodeError(f"bad raft-rpc frame: {exc}") from None
