"""The gossip protocol over QUIC: the asyncio adapter around `aspen_gossip.topic.Topic`.

Theory of operation (iroh-gossip's `net.rs`, kept thin like aioquic's asyncio layer)
---------------------------------------------------------------------------------
`GossipService` is the `ProtocolHandler` of `GOSSIP_ALPN` and owns one `Topic` core per topic id.
It reads input (frames from peers, commands from the application, due timers, broken
connections), calls `Topic.handle(event, now_ms)` with `now_ms` from its clock, and carries out
the outputs in order (`_execute`), nothing else:

- `SendMessage(peer, frame)`: the frame is queued on the peer's `_Link` (one per peer per topic;
  bounded, oldest dropped and counted). The link's writer task finds a usable connection to the
  peer (one we dialed or one the peer opened to us; else it dials the address book entry), opens
  ONE unidirectional stream for this topic, writes `StreamHeader(topic_id)` first and then each
  frame with a 4-byte length prefix. A dial that fails is fed back as `DialFailed`; a stream or
  connection that breaks once established as `PeerDisconnected`.
- `EmitEvent(event)`: appended to every subscriber's bounded queue (oldest dropped, counted).
- `ScheduleTimer(deadline_ms, timer)`: pushed on the one timer heap; one loop timer is armed for
  the earliest deadline. Timers are never cancelled (the core ignores stale ones).
- `DisconnectPeer(peer, reason)`: the link finishes its stream (FIN) once the frames queued before
  it are written, then goes away; a peer refused for a bad membership tag also has its
  connections closed at once. Otherwise the connections to the peer are closed
  `DISCONNECT_LINGER_MS` later if by then no topic uses the peer (not active, not pending, no
  link with frames to send): closing at once could drop the queued `Disconnect` frame, and
  leaving it to QUIC's idle timeout kept every former neighbor's connection open for 30 s.
- `PeerData(peer, addr)`: remembered in the address book (bounded LRU) for later dials.

Inbound: every stream a peer opens (on any connection, whoever dialed it) must start with a
`StreamHeader` naming a topic we have; each following frame's length is checked against
`max_message_size` before it is decoded; a bad header, an oversized or undecodable frame is
counted (`aspen_gossip_frames_rejected_total{reason}`), that stream alone is reset and the peer
is reported `PeerDisconnected` (the core decides what that means). The peer id given to the core
is always the key the QUIC handshake proved (`conn.remote_id`), never anything from the wire.

Bounds (STYLE rule 12): topics (`MAX_TOPICS`), links per topic (`MAX_LINKS_PER_TOPIC`), frames
queued per link (`MAX_QUEUED_FRAMES_PER_LINK`), address book (`MAX_ADDRESS_BOOK_ENTRIES`), timer
heap (`MAX_PENDING_TIMERS`), subscribers (`MAX_SUBSCRIBERS_PER_TOPIC`) and their queues
(`DEFAULT_SUBSCRIBER_QUEUE_SIZE`). Every overflow drops the oldest item and counts it.

Lifecycle: `start()` (after the endpoint is up: the core needs our address), `stop()` sends
`Quit` (Disconnect to every neighbor), gives the writers `STOP_FLUSH_TIMEOUT_MS` to flush, then
cancels every task it owns. Tasks live in `self._tasks` and are all awaited in `stop()`.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections import Counter as CountMap
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import assert_never

import msgspec
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aspen.addr import EndpointAddr
from aspen.clock import Clock, MonotonicClock
from aspen.cluster_secret import ClusterSecret
from aspen.errors import AspenError, LimitExceeded, UsageError
from aspen.identity import EndpointId
from aspen.plugin_api import PeerConnection, PeerStream

from aspen_gossip.config import MAX_BOOTSTRAP_PEERS, GossipConfig
from aspen_gossip.events import (
    Broadcast,
    DialFailed,
    DisconnectPeer,
    EmitEvent,
    Event,
    InEvent,
    JoinPeers,
    NeighborDown,
    NeighborUp,
    OutEvent,
    PeerData,
    PeerDisconnected,
    PeerId,
    Quit,
    RecvMessage,
    ScheduleTimer,
    SendMessage,
    Timer,
    TimerExpired,
    UpdatePeerData,
)
from aspen_gossip.hyparview import REJECT_BAD_TAG
from aspen_gossip.messages import (
    SCOPE_SWARM,
    Frame,
    PeerInfo,
    StreamHeader,
    decode_frame,
    decode_stream_header,
    encode_frame,
)
from aspen_gossip.topic import Topic

logger = logging.getLogger(__name__)

GOSSIP_ALPN = "/aspen-gossip/1"  # issue 6; iroh-gossip's ALPN is "/iroh-gossip/0"

# One topic per cluster today; a few more for applications. guess: revisit.
MAX_TOPICS = 16
# Peers we hold a send link to, per topic: active (5) + pending requests + shuffle replies and
# refusals in flight. Far above what HyParView needs at once; a flood of new peers is dropped.
MAX_LINKS_PER_TOPIC = 256
# iroh-gossip SEND_QUEUE_CAP = 64 frames per connection; we allow more because an IHave burst
# after a partition heals is many small frames. Oldest dropped (Plumtree repairs by IHave/Graft).
MAX_QUEUED_FRAMES_PER_LINK = 256
# Addresses learned from PeerData / bootstrap: HyParView's views (35) for many topics, with room
# for what shuffles bring; = aspen.peers.MAX_PEERS. LRU.
MAX_ADDRESS_BOOK_ENTRIES = 1024
# Timers are never cancelled, so stale ones accumulate until due: per topic at most one per
# pending request/join, one per missing message id (max_missing_ids 4,096) and a few periodic
# ones. 16 x that, rounded.
MAX_PENDING_TIMERS = 65_536
MAX_SUBSCRIBERS_PER_TOPIC = 16  # guess: one discovery + a few application readers
# iroh-gossip TOPIC_EVENT_CAP = 256; announcements of a 1,000-node cluster arrive in bursts, so 4x.
DEFAULT_SUBSCRIBER_QUEUE_SIZE = 1024
# A frame that cannot be written for this long means the path is dead (the QUIC idle timeout is
# 30 s; a neighbor this slow is worth replacing). = aspen_raft.transport.SEND_TIMEOUT_MS.
SEND_TIMEOUT_MS = 10_000
# Dial budget; a handshake is 1-2 RTT. Below the core's neighbor_request_timeout_ms (2 s) would
# race it, so equal to join_timeout_ms (5 s). guess: revisit with relays.
DIAL_TIMEOUT_MS = 5_000
# A link towards a peer that is neither a neighbor nor pending (it got a ShuffleReply, a refusal)
# is finished after this much silence, so streams and links do not pile up. guess: revisit.
LINK_IDLE_TIMEOUT_MS = 30_000
# DisconnectPeer -> close the peer's connections if no topic uses it by then: time for the queued
# Disconnect frame and the FIN to arrive (a few RTTs, one PTO if a packet is lost). guess: revisit
# over relays; far below the QUIC idle timeout (30 s) that used to close them.
DISCONNECT_LINGER_MS = 1_000
STOP_FLUSH_TIMEOUT_MS = 500  # time for the Disconnect frames of Quit to leave at shutdown. guess

# frames_rejected reasons
REJECT_BAD_HEADER = "bad_header"
REJECT_UNKNOWN_TOPIC = "unknown_topic"
REJECT_OVERSIZED = "oversized"
REJECT_MALFORMED = "malformed"


class Subscription:
    """A bounded queue of one topic's events for one reader (`GossipService.subscribe`).

    When the reader falls behind, the OLDEST event is dropped and counted in `dropped` (and in
    `aspen_gossip_subscriber_events_dropped_total`): a slow consumer cannot grow memory, and a
    fresh announcement is worth more than a stale one. `next()` never blocks the network.
    """

    def __init__(self, topic_id: bytes, max_queued: int, on_drop: Callable[[], None],
                 on_close: Callable[[Subscription], None]) -> None:
        if max_queued <= 0:
            raise UsageError(f"max_queued must be > 0, got {max_queued}")
        self.topic_id = topic_id
        self.max_queued = max_queued
        self.dropped = 0
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._on_drop = on_drop
        self._on_close = on_close
        self.is_closed = False

    def _push(self, event: Event) -> None:
        if self.is_closed:
            return
        if len(self._queue) >= self.max_queued:
            self._queue.popleft()
            self.dropped += 1
            self._on_drop()
        self._queue.append(event)
        self._wake.set()

    def __len__(self) -> int:
        return len(self._queue)

    def get_nowait(self) -> Event | None:
        """The oldest queued event, or None."""
        if self._queue:
            return self._queue.popleft()
        self._wake.clear()
        return None

    async def next(self, *, timeout_ms: int | None = None) -> Event | None:
        """The oldest queued event; waits up to `timeout_ms` (None = until one comes or the
        subscription closes). Returns None on timeout or once closed."""
        while not self._queue:
            if self.is_closed:
                return None
            self._wake.clear()
            try:
                if timeout_ms is None:
                    await self._wake.wait()
                else:
                    await asyncio.wait_for(self._wake.wait(), max(timeout_ms, 0) / 1000)
            except TimeoutError:
                return None
        return self._queue.popleft()

    def close(self) -> None:
        if not self.is_closed:
            self.is_closed = True
            self._wake.set()
            self._on_close(self)


class _Link:
    """Our sending side towards one peer for one topic: a queue and the task that writes it."""

    __slots__ = ("peer", "queue", "wake", "finish_requested", "task", "stream", "conn")

    def __init__(self, peer: PeerId) -> None:
        self.peer = peer
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.finish_requested = False
        self.task: asyncio.Task[None] | None = None
        self.stream: PeerStream | None = None
        self.conn: PeerConnection | None = None  # the connection `stream` lives on


class _TopicState:
    __slots__ = ("topic", "links", "subscribers")

    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        self.links: dict[PeerId, _Link] = {}
        self.subscribers: list[Subscription] = []


Dialer = Callable[[EndpointAddr], Awaitable[PeerConnection]]


class GossipService:
    """ProtocolHandler for GOSSIP_ALPN + the network side of every gossip topic of this node.

    `dial(addr)` returns an authenticated connection for GOSSIP_ALPN (the node passes
    `endpoint.connect(addr, GOSSIP_ALPN)`); `own_addr()` is our EndpointAddr once the endpoint
    is up (sent in Join/Neighbor so peers can dial back). All methods run on one event loop.
    """

    alpn = GOSSIP_ALPN
    name = "gossip"

    def __init__(self, *, me: EndpointId, dial: Dialer | None = None,
                 own_addr: Callable[[], EndpointAddr | None] | None = None,
                 config: GossipConfig | None = None, registry: CollectorRegistry,
                 clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self.me = me
        self.dial = dial
        self._own_addr = own_addr
        self.config = (config or GossipConfig()).validate()
        self._clock = clock or MonotonicClock()
        self._rng = rng or random.Random()
        self._topics: dict[bytes, _TopicState] = {}
        self._conns: dict[PeerId, PeerConnection] = {}  # the connection we send on, per peer
        self._served: set[PeerConnection] = set()
        self._addrs: OrderedDict[PeerId, EndpointAddr] = OrderedDict()
        self._timers: list[tuple[int, int, bytes, Timer]] = []
        self._timer_seq = 0
        self._timer_handle: asyncio.TimerHandle | None = None
        self._timer_armed_ms: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopping = False
        self._is_stopped = False
        self.frames_sent = CountMap[str]()
        self.frames_received = CountMap[str]()
        self.frames_rejected = CountMap[str]()
        self.dropped = CountMap[str]()  # what a bound dropped, by which bound
        self.disconnects = CountMap[str]()  # DisconnectPeer reasons
        self.dial_failures = 0
        self._lingering: set[PeerId] = set()  # peers with a _close_when_unused task (<= links)
        self.connections_closed = 0  # connections closed because no topic used the peer any more
        self._collector = _GossipCollector(self)
        registry.register(self._collector)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Mark the service running (idempotent). Topics may be added before or after."""
        self._started = True
        self._stopping = False
        addr = self._own_addr() if self._own_addr is not None else None
        if addr is not None:
            for state in self._topics.values():
                self._feed(state, UpdatePeerData(addr.to_wire()))

    async def stop(self) -> None:
        """Leave every topic (Disconnect to neighbors), flush briefly, cancel every owned task."""
        if self._stopping:
            return
        self._stopping = True
        for state in list(self._topics.values()):
            try:
                self._feed(state, Quit())
            except AspenError as exc:  # pragma: no cover - Quit never raises
                logger.debug("quit failed: %s", exc)
        writers = [link.task for s in self._topics.values() for link in s.links.values()
                   if link.task is not None and not link.task.done()]
        if writers:
            await asyncio.wait(writers, timeout=STOP_FLUSH_TIMEOUT_MS / 1000)
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for state in self._topics.values():
            for sub in list(state.subscribers):
                sub.close()
            state.links.clear()
        self._started = False
        self._is_stopped = True

    # ------------------------------------------------------------------ application API

    def add_topic(self, secret: ClusterSecret) -> bytes:
        """Create the core for `secret`'s topic (idempotent); returns the topic id.

        Raises LimitExceeded beyond MAX_TOPICS.
        """
        if secret.topic_id in self._topics:
            return secret.topic_id
        if len(self._topics) >= MAX_TOPICS:
            raise LimitExceeded("MAX_TOPICS", len(self._topics) + 1, MAX_TOPICS)
        addr = self._own_addr() if self._own_addr is not None else None
        topic = Topic(self.me.raw, secret, self.config, rng=random.Random(self._rng.getrandbits(64)),
                      me_addr=addr.to_wire() if addr is not None else None)
        self._topics[secret.topic_id] = _TopicState(topic)
        return secret.topic_id

    def topic(self, topic_id: bytes) -> Topic:
        """The core of `topic_id` (read-only use: views, stats). Raises UsageError if unknown."""
        return self._state(topic_id).topic

    @property
    def topic_ids(self) -> list[bytes]:
        return list(self._topics)

    def join(self, topic_id: bytes, peers: Iterable[EndpointAddr]) -> None:
        """Join through these bootstrap peers (at most MAX_BOOTSTRAP_PEERS; ourselves skipped).

        Their addresses go to the address book; unanswered joins come back as PeerFailed events.
        """
        infos: list[PeerInfo] = []
        for addr in peers:
            if addr.endpoint_id == self.me:
                continue
            if len(infos) >= MAX_BOOTSTRAP_PEERS:
                break
            self._remember(addr.endpoint_id.raw, addr)
            infos.append(PeerInfo(addr.endpoint_id.raw, addr.to_wire()))
        if infos:
            self._feed(self._state(topic_id), JoinPeers(tuple(infos)))

    def leave(self, topic_id: bytes) -> None:
        """Leave the topic: Disconnect to every neighbor (their connections close shortly after,
        see DISCONNECT_LINGER_MS). The topic stays; a later `join` enters the swarm again."""
        self._feed(self._state(topic_id), Quit())

    def broadcast(self, topic_id: bytes, content: bytes, scope: int = SCOPE_SWARM) -> None:
        """Publish `content` on the topic.

        Raises LimitExceeded (name "max_message_size") when the encoded frame would exceed the
        configured max_message_size — a clear error, never a silent drop — and UsageError for an
        unknown topic.
        """
        self._feed(self._state(topic_id), Broadcast(content, scope))

    def subscribe(self, topic_id: bytes, *, max_queued: int = DEFAULT_SUBSCRIBER_QUEUE_SIZE) -> Subscription:
        """A new bounded event queue for the topic (NeighborUp/Down, Received, PeerFailed).

        Raises LimitExceeded beyond MAX_SUBSCRIBERS_PER_TOPIC. `close()` it when done.
        """
        state = self._state(topic_id)
        if len(state.subscribers) >= MAX_SUBSCRIBERS_PER_TOPIC:
            raise LimitExceeded("MAX_SUBSCRIBERS_PER_TOPIC", len(state.subscribers) + 1,
                                MAX_SUBSCRIBERS_PER_TOPIC)
        sub = Subscription(topic_id, max_queued, on_drop=lambda: self._count_drop("subscriber_queue"),
                           on_close=lambda s: state.subscribers.remove(s) if s in state.subscribers else None)
        state.subscribers.append(sub)
        return sub

    def neighbor_count(self, topic_id: bytes) -> int:
        return len(self._state(topic_id).topic.hyparview.active)

    def neighbors(self, topic_id: bytes) -> list[EndpointId]:
        return [EndpointId(p) for p in self._state(topic_id).topic.active_view]

    def address_of(self, peer: EndpointId) -> EndpointAddr | None:
        """The address book entry for `peer`, if any."""
        return self._addrs.get(peer.raw)

    async def publish(self, addr: EndpointAddr) -> None:
        """DiscoverySource: our address changed; later Join/Neighbor frames carry it."""
        for state in self._topics.values():
            self._feed(state, UpdatePeerData(addr.to_wire()))

    async def resolve(self, endpoint_id: EndpointId) -> EndpointAddr | None:
        """DiscoverySource: what the gossip address book knows of `endpoint_id`."""
        return self.address_of(endpoint_id)

    # ------------------------------------------------------------------ the core loop

    def _state(self, topic_id: bytes) -> _TopicState:
        state = self._topics.get(topic_id)
        if state is None:
            raise UsageError(f"unknown gossip topic {topic_id.hex()[:10]}")
        return state

    def _feed(self, state: _TopicState, event: InEvent) -> None:
        """Give one input to the core and carry out its outputs, in order."""
        out = state.topic.handle(event, self._clock.now_ms())
        self._execute(state, out)

    def _execute(self, state: _TopicState, out: list[OutEvent]) -> None:
        for action in out:
            match action:
                case SendMessage(peer=peer, message=message):
                    self._send(state, peer, message)
                case EmitEvent(event=event):
                    for sub in list(state.subscribers):
                        sub._push(event)
                    if isinstance(event, (NeighborUp, NeighborDown)):
                        logger.debug("gossip %s %s", type(event).__name__, event.peer.hex()[:10])
                case ScheduleTimer(deadline_ms=deadline_ms, timer=timer):
                    self._schedule(state.topic.topic_id, deadline_ms, timer)
                case DisconnectPeer(peer=peer, reason=reason):
                    self._disconnect(state, peer, reason)
                case PeerData(peer=peer, addr=addr):
                    try:
                        self._remember(peer, EndpointAddr.from_wire(addr))
                    except ValueError:
                        self._count_drop("bad_peer_data")
                case _:
                    assert_never(action)

    # ------------------------------------------------------------------ outputs

    def _send(self, state: _TopicState, peer: PeerId, message: Frame) -> None:
        if self._is_stopped:
            return
        link = state.links.get(peer)
        if link is None:
            if len(state.links) >= MAX_LINKS_PER_TOPIC:
                self._count_drop("links_per_topic")
                return
            link = state.links[peer] = _Link(peer)
        if len(link.queue) >= MAX_QUEUED_FRAMES_PER_LINK:
            link.queue.popleft()
            self._count_drop("link_queue")
        link.queue.append(encode_frame(message))
        link.finish_requested = False  # a frame after a DisconnectPeer keeps the link open
        self.frames_sent[type(message).__name__] += 1
        link.wake.set()
        if link.task is None or link.task.done():
            link.task = self._spawn(self._run_link(state, link), f"gossip-send-{peer.hex()[:10]}")

    def _disconnect(self, state: _TopicState, peer: PeerId, reason: str) -> None:
        self.disconnects[reason] += 1
        link = state.links.get(peer)
        if link is not None:
            link.finish_requested = True
            link.wake.set()
        if peer not in self._lingering and not self._stopping:
            self._lingering.add(peer)
            self._spawn(self._close_when_unused(peer), f"gossip-linger-{peer.hex()[:10]}")
        if reason == REJECT_BAD_TAG:
            # A peer that cannot prove the cluster secret gets nothing more from us on any topic.
            conn = self._conns.pop(peer, None)
            if conn is not None:
                conn.close(0, "not a member of this gossip topic")
            for served in list(self._served):
                if served.remote_id.raw == peer:
                    served.close(0, "not a member of this gossip topic")

    async def _close_when_unused(self, peer: PeerId) -> None:
        try:
            await asyncio.sleep(DISCONNECT_LINGER_MS / 1000)
        finally:
            self._lingering.discard(peer)
        if self._stopping or self._peer_in_use(peer):
            return
        conns = [c for c in self._served if c.remote_id.raw == peer]
        dialed = self._conns.pop(peer, None)
        if dialed is not None and dialed not in conns:
            conns.append(dialed)
        for conn in conns:
            self.connections_closed += 1
            conn.close(0, "gossip: no longer a neighbor")

    def _peer_in_use(self, peer: PeerId) -> bool:
        for state in self._topics.values():
            view = state.topic.hyparview
            if peer in view.active or peer in view.pending:
                return True
            link = state.links.get(peer)
            if link is not None and (link.queue or not link.finish_requested):
                return True
        return False

    def _remember(self, peer: PeerId, addr: EndpointAddr) -> None:
        if peer == self.me.raw or addr.endpoint_id.raw != peer:
            return
        self._addrs[peer] = addr
        self._addrs.move_to_end(peer)
        while len(self._addrs) > MAX_ADDRESS_BOOK_ENTRIES:
            self._addrs.popitem(last=False)

    def _schedule(self, topic_id: bytes, deadline_ms: int, timer: Timer) -> None:
        if len(self._timers) >= MAX_PENDING_TIMERS:
            self._count_drop("timers")
            return
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline_ms, self._timer_seq, topic_id, timer))
        self._arm_timer()

    def _arm_timer(self) -> None:
        if not self._timers or self._stopping:
            return
        earliest_ms = self._timers[0][0]
        if self._timer_handle is not None and self._timer_armed_ms is not None \
                and self._timer_armed_ms <= earliest_ms:
            return
        if self._timer_handle is not None:
            self._timer_handle.cancel()
        delay_ms = max(0, earliest_ms - self._clock.now_ms())
        self._timer_armed_ms = earliest_ms
        self._timer_handle = asyncio.get_running_loop().call_later(delay_ms / 1000, self._on_timer)

    def _on_timer(self) -> None:
        self._timer_handle = None
        self._timer_armed_ms = None
        now_ms = self._clock.now_ms()
        while self._timers and self._timers[0][0] <= now_ms and not self._stopping:
            _, _, topic_id, timer = heapq.heappop(self._timers)
            state = self._topics.get(topic_id)
            if state is not None:
                self._feed(state, TimerExpired(timer))
        self._arm_timer()

    def _count_drop(self, bound: str) -> None:
        self.dropped[bound] += 1

    # ------------------------------------------------------------------ writing

    async def _run_link(self, state: _TopicState, link: _Link) -> None:
        """Write the link's queue onto its stream; finish the stream once asked to (or once the
        link has idled LINK_IDLE_TIMEOUT_MS towards a peer that is no longer a neighbor)."""
        peer = link.peer
        topic = state.topic
        try:
            while True:
                if not link.queue:
                    if link.finish_requested or self._stopping:
                        if link.stream is not None:
                            stream, link.stream, link.conn = link.stream, None, None
                            await stream.finish()
                        if link.queue:
                            continue  # queued while finishing: go on, on a fresh stream
                        break
                    link.wake.clear()
                    try:
                        await asyncio.wait_for(link.wake.wait(), LINK_IDLE_TIMEOUT_MS / 1000)
                    except TimeoutError:
                        if peer not in topic.hyparview.active and peer not in topic.hyparview.pending:
                            link.finish_requested = True
                    continue
                if link.stream is None:
                    try:
                        conn = await self._connection_for(peer)
                    except (AspenError, OSError, TimeoutError, ConnectionError) as exc:
                        self._link_failed(state, link, DialFailed(peer, _reason(exc)))
                        return
                    stream = await conn.open_stream(unidirectional=True)
                    link.stream, link.conn = stream, conn
                    await stream.write_frame(encode_frame(StreamHeader(topic.topic_id)),
                                             timeout_ms=SEND_TIMEOUT_MS)
                body = link.queue.popleft()
                await link.stream.write_frame(body, timeout_ms=SEND_TIMEOUT_MS)
        except (AspenError, OSError, TimeoutError, ConnectionError) as exc:
            self._link_failed(state, link, PeerDisconnected(peer, _reason(exc)))
            return
        if state.links.get(peer) is link:
            del state.links[peer]

    def _link_failed(self, state: _TopicState, link: _Link, event: DialFailed | PeerDisconnected) -> None:
        dropped = len(link.queue)
        link.queue.clear()
        link.stream = None
        if dropped:
            self.dropped["unsent_frames"] += dropped
        if state.links.get(link.peer) is link:
            del state.links[link.peer]
        if isinstance(event, DialFailed):
            self.dial_failures += 1
        logger.debug("gossip link to %s failed: %s", link.peer.hex()[:10], event.reason)
        if not self._stopping:
            self._feed(state, event)

    async def _connection_for(self, peer: PeerId) -> PeerConnection:
        conn = self._conns.get(peer)
        if conn is not None and getattr(conn, "is_usable", True):
            return conn
        addr = self._addrs.get(peer)
        if addr is None:
            raise UsageError("no_address")
        if self.dial is None:
            raise UsageError("no dialer")
        conn = await asyncio.wait_for(self.dial(addr), DIAL_TIMEOUT_MS / 1000)
        self._conns[peer] = conn
        if conn not in self._served:
            self._spawn(self._serve(conn), f"gossip-read-{peer.hex()[:10]}")
        return conn

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ reading

    async def handle_connection(self, conn: PeerConnection) -> None:
        """ProtocolHandler: serve a connection a peer opened until it closes."""
        peer = conn.remote_id.raw
        current = self._conns.get(peer)
        if current is None or not getattr(current, "is_usable", True):
            self._conns[peer] = conn  # answer over it: the peer may have no address we can dial
        await self._serve(conn)

    async def _serve(self, conn: PeerConnection) -> None:
        """Read every stream the peer opens on `conn`; when the connection ends, report it."""
        self._served.add(conn)
        peer = conn.remote_id.raw
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    stream = await conn.accept_stream()
                    if stream is None:
                        break
                    group.create_task(self._read_stream(conn, stream))
        except AspenError as exc:
            logger.debug("gossip connection to %s ended: %s", peer.hex()[:10], exc)
        finally:
            self._served.discard(conn)
            if self._conns.get(peer) is conn:
                del self._conns[peer]
        if self._stopping:
            return
        for state in self._topics.values():
            link = state.links.get(peer)
            if link is not None and link.conn is conn:
                link.stream = link.conn = None  # the next frame goes out on a fresh connection
        others = [c for c in self._served if c.remote_id.raw == peer and getattr(c, "is_usable", True)]
        if not others:
            for state in list(self._topics.values()):
                self._feed(state, PeerDisconnected(peer, "connection_lost"))

    async def _read_stream(self, conn: PeerConnection, stream: PeerStream) -> None:
        peer = conn.remote_id.raw
        # Before anything is read: the transport must not buffer more than a gossip frame.
        stream.limit_frames(self.config.max_message_size)
        try:
            body = await stream.read_frame()
            if body is None:
                return
            try:
                header = decode_stream_header(body)
            except msgspec.DecodeError:
                self._reject_stream(stream, REJECT_BAD_HEADER)
                return
            state = self._topics.get(header.topic_id)
            if state is None:
                self._reject_stream(stream, REJECT_UNKNOWN_TOPIC)
                return
            limit = self.config.max_message_size
            while True:
                body = await stream.read_frame()
                if body is None or self._stopping:
                    return
                if len(body) > limit:
                    self._reject_stream(stream, REJECT_OVERSIZED)
                    self._feed(state, PeerDisconnected(peer, REJECT_OVERSIZED))
                    return
                try:
                    frame = decode_frame(body)
                except msgspec.DecodeError:
                    self._reject_stream(stream, REJECT_MALFORMED)
                    self._feed(state, PeerDisconnected(peer, REJECT_MALFORMED))
                    return
                self.frames_received[type(frame).__name__] += 1
                self._feed(state, RecvMessage(peer, frame))
        except LimitExceeded:
            self.frames_rejected[REJECT_OVERSIZED] += 1  # over the transport's own frame limit
        except AspenError as exc:
            logger.debug("gossip stream from %s ended: %s", peer.hex()[:10], exc)

    def _reject_stream(self, stream: PeerStream, reason: str) -> None:
        self.frames_rejected[reason] += 1
        stream.reset(1)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    reason = getattr(exc, "reason", None)
    return f"{reason}: {text}" if isinstance(reason, str) else text


class _GossipCollector(Collector):
    """Exports the service's and its cores' counters at scrape time (no double bookkeeping)."""

    def __init__(self, service: GossipService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        s = self._service
        yield _counter("aspen_gossip_frames_sent", "gossip frames queued for sending, by type",
                       "type", s.frames_sent)
        yield _counter("aspen_gossip_frames_received", "gossip frames received and decoded, by type",
                       "type", s.frames_received)
        yield _counter("aspen_gossip_frames_rejected",
                       "inbound gossip streams reset: bad header, unknown topic, oversized, malformed",
                       "reason", s.frames_rejected)
        yield _counter("aspen_gossip_dropped", "items dropped by a bound (queue full, limits), by bound",
                       "bound", s.dropped)
        yield _counter("aspen_gossip_disconnects", "peers disconnected by the core, by reason",
                       "reason", s.disconnects)
        dial = CounterMetricFamily("aspen_gossip_dial_failures", "gossip dials that failed")
        dial.add_metric([], s.dial_failures)
        yield dial
        closed = CounterMetricFamily("aspen_gossip_connections_closed",
                                     "gossip connections closed after the peer left every topic")
        closed.add_metric([], s.connections_closed)
        yield closed
        stats: CountMap[str] = CountMap()
        neighbors = GaugeMetricFamily("aspen_gossip_neighbors", "active view size per topic", labels=["topic"])
        passive = GaugeMetricFamily("aspen_gossip_passive_peers", "passive view size per topic", labels=["topic"])
        for topic_id, state in s._topics.items():
            stats.update(state.topic.stats)
            neighbors.add_metric([topic_id.hex()[:10]], len(state.topic.hyparview.active))
            passive.add_metric([topic_id.hex()[:10]], len(state.topic.hyparview.passive))
        yield neighbors
        yield passive
        yield _counter("aspen_gossip_core_events", "refused input and failures counted by the gossip core",
                       "reason", stats)


def _counter(name: str, doc: str, label: str, counts: CountMap[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(counts.items()):
        family.add_metric([key], value)
    return family


__all__ = ["GossipService", "Subscription", "GOSSIP_ALPN", "MAX_TOPICS", "MAX_LINKS_PER_TOPIC",
           "MAX_QUEUED_FRAMES_PER_LINK", "MAX_ADDRESS_BOOK_ENTRIES", "DEFAULT_SUBSCRIBER_QUEUE_SIZE"]
