"""HyParView membership for one topic, sans-IO (Leitão, Pereira, Rodrigues, DSN 2007).

Rules of this module
--------------------
- No I/O, no clock, no global randomness: time comes in as `now_ms`, randomness as the
  `random.Random` handed to the constructor, and every output is appended to the `out` list the
  caller passes (`aspen_gossip.topic.Topic` owns that list and returns it from `handle()`).
- Peer ids are raw 32-byte endpoint ids, already authenticated by the transport.
- Remote garbage never raises: it is counted in `stats` (reason -> count) and answered with a
  `DisconnectPeer`.

Theory of operation
-------------------
Each node keeps a small symmetric *active view* (default 5; these are the peers we hold
connections to and gossip with) and a larger *passive view* (default 30; addresses of members
to fall back on). A newcomer sends `Join` to a contact (bootstrap peer); the contact always
takes it into its active view and sends `ForwardJoin(ttl=ARWL)` random walks through its other
neighbors; where a walk ends (ttl 0, or a node with <= 1 neighbor) the newcomer is asked to be a
neighbor, and nodes passed at ttl == PRWL remember it in their passive view (paper §4.2).
`Neighbor(High)` is always accepted (evicting a random neighbor, which gets `Disconnect{alive}`),
`Neighbor(Low)` only into a free slot (paper §4.3). When a neighbor disconnects or its
connection breaks, random passive peers are asked to fill the slot (High priority if we have no
neighbor left), one request per free slot, each with a timeout; an unanswered or undialable
peer is dropped from the passive view and the next one is tried. Every `shuffle_interval_ms`
a random walk exchanges a sample of active+passive peers, keeping passive views fresh (§4.4).

Deviations from the paper, all from iroh-gossip (iroh-protocols.md §6.3) unless said:
- A forward-join walk that ends at us does not add the newcomer directly; we send
  `Neighbor(High)` and add it when the newcomer answers (avoids unreachable neighbors).
- A refused neighbor request is answered with `ShuffleReply` (a sample of our views) before the
  `Disconnect`, so a fresh node does not starve.
- Aspen: membership is authenticated. `Join`, `Neighbor` and `ShuffleReply` — the only frames
  accepted from a peer outside our active view — carry `ClusterSecret.membership_tag(sender,
  receiver)`; a missing/wrong tag is refused. All other frames are accepted only from active
  neighbors (who proved the key when they entered the view); from anyone else they are dropped
  and answered with `Disconnect{alive}`, which also repairs one-sided links.
- Aspen: failed dials and unanswered joins/neighbor requests are reported as `PeerFailed`
  events (iroh-gossip #71/#100: joins hung silently).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from aspen.addr import EndpointAddrWire
from aspen.cluster_secret import ClusterSecret

from aspen_gossip.config import GossipConfig
from aspen_gossip.events import (
    DialFailed,
    DisconnectPeer,
    EmitEvent,
    JoinTimeout,
    NeighborDown,
    NeighborRequestTimeout,
    NeighborUp,
    OutEvent,
    PeerData,
    PeerFailed,
    PeerId,
    ScheduleTimer,
    SendMessage,
    ShuffleTimer,
    Timer,
)
from aspen_gossip.messages import (
    PRIORITY_HIGH,
    PRIORITY_LOW,
    Disconnect,
    ForwardJoin,
    Join,
    Neighbor,
    PeerInfo,
    Shuffle,
    ShuffleReply,
    SwarmMessage,
)

# PeerFailed reasons (also the keys of the failure counters)
REASON_JOIN_TIMEOUT = "join_timeout"
REASON_NEIGHBOR_TIMEOUT = "neighbor_request_timeout"
REASON_DIAL_FAILED = "dial_failed"
# stats keys for refused frames
REJECT_BAD_TAG = "rejected_bad_membership_tag"
REJECT_NOT_NEIGHBOR = "rejected_not_neighbor"

_PENDING_JOIN = 0
_PENDING_NEIGHBOR = 1

_SHUFFLE_TIMER = ShuffleTimer()


class HyParView:
    """Membership state of one topic. Driven by `aspen_gossip.topic.Topic`."""

    def __init__(self, me: PeerId, secret: ClusterSecret, config: GossipConfig, *,
                 rng: random.Random, stats: Counter[str], me_addr: EndpointAddrWire | None = None) -> None:
        config.validate()
        self.me = me
        self.me_addr = me_addr
        self.config = config
        self._secret = secret
        self._rng = rng
        self.stats = stats
        # insertion-ordered dicts: peer -> last known address (or None)
        self.active: dict[PeerId, EndpointAddrWire | None] = {}
        self.passive: dict[PeerId, EndpointAddrWire | None] = {}
        self.pending: dict[PeerId, int] = {}  # peer -> _PENDING_JOIN | _PENDING_NEIGHBOR
        self._shuffle_started = False
        self._tags: dict[PeerId, bytes] = {}  # our tag per receiver (cache; bounded by views)

    # --- helpers ----------------------------------------------------------------------------

    def _tag_for(self, peer: PeerId) -> bytes:
        tag = self._tags.get(peer)
        if tag is None:
            if len(self._tags) > 4 * (self.config.active_view_capacity + self.config.passive_view_capacity):
                self._tags.clear()  # bounded cache: recomputing a tag is cheap
            tag = self._secret.membership_tag(self.me, peer)
            self._tags[peer] = tag
        return tag

    def _tag_ok(self, peer: PeerId, tag: bytes, out: list[OutEvent]) -> bool:
        if self._secret.verify_membership_tag(tag, peer, self.me):
            return True
        self.stats[REJECT_BAD_TAG] += 1
        out.append(DisconnectPeer(peer, REJECT_BAD_TAG))
        return False

    def _sample(self, view: dict[PeerId, EndpointAddrWire | None], count: int,
                exclude: tuple[PeerId, ...]) -> list[PeerInfo]:
        candidates = [p for p in view if p not in exclude]
        if len(candidates) > count:
            candidates = self._rng.sample(candidates, count)
        return [PeerInfo(p, view[p]) for p in candidates]

    def _random_active(self, exclude: tuple[PeerId, ...]) -> PeerId | None:
        candidates = [p for p in self.active if p not in exclude]
        return self._rng.choice(candidates) if candidates else None

    def is_active_full(self) -> bool:
        return len(self.active) >= self.config.active_view_capacity

    def _start_shuffle(self, now_ms: int, out: list[OutEvent]) -> None:
        if not self._shuffle_started:
            self._shuffle_started = True
            # jitter the first shuffle so a simultaneous start does not synchronise the swarm
            first_ms = self.config.shuffle_interval_ms // 2 + self._rng.randrange(self.config.shuffle_interval_ms)
            out.append(ScheduleTimer(now_ms + first_ms, _SHUFFLE_TIMER))

    # --- views ------------------------------------------------------------------------------

    def add_passive(self, peer: PeerId, addr: EndpointAddrWire | None, out: list[OutEvent]) -> None:
        if peer == self.me or peer in self.active:
            return
        if peer in self.passive:
            if addr is not None and self.passive[peer] != addr:
                self.passive[peer] = addr
                out.append(PeerData(peer, addr))
            return
        if len(self.passive) >= self.config.passive_view_capacity:
            victim = self._rng.choice(list(self.passive))
            del self.passive[victim]
        self.passive[peer] = addr
        if addr is not None:
            out.append(PeerData(peer, addr))

    def _add_active(self, peer: PeerId, addr: EndpointAddrWire | None, priority: int, *,
                    reply: bool, now_ms: int, out: list[OutEvent]) -> bool:
        """Take `peer` into the active view if `priority` allows; `reply` = send it Neighbor."""
        if peer == self.me:
            return False
        if peer in self.active:
            if addr is not None:
                self.active[peer] = addr
            return True
        if self.is_active_full():
            if priority != PRIORITY_HIGH:
                return False
            victim = self._random_active(())
            assert victim is not None
            self._remove_active(victim, "evicted", send_disconnect=True, keep_passive=True, out=out)
        self.passive.pop(peer, None)
        self.active[peer] = addr
        if addr is not None:
            out.append(PeerData(peer, addr))
        if reply:
            out.append(SendMessage(peer, Neighbor(priority, self._tag_for(peer), self.me_addr)))
        out.append(EmitEvent(NeighborUp(peer)))
        return True

    def _remove_active(self, peer: PeerId, reason: str, *, send_disconnect: bool, keep_passive: bool,
                       out: list[OutEvent]) -> None:
        addr = self.active.pop(peer)
        if send_disconnect:
            out.append(SendMessage(peer, Disconnect(True)))
            out.append(DisconnectPeer(peer, reason))
        out.append(EmitEvent(NeighborDown(peer)))
        if keep_passive:
            self.add_passive(peer, addr, out)

    def _send_neighbor(self, peer: PeerId, priority: int, now_ms: int, out: list[OutEvent]) -> None:
        if peer in self.pending or peer in self.active or peer == self.me:
            return
        self.pending[peer] = _PENDING_NEIGHBOR
        out.append(SendMessage(peer, Neighbor(priority, self._tag_for(peer), self.me_addr)))
        out.append(ScheduleTimer(now_ms + self.config.neighbor_request_timeout_ms, NeighborRequestTimeout(peer)))

    def refill(self, now_ms: int, out: list[OutEvent], skip: tuple[PeerId, ...] = ()) -> None:
        """Ask random passive peers to fill free active slots (paper §4.3, p7); never `skip`."""
        capacity = self.config.active_view_capacity
        while len(self.active) + len(self.pending) < capacity:
            candidates = [p for p in self.passive if p not in self.pending and p not in skip]
            if not candidates:
                return
            peer = self._rng.choice(candidates)
            priority = PRIORITY_HIGH if not self.active else PRIORITY_LOW
            self._send_neighbor(peer, priority, now_ms, out)

    # --- commands ---------------------------------------------------------------------------

    def join(self, peers: Sequence[PeerInfo], now_ms: int, out: list[OutEvent]) -> None:
        """Send Join to each bootstrap peer; each unanswered one is reported after join_timeout_ms."""
        self._start_shuffle(now_ms, out)
        for info in peers:
            peer = info.peer_id
            if peer == self.me or peer in self.active or self.pending.get(peer) == _PENDING_JOIN:
                continue
            self.pending[peer] = _PENDING_JOIN
            out.append(SendMessage(peer, Join(self._tag_for(peer), self.me_addr)))
            out.append(ScheduleTimer(now_ms + self.config.join_timeout_ms, JoinTimeout(peer)))

    def quit(self, out: list[OutEvent]) -> None:
        for peer in list(self.active):
            out.append(SendMessage(peer, Disconnect(False)))
            out.append(DisconnectPeer(peer, "quit"))
            del self.active[peer]
            out.append(EmitEvent(NeighborDown(peer)))
        self.pending.clear()

    # --- inputs -----------------------------------------------------------------------------

    def on_message(self, peer: PeerId, message: SwarmMessage, now_ms: int, out: list[OutEvent]) -> None:
        """Handle a membership frame from the (transport-authenticated) `peer`."""
        kind = type(message)
        if kind is Join:
            assert isinstance(message, Join)
            if self._tag_ok(peer, message.tag, out):
                self._on_join(peer, message, now_ms, out)
        elif kind is Neighbor:
            assert isinstance(message, Neighbor)
            if self._tag_ok(peer, message.tag, out):
                self._on_neighbor(peer, message, now_ms, out)
        elif kind is ShuffleReply:
            assert isinstance(message, ShuffleReply)
            if self._tag_ok(peer, message.tag, out):
                self._on_shuffle_reply(peer, message, now_ms, out)
        elif kind is Disconnect:
            assert isinstance(message, Disconnect)
            self._on_disconnect(peer, message, now_ms, out)
        elif peer not in self.active:
            self.reject_not_neighbor(peer, out)
        elif kind is ForwardJoin:
            assert isinstance(message, ForwardJoin)
            self._on_forward_join(peer, message, now_ms, out)
        elif kind is Shuffle:
            assert isinstance(message, Shuffle)
            self._on_shuffle(peer, message, now_ms, out)

    def reject_not_neighbor(self, peer: PeerId, out: list[OutEvent]) -> None:
        """A frame that needs an active link came from a non-neighbor: drop it, tell the peer."""
        self.stats[REJECT_NOT_NEIGHBOR] += 1
        if peer not in self.pending:
            out.append(SendMessage(peer, Disconnect(True)))
            out.append(DisconnectPeer(peer, REJECT_NOT_NEIGHBOR))

    def _on_join(self, peer: PeerId, message: Join, now_ms: int, out: list[OutEvent]) -> None:
        self._start_shuffle(now_ms, out)
        was_active = peer in self.active
        self.pending.pop(peer, None)
        if was_active:
            # a re-join (the peer restarted or lost our Neighbor): confirm, do not walk again
            out.append(SendMessage(peer, Neighbor(PRIORITY_HIGH, self._tag_for(peer), self.me_addr)))
            return
        # paper (6): "add the new node to its active view, even if it has to drop a random node"
        self._add_active(peer, message.addr, PRIORITY_HIGH, reply=True, now_ms=now_ms, out=out)
        # paper (7): ForwardJoin to all other active peers
        info = PeerInfo(peer, message.addr)
        walk = ForwardJoin(info, self.config.active_random_walk_length)
        for other in self.active:
            if other != peer:
                out.append(SendMessage(other, walk))

    def _on_forward_join(self, sender: PeerId, message: ForwardJoin, now_ms: int, out: list[OutEvent]) -> None:
        newcomer = message.peer.peer_id
        if newcomer == self.me or newcomer in self.active:
            return
        if message.ttl == 0 or len(self.active) <= 1:
            # paper (i), iroh's modification: ask it, add it when it answers
            if message.peer.addr is not None:
                out.append(PeerData(newcomer, message.peer.addr))
            self._send_neighbor(newcomer, PRIORITY_HIGH, now_ms, out)
            return
        if message.ttl == self.config.passive_random_walk_length:
            self.add_passive(newcomer, message.peer.addr, out)  # paper (ii)
        nxt = self._random_active((sender, newcomer))
        if nxt is None:
            if message.peer.addr is not None:
                out.append(PeerData(newcomer, message.peer.addr))
            self._send_neighbor(newcomer, PRIORITY_HIGH, now_ms, out)
        else:
            out.append(SendMessage(nxt, ForwardJoin(message.peer, message.ttl - 1)))  # (iii), (iv)

    def _on_neighbor(self, peer: PeerId, message: Neighbor, now_ms: int, out: list[OutEvent]) -> None:
        was_pending = self.pending.pop(peer, None) is not None
        # A Neighbor that answers our own Join/Neighbor means the peer already took us in: no echo.
        if self._add_active(peer, message.addr, message.priority, reply=not was_pending, now_ms=now_ms, out=out):
            return
        # refused (low priority, view full): hand it a sample first so it does not starve
        sample = self._sample(self.active, self.config.shuffle_active_view_count, (peer,))
        sample += self._sample(self.passive, self.config.shuffle_passive_view_count, (peer,))
        out.append(SendMessage(peer, ShuffleReply(self._tag_for(peer), sample)))
        out.append(SendMessage(peer, Disconnect(True)))
        out.append(DisconnectPeer(peer, "neighbor_refused"))
        self.add_passive(peer, message.addr, out)

    def _on_disconnect(self, peer: PeerId, message: Disconnect, now_ms: int, out: list[OutEvent]) -> None:
        was_pending = self.pending.pop(peer, None) is not None
        if peer in self.active:
            self._remove_active(peer, "disconnect_received", send_disconnect=False, keep_passive=message.alive,
                                out=out)
            out.append(DisconnectPeer(peer, "disconnect_received"))
        elif not was_pending:
            return  # stale or unsolicited: never answer a Disconnect with a Disconnect
        elif message.alive:
            self.passive.setdefault(peer, None)  # refused us but is alive: keep as a fallback
        if not message.alive:
            self.passive.pop(peer, None)
        if was_pending and self.active:
            # A refused request with neighbors left: asking the next passive peer at once would
            # ping-pong with full nodes forever (every refusal triggering a request); the next
            # shuffle tick retries. With no neighbor at all we keep trying now.
            return
        self.refill(now_ms, out, skip=(peer,))

    def _on_shuffle(self, sender: PeerId, message: Shuffle, now_ms: int, out: list[OutEvent]) -> None:
        origin = message.origin.peer_id
        if origin == self.me:
            return
        if message.ttl > 0 and len(self.active) > 1:
            nxt = self._random_active((sender, origin))
            if nxt is not None:
                out.append(SendMessage(nxt, Shuffle(message.origin, message.nodes, message.ttl - 1)))
                return
        # the walk ends here: answer with as many of our passive peers, then keep theirs
        reply = self._sample(self.passive, len(message.nodes) + 1, (origin,))
        out.append(SendMessage(origin, ShuffleReply(self._tag_for(origin), reply)))
        for info in (message.origin, *message.nodes):
            self.add_passive(info.peer_id, info.addr, out)

    def _on_shuffle_reply(self, peer: PeerId, message: ShuffleReply, now_ms: int, out: list[OutEvent]) -> None:
        for info in message.nodes:
            self.add_passive(info.peer_id, info.addr, out)
        if peer not in self.active and peer not in self.pending:
            out.append(DisconnectPeer(peer, "shuffle_done"))
        self.refill(now_ms, out)

    def on_timer(self, timer: Timer, now_ms: int, out: list[OutEvent]) -> None:
        kind = type(timer)
        if kind is ShuffleTimer:
            self._do_shuffle(now_ms, out)
        elif kind is NeighborRequestTimeout or kind is JoinTimeout:
            assert isinstance(timer, (NeighborRequestTimeout, JoinTimeout))
            expected = _PENDING_JOIN if kind is JoinTimeout else _PENDING_NEIGHBOR
            if self.pending.get(timer.peer) != expected:
                return  # answered (or superseded) in time
            del self.pending[timer.peer]
            self.passive.pop(timer.peer, None)
            reason = REASON_JOIN_TIMEOUT if kind is JoinTimeout else REASON_NEIGHBOR_TIMEOUT
            self.stats[reason] += 1
            out.append(EmitEvent(PeerFailed(timer.peer, reason)))
            out.append(DisconnectPeer(timer.peer, reason))
            self.refill(now_ms, out)

    def _do_shuffle(self, now_ms: int, out: list[OutEvent]) -> None:
        out.append(ScheduleTimer(now_ms + self.config.shuffle_interval_ms, _SHUFFLE_TIMER))
        target = self._random_active(())
        if target is None or not self.is_active_full():
            self.refill(now_ms, out)
        elif self._rng.random() < self.config.active_refresh_probability:
            # Aspen addition: a group of active_view_capacity + 1 nodes that are all each other's
            # neighbors (a closed clique; seen in 1,000-node simulations after bootstrap) never
            # refills and never hears of the rest again: shuffles walk active links only. Now and
            # then swap one neighbor for a random passive peer with a high-priority request, which
            # the other side always accepts, so such islands reconnect.
            candidates = [p for p in self.passive if p not in self.pending]
            if candidates:
                self._send_neighbor(self._rng.choice(candidates), PRIORITY_HIGH, now_ms, out)
        if target is None:
            return
        nodes = self._sample(self.active, self.config.shuffle_active_view_count, (target,))
        nodes += self._sample(self.passive, self.config.shuffle_passive_view_count, (target,))
        out.append(SendMessage(target, Shuffle(PeerInfo(self.me, self.me_addr), nodes,
                                               self.config.shuffle_random_walk_length)))

    def on_peer_gone(self, peer: PeerId, failure: DialFailed | None, now_ms: int, out: list[OutEvent]) -> None:
        """The connection to `peer` broke, or (with `failure`) could not be made.

        Paper p7: a failed node is removed from the passive view too. A broken connection to a
        peer that is neither active nor pending is ignored (it is the tail of a Disconnect or
        of a finished shuffle exchange).
        """
        pending = self.pending.pop(peer, None)
        in_active = peer in self.active
        if failure is not None:
            self.stats[REASON_DIAL_FAILED] += 1
            out.append(EmitEvent(PeerFailed(peer, f"{REASON_DIAL_FAILED}: {failure.reason}" if failure.reason
                                            else REASON_DIAL_FAILED)))
        if not in_active and pending is None:
            if failure is not None:
                self.passive.pop(peer, None)
            return
        if in_active:
            self._remove_active(peer, "connection_lost", send_disconnect=False, keep_passive=False, out=out)
        self.passive.pop(peer, None)
        self.refill(now_ms, out)


__all__ = ["HyParView", "REASON_JOIN_TIMEOUT", "REASON_NEIGHBOR_TIMEOUT", "REASON_DIAL_FAILED",
           "REJECT_BAD_TAG", "REJECT_NOT_NEIGHBOR"]
