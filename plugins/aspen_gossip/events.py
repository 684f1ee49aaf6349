"""Inputs, outputs, application events and timers of the gossip core (closed unions).

Re-exported by `aspen_gossip.topic`, which is where users meet them. Kept apart so that
`hyparview.py` and `plumtree.py` can build outputs without importing `topic.py`.

Peer ids are raw 32-byte endpoint ids (`bytes`). None of these types goes on the wire; they are
frozen `gc=False` Structs because the simulator creates millions of them.
"""

from __future__ import annotations

import msgspec

from aspen.addr import EndpointAddrWire

from aspen_gossip.messages import Frame, PeerInfo

PeerId = bytes

# --- Timers: data the runtime keeps and echoes back in TimerExpired --------------------------


class ShuffleTimer(msgspec.Struct, frozen=True, gc=False):
    """Time to start a shuffle random walk (HyParView §4.4)."""


class JoinTimeout(msgspec.Struct, frozen=True, gc=False):
    """A Join sent to `peer` may have gone unanswered."""

    peer: PeerId


class NeighborRequestTimeout(msgspec.Struct, frozen=True, gc=False):
    """A Neighbor request sent to `peer` may have gone unanswered."""

    peer: PeerId


class SendGraft(msgspec.Struct, frozen=True, gc=False):
    """A payload announced by IHave has not arrived: graft the next announcer (Plumtree §3.5)."""

    message_id: bytes


class DispatchLazyPush(msgspec.Struct, frozen=True, gc=False):
    """Flush the queued IHave entries (batching window over)."""


class EvictCache(msgspec.Struct, frozen=True, gc=False):
    """Drop expired payloads and seen ids."""


Timer = ShuffleTimer | JoinTimeout | NeighborRequestTimeout | SendGraft | DispatchLazyPush | EvictCache

# --- Events for the application -------------------------------------------------------------


class NeighborUp(msgspec.Struct, frozen=True, gc=False):
    """`peer` entered our active view (the first one means "joined")."""

    peer: PeerId


class NeighborDown(msgspec.Struct, frozen=True, gc=False):
    """`peer` left our active view."""

    peer: PeerId


class Received(msgspec.Struct, frozen=True, gc=False):
    """A payload delivered for the first time. `delivered_from` is the previous hop, not the
    author (authenticate the author inside the content, as announcements do)."""

    content: bytes
    message_id: bytes
    delivered_from: PeerId
    scope: int
    round: int


class PeerFailed(msgspec.Struct, frozen=True, gc=False):
    """A peer we tried to reach did not answer or could not be dialed (iroh-gossip #71, #100:
    joins must not hang silently). `reason` is one of the REASON_* strings of `hyparview`."""

    peer: PeerId
    reason: str


Event = NeighborUp | NeighborDown | Received | PeerFailed

# --- Inputs ---------------------------------------------------------------------------------


class RecvMessage(msgspec.Struct, frozen=True, gc=False):
    """A frame arrived from `peer` (whose endpoint key the transport authenticated)."""

    peer: PeerId
    message: Frame


class JoinPeers(msgspec.Struct, frozen=True, gc=False):
    """Command: join the topic through these bootstrap peers (ticket, config, discovery)."""

    peers: tuple[PeerInfo, ...]


class Broadcast(msgspec.Struct, frozen=True, gc=False):
    """Command: publish `content` (scope SCOPE_SWARM or SCOPE_NEIGHBORS). Raises LimitExceeded
    from `handle()` when the encoded frame would exceed `max_message_size`."""

    content: bytes
    scope: int = 0


class Quit(msgspec.Struct, frozen=True, gc=False):
    """Command: leave the topic (Disconnect{alive: false} to every neighbor)."""


class TimerExpired(msgspec.Struct, frozen=True, gc=False):
    """A timer returned in ScheduleTimer is due."""

    timer: Timer


class PeerDisconnected(msgspec.Struct, frozen=True, gc=False):
    """The connection to `peer` broke (closed, reset, idle timeout) after it was established."""

    peer: PeerId
    reason: str = ""


class DialFailed(msgspec.Struct, frozen=True, gc=False):
    """The adapter could not connect to `peer` to send it a frame."""

    peer: PeerId
    reason: str = ""


class UpdatePeerData(msgspec.Struct, frozen=True, gc=False):
    """Our own address changed; it is sent along in later Join/Neighbor/Shuffle messages."""

    addr: EndpointAddrWire | None


InEvent = (RecvMessage | JoinPeers | Broadcast | Quit | TimerExpired | PeerDisconnected | DialFailed
           | UpdatePeerData)

# --- Outputs --------------------------------------------------------------------------------


class SendMessage(msgspec.Struct, frozen=True, gc=False):
    """Send `message` to `peer` on this topic's stream (dial first if needed; a failed dial is
    reported back as DialFailed)."""

    peer: PeerId
    message: Frame


class EmitEvent(msgspec.Struct, frozen=True, gc=False):
    """Hand `event` to the application (subscribers of the topic)."""

    event: Event


class ScheduleTimer(msgspec.Struct, frozen=True, gc=False):
    """Call handle(TimerExpired(timer), now_ms) once now_ms >= deadline_ms (absolute, ms)."""

    deadline_ms: int
    timer: Timer


class DisconnectPeer(msgspec.Struct, frozen=True, gc=False):
    """Finish this topic's stream to `peer` after the frames already queued for it (close the
    connection if no other topic uses it). `reason` names why, for logs and counters."""

    peer: PeerId
    reason: str


class PeerData(msgspec.Struct, frozen=True, gc=False):
    """`peer` can be dialed at `addr` (learned from Join/ForwardJoin/Neighbor/Shuffle)."""

    peer: PeerId
    addr: EndpointAddrWire


OutEvent = SendMessage | EmitEvent | ScheduleTimer | DisconnectPeer | PeerData

__all__ = [
    "PeerId", "ShuffleTimer", "JoinTimeout", "NeighborRequestTimeout", "SendGraft",
    "DispatchLazyPush", "EvictCache", "Timer", "NeighborUp", "NeighborDown", "Received",
    "PeerFailed", "Event", "RecvMessage", "JoinPeers", "Broadcast", "Quit", "TimerExpired",
    "PeerDisconnected", "DialFailed", "UpdatePeerData", "InEvent", "SendMessage", "EmitEvent",
    "ScheduleTimer", "DisconnectPeer", "PeerData", "OutEvent",
]
