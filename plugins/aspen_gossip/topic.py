"""One gossip topic: HyParView membership + Plumtree broadcast behind one `handle()` (sans-IO).

Rules of this module
--------------------
`Topic` is the only public entry of the core (iroh-gossip's `proto::topic::State`). It owns no
socket, clock, task or global randomness: `Topic(me, secret, config, rng=...)`, then
`handle(event, now_ms) -> list[OutEvent]`. Inputs and outputs are the closed unions of
`aspen_gossip.events` (re-exported here). Timers are data: a `ScheduleTimer(deadline_ms, timer)`
output asks the runtime to call `handle(TimerExpired(timer), now_ms)` once `now_ms >=
deadline_ms`; timers are never cancelled — a stale one is a no-op — so the runtime needs no
handle per timer, only a heap.

What the adapter must do with each output, in order:
- `SendMessage(peer, frame)`: write the frame on this topic's stream to `peer` (stream header
  first, dialing if needed, at most `max_message_size` bytes). If the dial fails, feed
  `DialFailed(peer, reason)`; if an established connection breaks, `PeerDisconnected(peer)`.
- `EmitEvent(event)`: give it to the topic's subscribers (bounded queue, oldest dropped).
- `ScheduleTimer(deadline_ms, timer)`: push on the timer heap.
- `DisconnectPeer(peer, reason)`: finish the stream after the queued frames; close the
  connection when no other topic uses it; count `reason`.
- `PeerData(peer, addr)`: remember that `peer` is dialable at `addr` (address book).

Routing: frames that only neighbors may send (everything except Join, Neighbor, ShuffleReply,
Disconnect) are dropped from non-neighbors (counted, answered with Disconnect); see
`hyparview.py` for the membership authentication and the threat model in `aspen.cluster_secret`.
Counters of refused/dropped input live in `stats` (reason -> count) for the adapter's metrics.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from aspen.addr import EndpointAddrWire
from aspen.cluster_secret import ClusterSecret
from aspen.errors import UsageError

from aspen_gossip.config import MAX_BOOTSTRAP_PEERS, GossipConfig
from aspen_gossip.events import (
    Broadcast,
    DialFailed,
    DispatchLazyPush,
    EmitEvent,
    EvictCache,
    Event,
    InEvent,
    JoinPeers,
    JoinTimeout,
    NeighborDown,
    NeighborRequestTimeout,
    NeighborUp,
    OutEvent,
    PeerData,
    PeerDisconnected,
    PeerFailed,
    PeerId,
    Quit,
    Received,
    RecvMessage,
    ScheduleTimer,
    SendGraft,
    SendMessage,
    ShuffleTimer,
    DisconnectPeer,
    Timer,
    TimerExpired,
    UpdatePeerData,
)
from aspen_gossip.hyparview import HyParView
from aspen_gossip.messages import (
    PEER_ID_SIZE,
    Disconnect,
    ForwardJoin,
    Gossip,
    Graft,
    IHave,
    Join,
    Level,
    Neighbor,
    Prune,
    Shuffle,
    ShuffleReply,
)
from aspen_gossip.plumtree import Plumtree

_GOSSIP_TYPES = (Gossip, Prune, Graft, IHave, Level)
_HYPARVIEW_TIMERS = (ShuffleTimer, JoinTimeout, NeighborRequestTimeout)


class Topic:
    """The gossip state machine of one topic for the local endpoint `me` (raw 32-byte id)."""

    def __init__(self, me: PeerId, secret: ClusterSecret, config: GossipConfig | None = None, *,
                 rng: random.Random, me_addr: EndpointAddrWire | None = None) -> None:
        if len(me) != PEER_ID_SIZE:
            raise UsageError(f"a peer id is {PEER_ID_SIZE} raw bytes, got {len(me)}")
        self.config = (config or GossipConfig()).validate()
        self.me = me
        self.topic_id = secret.topic_id
        self.stats: Counter[str] = Counter()
        self.hyparview = HyParView(me, secret, self.config, rng=rng, stats=self.stats, me_addr=me_addr)
        self.plumtree = Plumtree(me, self.config, stats=self.stats)

    # --- the one entry point ----------------------------------------------------------------

    def handle(self, event: InEvent, now_ms: int) -> list[OutEvent]:
        """Feed one input; returns the outputs to execute in order (see the module docstring).

        Raises LimitExceeded for a Broadcast over max_message_size and UsageError for a bad
        command (both local misuse). Remote garbage never raises.
        """
        out: list[OutEvent] = []
        kind = type(event)
        if kind is RecvMessage:
            assert isinstance(event, RecvMessage)
            self._recv(event.peer, event, now_ms, out)
        elif kind is TimerExpired:
            assert isinstance(event, TimerExpired)
            timer = event.timer
            if isinstance(timer, _HYPARVIEW_TIMERS):
                self._membership(lambda: self.hyparview.on_timer(timer, now_ms, out), out)
            else:
                self.plumtree.on_timer(timer, now_ms, out)
        elif kind is Broadcast:
            assert isinstance(event, Broadcast)
            self.plumtree.broadcast(event.content, event.scope, now_ms, out)
        elif kind is JoinPeers:
            assert isinstance(event, JoinPeers)
            if len(event.peers) > MAX_BOOTSTRAP_PEERS:
                raise UsageError(f"at most {MAX_BOOTSTRAP_PEERS} bootstrap peers per join, got {len(event.peers)}")
            self._membership(lambda: self.hyparview.join(event.peers, now_ms, out), out)
        elif kind is PeerDisconnected:
            assert isinstance(event, PeerDisconnected)
            self._membership(lambda: self.hyparview.on_peer_gone(event.peer, None, now_ms, out), out)
        elif kind is DialFailed:
            assert isinstance(event, DialFailed)
            self._membership(lambda: self.hyparview.on_peer_gone(event.peer, event, now_ms, out), out)
        elif kind is Quit:
            self._membership(lambda: self.hyparview.quit(out), out)
        elif kind is UpdatePeerData:
            assert isinstance(event, UpdatePeerData)
            self.hyparview.me_addr = event.addr
        else:
            raise UsageError(f"not a gossip input: {event!r}")
        return out

    def broadcast(self, content: bytes, now_ms: int, scope: int = 0) -> tuple[bytes, list[OutEvent]]:
        """Convenience for `handle(Broadcast(...))` that also returns the message id."""
        out: list[OutEvent] = []
        message_id = self.plumtree.broadcast(content, scope, now_ms, out)
        return message_id, out

    # --- routing ----------------------------------------------------------------------------

    def _recv(self, peer: PeerId, event: RecvMessage, now_ms: int, out: list[OutEvent]) -> None:
        message = event.message
        if type(message) in _GOSSIP_TYPES:
            if peer in self.hyparview.active:
                self.plumtree.on_message(peer, message, now_ms, out)  # type: ignore[arg-type]
            else:
                self.hyparview.reject_not_neighbor(peer, out)
            return
        self._membership(lambda: self.hyparview.on_message(peer, message, now_ms, out), out)  # type: ignore[arg-type]

    def _membership(self, step: Callable[[], None], out: list[OutEvent]) -> None:
        """Run a HyParView step, then tell Plumtree about the neighbors it added or removed."""
        start = len(out)
        step()
        for index in range(start, len(out)):
            action = out[index]
            if type(action) is EmitEvent:
                event = action.event
                if type(event) is NeighborUp:
                    self.plumtree.neighbor_up(event.peer, out)
                elif type(event) is NeighborDown:
                    self.plumtree.neighbor_down(event.peer, out)

    # --- read-only views --------------------------------------------------------------------

    @property
    def active_view(self) -> list[PeerId]:
        return list(self.hyparview.active)

    @property
    def passive_view(self) -> list[PeerId]:
        return list(self.hyparview.passive)

    @property
    def is_joined(self) -> bool:
        """True while we have at least one neighbor."""
        return bool(self.hyparview.active)


__all__ = [
    "Topic",
    # re-exported unions and their members
    "InEvent", "OutEvent", "Event", "Timer",
    "RecvMessage", "JoinPeers", "Broadcast", "Quit", "TimerExpired", "PeerDisconnected",
    "DialFailed", "UpdatePeerData",
    "SendMessage", "EmitEvent", "ScheduleTimer", "DisconnectPeer", "PeerData",
    "NeighborUp", "NeighborDown", "Received", "PeerFailed",
    "ShuffleTimer", "JoinTimeout", "NeighborRequestTimeout", "SendGraft", "DispatchLazyPush",
    "EvictCache",
]
