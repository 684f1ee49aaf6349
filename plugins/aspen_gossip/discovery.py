"""Gossip discovery: signed announcements through the cluster topic feed the peer map (adapter).

`GossipDiscovery` is a `DiscoverySource` on top of a running `GossipService`. It adds the
cluster topic (from the `ClusterSecret`), joins it through the bootstrap peers (the ticket's
EndpointAddrs, plus any dialable peer already in the peer map), and then only reads the topic's
events and the clock and executes what the sans-IO pieces of `aspen_gossip.announce` decide:

- `Announcer` says when to announce (swarm-wide on joining and every 10 s, one hop on a new
  neighbor, swarm-wide soon after hearing a new node); we sign `{node_id, EndpointAddr,
  timestamp}` with the endpoint key and broadcast it.
- `AnnouncementVerifier` checks every received announcement (signature, freshness against
  `aspen.clock.wall_clock_unix_ms()`, replay, node-id hijack with the Raft membership as
  `bound_keys`); accepted ones go to the `PeerMap` with source "gossip". Rejections are counted
  by reason: `aspen_gossip_announcements_rejected_total{reason}`.
- While the topic has no neighbor, the join is retried every `REJOIN_INTERVAL_MS` (a node
  started before its bootstrap peer, or cut off, finds its way back without an operator).
- With a `known_peers_path` (the node's data dir), the addresses of our neighbors and of the
  peers we learned are saved there (at most every `KNOWN_PEERS_SAVE_INTERVAL_MS`) and joined
  through after a restart: a bootstrap node restarted before the cluster is initialised has no
  other way back into the swarm (see aspen_gossip.known_peers).

It also provides the cluster ticket (`ticket_info()`, registered as the node's `cluster_ticket`
extension): the topic id and join key of the secret plus our own and our neighbors' addresses.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as CountMap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from aspen.addr import EndpointAddr
from aspen.clock import Clock, MonotonicClock, wall_clock_unix_ms
from aspen.cluster_secret import ClusterSecret
from aspen.errors import AspenError, LimitExceeded
from aspen.identity import EndpointId, SecretKey
from aspen.peers import PeerMap
from aspen.ticket import MAX_TICKET_BOOTSTRAP_PEERS, ClusterTicket

from aspen_gossip.announce import (
    ANNOUNCE_INTERVAL_MS,
    Accepted,
    AnnouncementVerifier,
    Announcer,
    sign_announcement,
)
from aspen_gossip.config import MAX_BOOTSTRAP_PEERS
from aspen_gossip.events import NeighborDown, NeighborUp, PeerFailed, Received
from aspen_gossip.known_peers import MAX_KNOWN_PEERS, load_known_peers, save_known_peers
from aspen_gossip.messages import SCOPE_SWARM
from aspen_gossip.service import GossipService, Subscription

logger = logging.getLogger(__name__)

# While alone in the topic, ask the bootstrap peers again this often. Below the core's
# join_timeout_ms (5 s) so a node started before its bootstrap peer joins about 1 s after that
# peer comes up (issue 6: a cluster forms within 2 s of the last start). guess: revisit.
REJOIN_INTERVAL_MS = 1_000
# Node ids heard of (to detect newcomers); = announce.MAX_TRACKED_NODES, cleared when full.
MAX_HEARD_NODES = 1024
REASON_PEER_MAP_FULL = "peer_map_full"
# Rewrite the known-peers file at most this often (a burst of joins is one write). The first
# neighbor is saved at once: a bootstrap node may be restarted seconds after the others joined.
KNOWN_PEERS_SAVE_INTERVAL_MS = 1_000


class GossipDiscovery:
    """DiscoverySource: announces this node through gossip and learns the others."""

    name = "gossip-discovery"

    def __init__(self, *, service: GossipService, secret: ClusterSecret, secret_key: SecretKey,
                 node_id: int, own_addr: Callable[[], EndpointAddr | None], peers: PeerMap,
                 bound_keys: Callable[[], Mapping[int, EndpointId]] | None = None,
                 bootstrap: tuple[EndpointAddr, ...] = (), registry: CollectorRegistry,
                 announce_interval_ms: int = ANNOUNCE_INTERVAL_MS, clock: Clock | None = None,
                 wall_clock_ms: Callable[[], int] = wall_clock_unix_ms,
                 known_peers_path: Path | None = None) -> None:
        self._service = service
        self._secret = secret
        self._key = secret_key
        self.node_id = node_id
        self._own_addr = own_addr
        self._peers = peers
        self._bound_keys = bound_keys
        self._bootstrap = tuple(bootstrap)[:MAX_TICKET_BOOTSTRAP_PEERS]
        self._clock = clock or MonotonicClock()
        self._wall_clock_ms = wall_clock_ms
        self.topic_id = secret.topic_id
        self.announcer = Announcer(announce_interval_ms)
        self.verifier = AnnouncementVerifier(self.topic_id, own_node_id=node_id)
        self.sent: CountMap[str] = CountMap()
        self.failed_peers = 0
        self._heard: set[int] = set()
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._known_path = known_peers_path
        self._known: list[EndpointAddr] = load_known_peers(known_peers_path) if known_peers_path else []
        self._known_dirty = False
        self._known_saved_ms: int | None = None
        registry.register(_DiscoveryCollector(self))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Add the cluster topic, subscribe, start the announce loop (the service is running)."""
        self._service.add_topic(self._secret)
        self._sub = self._service.subscribe(self.topic_id)
        self._task = asyncio.create_task(self._run(), name="gossip-discovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    async def publish(self, addr: EndpointAddr) -> None:
        await self._service.publish(addr)

    async def resolve(self, endpoint_id: EndpointId) -> EndpointAddr | None:
        node_id = self._peers.node_id_of(endpoint_id)
        entry = self._peers.get(node_id) if node_id is not None else None
        return entry.addr if entry is not None else None

    # ------------------------------------------------------------------ tickets

    def ticket(self) -> ClusterTicket:
        """A ticket for this cluster: our address first, then our neighbors' (at most 16)."""
        addrs: list[EndpointAddr] = []
        own = self._own_addr()
        if own is not None:
            addrs.append(own)
        for peer in self._service.neighbors(self.topic_id):
            addr = self._service.address_of(peer)
            if addr is not None and addr.direct_addrs and len(addrs) < MAX_TICKET_BOOTSTRAP_PEERS:
                addrs.append(addr)
        return ClusterTicket.from_secret(self._secret, addrs)

    def ticket_info(self) -> dict[str, Any]:
        """`GET /cluster-ticket`: the Rust Aspen's shape (cluster_id = the public topic id, never
        the cookie) plus the bootstrap count."""
        ticket = self.ticket()
        return {"ticket": ticket.encode(), "topic_id": self.topic_id.hex(), "cluster_id": self.topic_id.hex(),
                "endpoint_id": self._key.public().hex(), "bootstrap_peers": len(ticket.bootstrap)}

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        sub = self._sub
        assert sub is not None
        next_join_ms = self._clock.now_ms()
        while not sub.is_closed:
            now_ms = self._clock.now_ms()
            alone = self._service.neighbor_count(self.topic_id) == 0
            if alone and now_ms >= next_join_ms:
                self._join()
                next_join_ms = now_ms + REJOIN_INTERVAL_MS
            save_ms = self._known_save_deadline_ms()
            if save_ms is not None and now_ms >= save_ms:
                self._save_known(now_ms)
                save_ms = None
            scope = self.announcer.poll(now_ms)
            if scope is not None:
                self._announce(scope)
                continue
            deadlines = [d for d in (self.announcer.next_deadline_ms(), next_join_ms if alone else None, save_ms)
                         if d is not None]
            timeout_ms = max(0, min(deadlines) - now_ms) if deadlines else None
            event = await sub.next(timeout_ms=timeout_ms)
            if event is not None:
                self._on_event(event)

    def _join(self) -> None:
        """JoinPeers with the bootstrap peers and dialable peers of the peer map (bounded)."""
        me = self._key.public()
        candidates: dict[EndpointId, EndpointAddr] = {}
        for addr in self._bootstrap:
            candidates.setdefault(addr.endpoint_id, addr)
        for entry in self._peers.entries():
            if entry.addr.direct_addrs and entry.node_id != self.node_id:
                candidates.setdefault(entry.addr.endpoint_id, entry.addr)
        for addr in self._known:
            candidates.setdefault(addr.endpoint_id, addr)
        candidates.pop(me, None)
        if candidates:
            self._service.join(self.topic_id, list(candidates.values())[:MAX_BOOTSTRAP_PEERS])

    def _known_save_deadline_ms(self) -> int | None:
        if not self._known_dirty or self._known_path is None:
            return None
        if self._known_saved_ms is None:
            return self._clock.now_ms()
        return self._known_saved_ms + KNOWN_PEERS_SAVE_INTERVAL_MS

    def _save_known(self, now_ms: int) -> None:
        """Neighbors first (they were reachable just now), then learned peers, then the old list."""
        assert self._known_path is not None
        me = self._key.public()
        chosen: dict[EndpointId, EndpointAddr] = {}
        for peer in self._service.neighbors(self.topic_id):
            addr = self._service.address_of(peer)
            if addr is not None and addr.direct_addrs:
                chosen.setdefault(peer, addr)
        for entry in self._peers.entries():
            if entry.addr.direct_addrs and entry.node_id != self.node_id:
                chosen.setdefault(entry.addr.endpoint_id, entry.addr)
        for addr in self._known:
            chosen.setdefault(addr.endpoint_id, addr)
        chosen.pop(me, None)
        self._known = list(chosen.values())[:MAX_KNOWN_PEERS]
        save_known_peers(self._known_path, self._known)
        self._known_dirty = False
        self._known_saved_ms = now_ms

    def _announce(self, scope: int) -> None:
        addr = self._own_addr()
        if addr is None:
            return
        try:
            content = sign_announcement(self._key, self.topic_id, self.node_id, addr, self._wall_clock_ms())
            self._service.broadcast(self.topic_id, content, scope)
        except AspenError as exc:  # an address too big for max_message_size: say so, once per try
            logger.warning("cannot announce ourselves: %s", exc)
            self.sent["failed"] += 1
            return
        self.sent["swarm" if scope == SCOPE_SWARM else "neighbors"] += 1

    def _on_event(self, event: object) -> None:
        now_ms = self._clock.now_ms()
        count = self._service.neighbor_count(self.topic_id)
        if isinstance(event, NeighborUp):
            self.announcer.on_neighbor_up(now_ms, count)
            self._known_dirty = True
        elif isinstance(event, NeighborDown):
            self.announcer.on_neighbor_down(now_ms, count)
        elif isinstance(event, PeerFailed):
            self.failed_peers += 1
            logger.debug("gossip peer %s failed: %s", event.peer.hex()[:10], event.reason)
        elif isinstance(event, Received):
            self._on_announcement(event.content, now_ms)

    def _on_announcement(self, content: bytes, now_ms: int) -> None:
        bound = self._bound_keys() if self._bound_keys is not None else None
        verdict = self.verifier.verify(content, self._wall_clock_ms(), bound_keys=bound)
        try:
            verdict = self.verifier.apply_to_peer_map(verdict, self._peers)
        except LimitExceeded:
            self.verifier.rejections[REASON_PEER_MAP_FULL] += 1
            return
        if isinstance(verdict, Accepted):
            if verdict.node_id not in self._heard:
                if len(self._heard) >= MAX_HEARD_NODES:
                    self._heard.clear()
                self._heard.add(verdict.node_id)
                self._known_dirty = True
                logger.info("gossip: learned node %d at %s", verdict.node_id, verdict.addr.endpoint_id.short())
                self.announcer.on_new_peer(now_ms)


class _DiscoveryCollector(Collector):
    def __init__(self, discovery: GossipDiscovery) -> None:
        self._d = discovery

    def collect(self) -> Iterator[Metric]:
        d = self._d
        rejected = CounterMetricFamily("aspen_gossip_announcements_rejected",
                                       "received announcements refused, by reason", labels=["reason"])
        for reason, value in sorted(d.verifier.rejections.items()):
            rejected.add_metric([reason], value)
        yield rejected
        accepted = CounterMetricFamily("aspen_gossip_announcements_accepted",
                                       "received announcements verified and applied to the peer map")
        accepted.add_metric([], d.verifier.accepted)
        yield accepted
        sent = CounterMetricFamily("aspen_gossip_announcements_sent", "our announcements, by scope",
                                   labels=["scope"])
        for scope, value in sorted(d.sent.items()):
            sent.add_metric([scope], value)
        yield sent


__all__ = ["GossipDiscovery", "REJOIN_INTERVAL_MS"]
