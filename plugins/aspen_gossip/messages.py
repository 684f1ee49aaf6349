"""Wire messages of the gossip protocol (one topic's frames), as msgspec Structs.

Frames on a topic stream: a `StreamHeader(topic_id)` first, then `Frame`s (HyParView membership
messages and Plumtree broadcast messages), each 4-byte big-endian length + MessagePack, the
length checked against the configured `max_message_size` *before* the body is read (iroh-gossip
does the same with postcard, iroh-protocols.md §6.1). Structs are `array_like` (positional and
compact) with small integer tags that follow iroh-gossip's variant order; new fields are appended
with defaults; tags are never reused.

Peer ids on the wire are raw 32-byte endpoint ids (`bytes`), which is also what the sans-IO core
uses as peer identifiers (hashable, cheap; the adapter converts with `EndpointId(raw)`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from aspen.addr import EndpointAddrWire

PEER_ID_SIZE = 32  # Ed25519 public key
MESSAGE_ID_SIZE = 32  # blake3 digest of the content (iroh-protocols.md §6.2)
TOPIC_ID_SIZE = 32
MEMBERSHIP_TAG_SIZE = 32  # aspen.cluster_secret.MEMBERSHIP_TAG_SIZE
MAX_ROUND = 65_535  # iroh-gossip's Round is a u16
MAX_TTL = 255  # random walks are 6 hops long by default; anything near 255 is garbage
# Absolute ceiling for any frame, whatever `max_message_size` says (64 KiB): the decoder's own
# bound, so a misconfigured node cannot be made to allocate more.
MAX_FRAME_SIZE = 65_536
# A Shuffle carries <= active(3) + passive(4) + origin; a ShuffleReply as many back. Bound with room.
MAX_SHUFFLE_NODES = 64
# IHave batching chunk (iroh: (max_payload - 3) / 35 per message; 4096 -> 116). Bound with room.
MAX_IHAVE_ENTRIES = 256
# Anchor-tree levels (aspen_gossip.tree): hops to the anchor. A level at this bound means "no
# route" (RIP's 16 plays the same part): it ends counting to infinity after the anchor dies.
# A HyParView overlay of active view 5 has diameter ~7 at 1,000 nodes and grows with log N, so
# 32 leaves room for far larger swarms while bounding a failover to ~32 rounds of Level frames.
MAX_TREE_LEVEL = 32

PeerIdBytes = Annotated[bytes, msgspec.Meta(min_length=PEER_ID_SIZE, max_length=PEER_ID_SIZE)]
MessageIdBytes = Annotated[bytes, msgspec.Meta(min_length=MESSAGE_ID_SIZE, max_length=MESSAGE_ID_SIZE)]
TagBytes = Annotated[bytes, msgspec.Meta(min_length=MEMBERSHIP_TAG_SIZE, max_length=MEMBERSHIP_TAG_SIZE)]
Round = Annotated[int, msgspec.Meta(ge=0, le=MAX_ROUND)]
Ttl = Annotated[int, msgspec.Meta(ge=0, le=MAX_TTL)]

PRIORITY_HIGH = 0  # HyParView paper §4.3: "high priority" neighbor request (active view empty)
PRIORITY_LOW = 1


class StreamHeader(msgspec.Struct, frozen=True, array_like=True, tag=100):
    """First frame of a topic stream: which topic the following frames belong to."""

    topic_id: Annotated[bytes, msgspec.Meta(min_length=TOPIC_ID_SIZE, max_length=TOPIC_ID_SIZE)]


class PeerInfo(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A peer as carried in membership messages: id and (optionally) how to dial it."""

    peer_id: PeerIdBytes
    addr: EndpointAddrWire | None = None


# --- HyParView (swarm membership) -----------------------------------------------------------


class Join(msgspec.Struct, frozen=True, array_like=True, tag=0, gc=False):
    """Newcomer -> contact: add me to your active view. `tag` proves the join key."""

    tag: TagBytes
    addr: EndpointAddrWire | None = None


class ForwardJoin(msgspec.Struct, frozen=True, array_like=True, tag=1, gc=False):
    """Random walk announcing a newcomer (paper §4.2); `ttl` counts down from ARWL."""

    peer: PeerInfo
    ttl: Ttl


class Shuffle(msgspec.Struct, frozen=True, array_like=True, tag=2, gc=False):
    """Random walk carrying a sample of the origin's views (paper §4.4)."""

    origin: PeerInfo
    nodes: Annotated[list[PeerInfo], msgspec.Meta(max_length=MAX_SHUFFLE_NODES)]
    ttl: Ttl


class ShuffleReply(msgspec.Struct, frozen=True, array_like=True, tag=3, gc=False):
    """End of a shuffle walk -> origin (a fresh connection, so it carries the membership tag)."""

    tag: TagBytes
    nodes: Annotated[list[PeerInfo], msgspec.Meta(max_length=MAX_SHUFFLE_NODES)]


class Neighbor(msgspec.Struct, frozen=True, array_like=True, tag=4, gc=False):
    """Neighbor request / acceptance (paper §4.3). `priority` is PRIORITY_HIGH or PRIORITY_LOW."""

    priority: Annotated[int, msgspec.Meta(ge=PRIORITY_HIGH, le=PRIORITY_LOW)]
    tag: TagBytes
    addr: EndpointAddrWire | None = None


class Disconnect(msgspec.Struct, frozen=True, array_like=True, tag=5, gc=False):
    """Leave the receiver's active view; `alive` = keep me in your passive view."""

    alive: bool


# --- Plumtree (broadcast) -------------------------------------------------------------------

SCOPE_SWARM = 0  # forwarded through the whole topic
SCOPE_NEIGHBORS = 1  # one hop only, never forwarded, not deduplicated across hops


class Gossip(msgspec.Struct, frozen=True, array_like=True, tag=10, gc=False):
    """A payload. `message_id` = blake3(content) (checked on receipt); `round` = hops so far - 1."""

    message_id: MessageIdBytes
    content: bytes
    round: Round
    scope: Annotated[int, msgspec.Meta(ge=SCOPE_SWARM, le=SCOPE_NEIGHBORS)] = SCOPE_SWARM


class Prune(msgspec.Struct, frozen=True, array_like=True, tag=11, gc=False):
    """Move me (the sender) to your lazy set."""


class Graft(msgspec.Struct, frozen=True, array_like=True, tag=12, gc=False):
    """Move me to your eager set and, if `message_id` is given, send me that payload."""

    message_id: MessageIdBytes | None
    round: Round


class IHaveEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    message_id: MessageIdBytes
    round: Round


class IHave(msgspec.Struct, frozen=True, array_like=True, tag=13, gc=False):
    """Lazy push: ids (and rounds) of payloads the sender holds."""

    entries: Annotated[list[IHaveEntry], msgspec.Meta(max_length=MAX_IHAVE_ENTRIES)]


class Level(msgspec.Struct, frozen=True, array_like=True, tag=14, gc=False):
    """Anchor-tree state of the sender (aspen_gossip.tree): its anchor, its hops to it, and
    whether the receiver is its uplink (the receiver then pushes payloads to it)."""

    anchor: PeerIdBytes
    level: Annotated[int, msgspec.Meta(ge=0, le=MAX_TREE_LEVEL)]
    uplink: bool
    # the sender's ancestor at level 1 (itself at level 1; empty at level 0): the tie-break
    # between equal uplinks (aspen_gossip.tree, "branch")
    branch: Annotated[bytes, msgspec.Meta(max_length=PEER_ID_SIZE)] = b""


SwarmMessage = Join | ForwardJoin | Shuffle | ShuffleReply | Neighbor | Disconnect
GossipMessage = Gossip | Prune | Graft | IHave | Level
Frame = (Join | ForwardJoin | Shuffle | ShuffleReply | Neighbor | Disconnect | Gossip | Prune | Graft
         | IHave | Level)

_ENCODER = msgspec.msgpack.Encoder()
_FRAME_DECODER: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)
_HEADER_DECODER = msgspec.msgpack.Decoder(StreamHeader)


def encode_frame(frame: Frame | StreamHeader) -> bytes:
    """MessagePack body of `frame` (without the length prefix)."""
    return _ENCODER.encode(frame)


def decode_frame(body: bytes) -> Frame:
    """Decode one frame body; raises msgspec.ValidationError/DecodeError on garbage.

    The caller (adapter) has already checked the length prefix against max_message_size.
    """
    return _FRAME_DECODER.decode(body)


def decode_stream_header(body: bytes) -> StreamHeader:
    return _HEADER_DECODER.decode(body)


def encoded_gossip_size(content_size_bytes: int, round_: int = 0) -> int:
    """Exact encoded size of a swarm Gossip frame carrying `content_size_bytes` of content."""
    return len(_ENCODER.encode(Gossip(bytes(MESSAGE_ID_SIZE), bytes(content_size_bytes), round_)))


__all__ = [
    "StreamHeader", "PeerInfo", "Join", "ForwardJoin", "Shuffle", "ShuffleReply", "Neighbor",
    "Disconnect", "Gossip", "Prune", "Graft", "IHave", "IHaveEntry", "Level", "Frame", "SwarmMessage",
    "GossipMessage", "encode_frame", "decode_frame", "decode_stream_header", "encoded_gossip_size",
    "PRIORITY_HIGH", "PRIORITY_LOW", "SCOPE_SWARM", "SCOPE_NEIGHBORS", "MAX_FRAME_SIZE",
    "MAX_ROUND", "MAX_TTL", "MAX_SHUFFLE_NODES", "MAX_IHAVE_ENTRIES", "MAX_TREE_LEVEL",
]
