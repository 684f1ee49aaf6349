"""Deterministic discrete-event simulation of many gossip `Topic` cores in one process.

Modelled on iroh-gossip's `proto/sim.rs` (iroh-protocols.md §6.5): every node is a sans-IO
`Topic`; a seeded `random.Random` drives latency, loss, node choice and every core's own rng, so
a seed replays exactly (`pytest --seed N`, `perf/gossip_sim.py --seed N`).

Network model
-------------
- Latency: each pair of nodes has a fixed base latency, uniform in [latency_min_ms,
  latency_max_ms] (iroh's simulations use 10..50 ms) and derived from the seed, plus a per-frame
  jitter uniform in [0, jitter_ms]. (A latency drawn afresh for every frame would make the
  fastest path change with every broadcast, which no real network does, and Plumtree's tree
  would chase it forever.)
- Loss: the gossip protocol runs over QUIC streams, which are reliable and ordered, so a lost
  packet is *retransmitted*, not lost: with probability `loss` a frame is delayed by
  `retransmit_delay_ms`, and, as on a real stream, every later frame on the same directed link
  waits behind it (FIFO per link; head-of-line blocking).
- Failures: `fail(nodes)` kills nodes at once. Frames to a dead node vanish; the sender learns
  it `failure_detect_ms` later (QUIC idle timeout/keepalive) as `PeerDisconnected` when the dead
  node was its neighbor, else `dial_timeout_ms` later as `DialFailed`. Live nodes holding a dead
  node in their active view get `PeerDisconnected` after `failure_detect_ms` even if they send
  nothing (keepalives).

Metrics (per broadcast; definitions of the Plumtree paper, Leitão et al. 2007, §5, also used by
iroh-gossip's simulator)
- delivered: live nodes other than the sender that emitted `Received` for the message.
- missed: live nodes (at broadcast time, excluding the sender) that never delivered it.
- RMR (relative message redundancy) = m / (n - 1) - 1, where m = payload (`Gossip`) frames
  received by live nodes for this message, n = nodes that have the message, sender included
  (n - 1 = delivered). 0 means a perfect tree: exactly one payload per receiving node. Control
  frames (IHave, Graft, Prune, membership) are not counted, as in the paper.
- LDH (last delivery hop) = the largest hop count at which a node first delivered the message;
  the source's own transmission is hop 1 (paper), i.e. hop = round + 1 with the source pushing
  round 0.
- messages per node per broadcast: every frame sent (payload and control, all types) during the
  measured phase / (live nodes x broadcasts). Its flood baseline: a flood over the same overlay
  sends sum(active view sizes) - (N - 1) payloads per broadcast.
"""

from __future__ import annotations

import heapq
import random
from typing import cast
from dataclasses import dataclass, field

import msgspec

from aspen.cluster_secret import ClusterSecret

from aspen_gossip.config import GossipConfig
from aspen_gossip.events import (
    DialFailed,
    EmitEvent,
    InEvent,
    JoinPeers,
    OutEvent,
    PeerDisconnected,
    Received,
    RecvMessage,
    ScheduleTimer,
    SendMessage,
    Timer,
    TimerExpired,
)
from aspen_gossip.messages import SCOPE_SWARM, Frame, Gossip, PeerInfo
from aspen_gossip.topic import Topic

# iroh-gossip simulations/all.toml: latency uniform 10..50 ms
LATENCY_MIN_MS = 10
LATENCY_MAX_MS = 50
JITTER_MS = 5  # guess: a few ms of queueing noise on top of the path latency
LOSS = 0.01  # guess: 1% packet loss, a bad but common Wi-Fi figure
RETRANSMIT_DELAY_MS = 200  # guess: QUIC PTO ~ 3 x RTT (RFC 9002 §6.2) at RTT <= 100 ms, rounded up
FAILURE_DETECT_MS = 3_000  # guess: QUIC keepalive/idle detection of a dead peer
DIAL_TIMEOUT_MS = 1_000  # guess: a dial to a dead address fails after ~1 s
JOIN_SPACING_MS = 10  # nodes start 10 ms apart
BOOTSTRAP_PEERS = 1  # each newcomer joins through one random already-started node (iroh sims)
ROUND_TIMEOUT_MS = 5_000  # iroh-gossip GOSSIP_ROUND_TIMEOUT
MAX_SIM_NODES = 100_000
_COOKIE = "aspen-simulation-cookie"

_KIND_DELIVER = 0
_KIND_TIMER = 1
_KIND_GONE = 2
_KIND_COMMAND = 3


class SimConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Network and swarm parameters of a simulation run."""

    nodes: int = 100
    latency_min_ms: int = LATENCY_MIN_MS
    latency_max_ms: int = LATENCY_MAX_MS
    jitter_ms: int = JITTER_MS
    loss: float = LOSS
    retransmit_delay_ms: int = RETRANSMIT_DELAY_MS
    failure_detect_ms: int = FAILURE_DETECT_MS
    dial_timeout_ms: int = DIAL_TIMEOUT_MS
    join_spacing_ms: int = JOIN_SPACING_MS
    bootstrap_peers: int = BOOTSTRAP_PEERS
    gossip: GossipConfig = GossipConfig()


@dataclass
class MessageStats:
    """What happened to one broadcast."""

    message_id: bytes
    sender: int
    sent_at_ms: int
    expected: int  # live nodes other than the sender when it was sent
    delivered: int = 0
    payload_frames: int = 0
    ldh: int = 0
    receivers: set[int] = field(default_factory=set)

    @property
    def missed(self) -> int:
        return self.expected - self.delivered

    @property
    def rmr(self) -> float:
        """m / (n - 1) - 1 with n - 1 = delivered (paper §5); 0.0 when nobody received it."""
        if self.delivered == 0:
            return 0.0
        return self.payload_frames / self.delivered - 1.0


@dataclass
class PhaseReport:
    """Aggregate of the broadcasts of one phase."""

    broadcasts: list[MessageStats]
    frames_sent: int
    live_nodes: int
    virtual_ms: int
    wall_s: float = 0.0  # filled in by callers that time the phase (this module reads no clock)

    @property
    def missed(self) -> int:
        return sum(m.missed for m in self.broadcasts)

    @property
    def expected(self) -> int:
        return sum(m.expected for m in self.broadcasts)

    @property
    def delivery_ratio(self) -> float:
        return 1.0 - self.missed / self.expected if self.expected else 1.0

    @property
    def rmr_mean(self) -> float:
        return sum(m.rmr for m in self.broadcasts) / len(self.broadcasts) if self.broadcasts else 0.0

    @property
    def rmr_max(self) -> float:
        return max((m.rmr for m in self.broadcasts), default=0.0)

    @property
    def ldh_max(self) -> int:
        return max((m.ldh for m in self.broadcasts), default=0)

    @property
    def ldh_mean(self) -> float:
        return sum(m.ldh for m in self.broadcasts) / len(self.broadcasts) if self.broadcasts else 0.0

    @property
    def frames_per_node_per_broadcast(self) -> float:
        if not self.broadcasts or not self.live_nodes:
            return 0.0
        return self.frames_sent / (self.live_nodes * len(self.broadcasts))

    @property
    def payloads_per_node_per_broadcast(self) -> float:
        """Payload (Gossip) frames received per live node per broadcast (flooding: ~degree - 1)."""
        if not self.broadcasts or not self.live_nodes:
            return 0.0
        return sum(m.payload_frames for m in self.broadcasts) / (self.live_nodes * len(self.broadcasts))

    @property
    def wall_ms_per_broadcast(self) -> float:
        return 1000.0 * self.wall_s / len(self.broadcasts) if self.broadcasts else 0.0

    def summary(self) -> str:
        return (f"broadcasts={len(self.broadcasts)} live={self.live_nodes} missed={self.missed} "
                f"rmr_mean={self.rmr_mean:.3f} rmr_max={self.rmr_max:.3f} ldh_max={self.ldh_max} "
                f"frames/node/bcast={self.frames_per_node_per_broadcast:.2f}")


def sim_peer_id(index: int) -> bytes:
    """The simulated endpoint id of node `index` (32 bytes)."""
    return (index + 1).to_bytes(32, "big")


class Simulator:
    """N gossip cores, one topic, a seeded network. Single-threaded and deterministic."""

    def __init__(self, config: SimConfig, seed: int) -> None:
        if not 1 <= config.nodes <= MAX_SIM_NODES:
            raise ValueError(f"nodes must be in [1, {MAX_SIM_NODES}], got {config.nodes}")
        if not 0 <= config.latency_min_ms <= config.latency_max_ms or config.jitter_ms < 0:
            raise ValueError("need 0 <= latency_min_ms <= latency_max_ms and jitter_ms >= 0")
        if not 0.0 <= config.loss < 1.0:
            raise ValueError("loss is a probability in [0, 1)")
        self.config = config
        self.seed = seed
        self.rng = random.Random(seed)
        self.secret = ClusterSecret.from_cookie(_COOKIE)
        n = config.nodes
        self.ids = [sim_peer_id(i) for i in range(n)]
        self.index = {peer: i for i, peer in enumerate(self.ids)}
        self.topics = [Topic(self.ids[i], self.secret, config.gossip, rng=random.Random(self.rng.getrandbits(64)))
                       for i in range(n)]
        self.alive = [True] * n
        self.now_ms = 0
        self._queue: list[tuple[int, int, int, int, object, object]] = []
        self._seq = 0
        self._link_free: dict[int, int] = {}
        self._link_latency: dict[int, int] = {}
        self._latency_salt = self.rng.getrandbits(64)
        self._gone_pending: set[int] = set()
        self.tracked: dict[bytes, MessageStats] = {}
        self.frames_sent = 0
        self.events_processed = 0

    # --- scheduling -------------------------------------------------------------------------

    def _push(self, at_ms: int, kind: int, node: int, a: object, b: object) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at_ms, self._seq, kind, node, a, b))

    def _execute(self, src: int, out: list[OutEvent]) -> None:
        cfg = self.config
        now = self.now_ms
        rng_random = self.rng.random
        jitter_span = cfg.jitter_ms + 1
        n = cfg.nodes
        link_latency = self._link_latency
        for action in out:
            if type(action) is SendMessage:
                self.frames_sent += 1
                dst = self.index[action.peer]
                if not self.alive[dst]:
                    self._notify_gone(src, dst)
                    continue
                key = src * n + dst
                base = link_latency.get(key)
                if base is None:
                    base = link_latency[key] = link_latency[dst * n + src] = self._base_latency(src, dst)
                at = now + base + int(rng_random() * jitter_span)
                if cfg.loss and rng_random() < cfg.loss:
                    at += cfg.retransmit_delay_ms
                free = self._link_free.get(key, 0)
                if at < free:
                    at = free  # FIFO on the stream: wait behind an earlier (retransmitted) frame
                self._link_free[key] = at
                self._push(at, _KIND_DELIVER, dst, src, action.message)
            elif type(action) is ScheduleTimer:
                self._push(action.deadline_ms, _KIND_TIMER, src, action.timer, None)
            elif type(action) is EmitEvent:
                event = action.event
                if type(event) is Received and event.scope == SCOPE_SWARM:
                    stats = self.tracked.get(event.message_id)
                    if stats is not None and src not in stats.receivers:
                        stats.receivers.add(src)
                        stats.delivered += 1
                        hop = event.round + 1
                        if hop > stats.ldh:
                            stats.ldh = hop
            # DisconnectPeer and PeerData need no modelling: streams are implicit here, and a
            # disconnect's Disconnect frame was already sent through SendMessage.

    def _base_latency(self, a: int, b: int) -> int:
        """The fixed latency of the pair {a, b}: a seeded hash, the same in both directions."""
        lo, hi = (a, b) if a < b else (b, a)
        mixed = (lo * 0x9E3779B97F4A7C15 + hi * 0xC2B2AE3D27D4EB4F + self._latency_salt) & 0xFFFFFFFFFFFFFFFF
        mixed ^= mixed >> 31
        mixed = (mixed * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        mixed ^= mixed >> 29
        span = self.config.latency_max_ms - self.config.latency_min_ms + 1
        return self.config.latency_min_ms + mixed % span

    def _notify_gone(self, src: int, dst: int) -> None:
        key = src * self.config.nodes + dst
        if key in self._gone_pending:
            return
        self._gone_pending.add(key)
        was_neighbor = self.ids[dst] in self.topics[src].hyparview.active
        delay = self.config.failure_detect_ms if was_neighbor else self.config.dial_timeout_ms
        self._push(self.now_ms + delay, _KIND_GONE, src, dst, was_neighbor)

    # --- running ----------------------------------------------------------------------------

    def run_until(self, deadline_ms: int) -> None:
        """Process every event due at or before `deadline_ms`; then now_ms = deadline_ms."""
        queue = self._queue
        topics = self.topics
        alive = self.alive
        ids = self.ids
        tracked = self.tracked
        pop = heapq.heappop
        while queue and queue[0][0] <= deadline_ms:
            at, _, kind, node, a, b = pop(queue)
            self.now_ms = at
            if not alive[node]:
                continue
            self.events_processed += 1
            if kind == _KIND_DELIVER:
                if type(b) is Gossip and b.scope == SCOPE_SWARM:
                    stats = tracked.get(b.message_id)
                    if stats is not None:
                        stats.payload_frames += 1
                out = topics[node].handle(RecvMessage(ids[cast(int, a)], cast(Frame, b)), at)
            elif kind == _KIND_TIMER:
                out = topics[node].handle(TimerExpired(cast(Timer, a)), at)
            elif kind == _KIND_GONE:
                gone = cast(int, a)
                self._gone_pending.discard(node * self.config.nodes + gone)
                peer = ids[gone]
                event: InEvent = (PeerDisconnected(peer, "sim: peer died") if b
                                  else DialFailed(peer, "sim: peer died"))
                out = topics[node].handle(event, at)
            else:
                out = topics[node].handle(cast(InEvent, a), at)
            if out:
                self._execute(node, out)
        self.now_ms = max(self.now_ms, deadline_ms)

    def bootstrap(self, settle_ms: int = 10_000) -> None:
        """Start node 0, then every node i joins `bootstrap_peers` random earlier nodes, one
        every `join_spacing_ms`; then run `settle_ms` more."""
        cfg = self.config
        start = self.now_ms
        for i in range(1, cfg.nodes):
            count = min(cfg.bootstrap_peers, i)
            peers = tuple(PeerInfo(self.ids[j]) for j in self.rng.sample(range(i), count))
            self._push(start + i * cfg.join_spacing_ms, _KIND_COMMAND, i, JoinPeers(peers), None)
        self.run_until(start + cfg.nodes * cfg.join_spacing_ms + settle_ms)

    def live_nodes(self) -> list[int]:
        return [i for i in range(self.config.nodes) if self.alive[i]]

    def broadcast(self, sender: int, content: bytes) -> MessageStats:
        """Publish `content` from `sender` now and track its delivery."""
        expected = sum(self.alive) - 1
        message_id, out = self.topics[sender].broadcast(content, self.now_ms)
        stats = MessageStats(message_id, sender, self.now_ms, expected)
        self.tracked[message_id] = stats
        self._execute(sender, out)
        return stats

    def fail(self, nodes: list[int]) -> None:
        """Kill `nodes` at once; their neighbors notice after failure_detect_ms."""
        dead = set(nodes)
        for i in dead:
            self.alive[i] = False
        for i in range(self.config.nodes):
            if not self.alive[i]:
                continue
            for peer in self.topics[i].hyparview.active:
                j = self.index[peer]
                if j in dead:
                    self._notify_gone(i, j)

    def run_broadcasts(self, count: int, *, interval_ms: int = 1_000,
                       round_timeout_ms: int = ROUND_TIMEOUT_MS, sender: int | None = None) -> PhaseReport:
        """`count` broadcasts from random live senders (or always from `sender`), `interval_ms`
        apart, then wait `round_timeout_ms` for stragglers. Returns the phase's metrics."""
        frames_before = self.frames_sent
        start = self.now_ms
        stats: list[MessageStats] = []
        live = self.live_nodes()
        for k in range(count):
            sender_k = self.rng.choice(live) if sender is None else sender
            stats.append(self.broadcast(sender_k, f"sim {self.seed} {start} {k}".encode()))
            self.run_until(self.now_ms + interval_ms)
        self.run_until(self.now_ms + round_timeout_ms)
        return PhaseReport(stats, self.frames_sent - frames_before, len(live), self.now_ms - start)

    # --- overlay inspection -----------------------------------------------------------------

    def flood_payloads_per_node(self) -> float:
        """Payload frames per node per broadcast that flooding over this overlay would send."""
        live = self.live_nodes()
        degree_sum = sum(len(self.topics[i].hyparview.active) for i in live)
        return (degree_sum - (len(live) - 1)) / len(live) if live else 0.0

    def isolated_nodes(self) -> list[int]:
        return [i for i in self.live_nodes() if not self.topics[i].hyparview.active]

    def is_connected(self) -> bool:
        """True when the live nodes' active views form one connected graph."""
        live = self.live_nodes()
        if not live:
            return True
        seen = {live[0]}
        stack = [live[0]]
        while stack:
            i = stack.pop()
            for peer in self.topics[i].hyparview.active:
                j = self.index[peer]
                if self.alive[j] and j not in seen:
                    seen.add(j)
                    stack.append(j)
        return len(seen) == len(live)


__all__ = ["SimConfig", "Simulator", "MessageStats", "PhaseReport", "sim_peer_id"]
