"""RaftTransport: moves Raft messages between the local worker and peer nodes.

Outbound: the worker's `RaftSendBatch` is split per destination into bounded queues
(`MAX_QUEUED_MESSAGES_PER_PEER`; when full the oldest is dropped and counted — Raft retransmits,
and a stale heartbeat is worth less than a fresh one). One sender task per peer drains its
queue onto two streams of one pooled connection: `small` and `large`. A peer that cannot be
reached is retried after `REDIAL_BACKOFF_MS`; a peer we have no dialable address for is reached
over the connection it opened to us, if any.

Inbound: every accepted connection is checked before any frame is read: its key must belong to
a member (or, on a node not yet initialised, must not contradict the peer map). Every stream
(whoever opened it) starts with a `RaftAuth` frame: the cluster secret's membership tag bound to
the opener's and the receiver's endpoint ids (`PURPOSE_RAFT_RPC`); without a valid one within
`AUTH_TIMEOUT_MS` the connection is closed and counted (`aspen_raft_rpc_refused{reason=
"bad_secret"}`) before any Raft frame is read. Each frame's `from_node` must be that member's
node id; anything else is counted and the stream closed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

from aspen import worker_messages as wm
from aspen.cluster_secret import PURPOSE_RAFT_RPC, ClusterSecret
from aspen.errors import AspenError
from aspen.identity import EndpointId
from aspen.plugin_api import PeerConnection, PeerStream

from aspen_raft.frames import (
    RAFT_ALPN,
    SMALL_FRAME_TARGET_SIZE,
    RaftAuth,
    RaftFrame,
    decode_auth,
    decode_frame,
    encode_auth,
    encode_frame,
)

if TYPE_CHECKING:
    from aspen.cluster_view import ClusterView

logger = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES_PER_PEER = 10_000  # guess: revisit; ~ a few seconds of heartbeats and appends
REDIAL_BACKOFF_MS = 200  # wait before dialing a peer again after a failure
SEND_TIMEOUT_MS = 10_000  # a frame that cannot be written this long means the path is dead
CONNECT_TIMEOUT_MS = 3_000
# Every Raft message we send is answered (append/heartbeat/vote responses), so a connection that
# carried our messages for this long without anything coming back from that peer is presumed
# dead (the peer restarted, or the path broke) and is closed and re-dialed, rather than waiting
# for the QUIC idle timeout (30 s). Above the election timeout, so a slow peer is not flapped.
PEER_SILENCE_RESET_MS = 2_000
# The opener writes the auth frame right after opening a stream, in the same flight as its first
# Raft frame; a stream that shows nothing for this long is not a Raft peer. guess: revisit.
AUTH_TIMEOUT_MS = 5_000


class _Peer:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.heard_at = 0.0  # monotonic seconds of the last frame received from this node
        self.unanswered_since: float | None = None  # first send after the last frame heard
        self.queue: collections.deque[wm.RaftSend] = collections.deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.conn: PeerConnection | None = None
        self.streams: dict[bool, PeerStream] = {}


class RaftTransport:
    """ProtocolHandler for `raft-rpc` and the outbound side, started as a Service."""

    alpn = RAFT_ALPN
    name = "raft-rpc"

    def __init__(self, *, node_id: int, view: ClusterView,
                 deliver: Callable[[list[wm.ToWorker]], Awaitable[None]],
                 connect: Callable[[int], Awaitable[PeerConnection]], registry: CollectorRegistry,
                 secret: ClusterSecret, me: EndpointId) -> None:
        self._node_id = node_id
        self._secret = secret
        self._me = me
        self._view = view
        self._deliver = deliver
        self._connect = connect
        self._peers: dict[int, _Peer] = {}
        self._inbound: dict[int, PeerConnection] = {}
        self._served: set[PeerConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._sent = Counter("aspen_raft_messages_sent", "Raft messages sent to peers", ["lane"], registry=registry)
        self._received = Counter("aspen_raft_messages_received", "Raft messages received from peers",
                                 registry=registry)
        self._dropped = Counter("aspen_raft_messages_dropped", "outbound Raft messages dropped by reason",
                                ["reason"], registry=registry)
        # Per peer (labelled by node id; members are bounded by MAX_MEMBERS, so is the cardinality).
        self._peer_bytes_out = Counter("aspen_raft_peer_bytes_sent", "raft-rpc frame bytes sent, by peer node",
                                       ["peer"], registry=registry)
        self._peer_bytes_in = Counter("aspen_raft_peer_bytes_received", "raft-rpc frame bytes received, by peer node",
                                      ["peer"], registry=registry)
        self._peer_connected = Gauge("aspen_raft_peer_connected",
                                     "1 while a usable raft-rpc connection to the peer node is held", ["peer"],
                                     registry=registry)
        self._refused = Counter("aspen_raft_rpc_refused", "inbound raft-rpc connections or frames refused",
                                ["reason"], registry=registry)
        # Label children used per frame, looked up once (labels() takes a lock and builds a key:
        # ~2% of a follower's I/O-process CPU at c=16 in perf/kv_bench.py).
        self._sent_small = self._sent.labels("small")
        self._sent_large = self._sent.labels("large")
        self._peer_children: dict[int, tuple[Counter, Counter, Gauge]] = {}

    def _children(self, node_id: int) -> tuple[Counter, Counter, Gauge]:
        """(bytes out, bytes in, connected) metric children of one peer node."""
        children = self._peer_children.get(node_id)
        if children is None:
            label = str(node_id)
            children = self._peer_children[node_id] = (
                self._peer_bytes_out.labels(label), self._peer_bytes_in.labels(label),
                self._peer_connected.labels(label))
        return children

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._stopping = False

    async def stop(self) -> None:
        self._stopping = True
        for peer in self._peers.values():
            if peer.task is not None:
                peer.task.cancel()
        tasks = [p.task for p in self._peers.values() if p.task is not None] + list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ outbound

    def send_batch(self, batch: wm.RaftSendBatch) -> None:
        """Queue the worker's outbound messages (called from the worker reader; never blocks)."""
        if self._stopping:
            return
        for message in batch.messages:
            if message.to_node == self._node_id:
                continue
            peer = self._peers.get(message.to_node)
            if peer is None:
                peer = self._peers[message.to_node] = _Peer(message.to_node)
            if len(peer.queue) >= MAX_QUEUED_MESSAGES_PER_PEER:
                peer.queue.popleft()
                self._dropped.labels("queue_full").inc()
            peer.queue.append(message)
            peer.wake.set()
            if peer.task is None or peer.task.done():
                peer.task = asyncio.create_task(self._run_peer(peer), name=f"raft-send-{message.to_node}")

    async def _run_peer(self, peer: _Peer) -> None:
        while not self._stopping:
            await peer.wake.wait()
            peer.wake.clear()
            try:
                await self._drain(peer)
            except asyncio.CancelledError:
                raise
            except (AspenError, OSError, TimeoutError, ConnectionError) as exc:
                dropped = len(peer.queue)
                peer.queue.clear()
                self._dropped.labels("unreachable").inc(dropped)
                logger.debug("raft-rpc to node %d failed: %r; dropped %d messages", peer.node_id, exc, dropped)
                peer.conn = None
                self._peer_connected.labels(str(peer.node_id)).set(0)
                peer.streams.clear()
                await asyncio.sleep(REDIAL_BACKOFF_MS / 1000)

    def _check_silence(self, peer: _Peer) -> None:
        now = time.monotonic()
        if peer.unanswered_since is None or peer.heard_at > peer.unanswered_since:
            peer.unanswered_since = now
            return
        if peer.conn is not None and now - peer.unanswered_since > PEER_SILENCE_RESET_MS / 1000:
            logger.info("raft-rpc to node %d: nothing heard for %d ms; re-dialing", peer.node_id,
                        int((now - peer.unanswered_since) * 1000))
            peer.conn.close(0, "silent peer")
            peer.conn = None
            self._peer_connected.labels(str(peer.node_id)).set(0)
            peer.streams.clear()
            peer.unanswered_since = now

    async def _stream(self, peer: _Peer, large: bool) -> PeerStream:
        stream = peer.streams.get(large)
        if stream is not None and peer.conn is not None and getattr(peer.conn, "is_usable", True):
            return stream
        if peer.conn is None or not getattr(peer.conn, "is_usable", True):
            peer.streams.clear()
            peer.conn = await self._connection(peer.node_id)
            self._serve_dialed(peer.conn)
        stream = await peer.conn.open_stream()
        await stream.write_frame(encode_auth(RaftAuth(self._auth_tag(self._me, peer.conn.remote_id))))
        peer.streams[large] = stream
        return stream

    def _auth_tag(self, opener: EndpointId, receiver: EndpointId) -> bytes:
        return self._secret.membership_tag(opener.raw, receiver.raw, purpose=PURPOSE_RAFT_RPC)

    async def _authenticate(self, conn: PeerConnection, stream: PeerStream) -> bool:
        """Read and check the stream's first frame (RaftAuth); False = refused (counted, closed)."""
        try:
            body = await stream.read_frame(timeout_ms=AUTH_TIMEOUT_MS)
            if body is None:
                return False
            auth = decode_auth(body)
            if self._secret.verify_membership_tag(auth.tag, conn.remote_id.raw, self._me.raw,
                                                  purpose=PURPOSE_RAFT_RPC):
                return True
        except (AspenError, TimeoutError):
            pass
        self._refused.labels("bad_secret").inc()
        logger.info("refusing raft-rpc from %s: no valid cluster-secret proof", conn.remote_id.short())
        conn.close(0, "bad cluster secret")
        return False

    async def _connection(self, node_id: int) -> PeerConnection:
        addr = self._view.addr_of(node_id)
        if addr is not None and addr.direct_addrs:
            return await asyncio.wait_for(self._connect(node_id), CONNECT_TIMEOUT_MS / 1000)
        # No dialable address (a joining node knows its leader only by key): answer over the
        # connection that peer opened to us.
        inbound = self._inbound.get(node_id)
        if inbound is not None and getattr(inbound, "is_usable", True):
            return inbound
        raise AspenError(f"no address for node {node_id}")

    async def _drain(self, peer: _Peer) -> None:
        self._check_silence(peer)
        while peer.queue:
            large: list[wm.RaftSend] = []
            small: list[bytes] = []
            size = 0
            while peer.queue and size < SMALL_FRAME_TARGET_SIZE:
                message = peer.queue.popleft()
                if message.large:
                    large.append(message)
                else:
                    small.append(message.payload)
                    size += len(message.payload)
            bytes_out, _, connected = self._children(peer.node_id)
            if small:
                stream = await self._stream(peer, False)
                body = encode_frame(RaftFrame(self._node_id, small))
                await stream.write_frame(body, timeout_ms=SEND_TIMEOUT_MS)
                self._sent_small.inc(len(small))
                bytes_out.inc(len(body))
            for message in large:
                stream = await self._stream(peer, True)
                body = encode_frame(RaftFrame(self._node_id, [message.payload]))
                await stream.write_frame(body, timeout_ms=SEND_TIMEOUT_MS)
                self._sent_large.inc()
                bytes_out.inc(len(body))
            connected.set(1 if peer.conn is not None else 0)

    def _serve_dialed(self, conn: PeerConnection) -> None:
        """Read what the peer sends back on a connection we dialed: a peer without a dialable
        address for us (a joining node) answers over it."""
        if conn in self._served:
            return
        self._served.add(conn)
        task = asyncio.create_task(self._accept_loop(conn), name="raft-rpc-dialed")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._served.discard(conn))

    # ------------------------------------------------------------------ inbound

    def _expected_node(self, conn: PeerConnection) -> int | None:
        """The node id this connection's key may speak for, -1 for "any unbound id" (a node
        that is not initialised yet), or None to refuse it."""
        member = self._view.member_node_id(conn.remote_id)
        if member is not None:
            return member
        if self._view.is_initialized:
            return None
        known = self._view.peers.node_id_of(conn.remote_id)
        return known if known is not None else -1

    async def handle_connection(self, conn: PeerConnection) -> None:
        expected = self._expected_node(conn)
        if expected is None:
            self._refused.labels("not_member").inc()
            logger.info("refusing raft-rpc from non-member endpoint %s", conn.remote_id.short())
            conn.close(0, "not a member of this cluster")
            return
        self._served.add(conn)
        try:
            await self._accept_loop(conn)
        finally:
            self._served.discard(conn)

    async def _accept_loop(self, conn: PeerConnection) -> None:
        async with asyncio.TaskGroup() as group:
            while True:
                stream = await conn.accept_stream()
                if stream is None:
                    return
                group.create_task(self._read_stream(conn, stream))

    async def _read_stream(self, conn: PeerConnection, stream: PeerStream) -> None:
        if not await self._authenticate(conn, stream):
            return
        while True:
            try:
                body = await stream.read_frame()
            except AspenError as exc:
                self._refused.labels("bad_frame").inc()
                logger.info("raft-rpc stream from %s failed: %s", conn.remote_id.short(), exc)
                return
            if body is None:
                return
            try:
                frame = decode_frame(body)
            except AspenError:
                self._refused.labels("bad_frame").inc()
                stream.reset(1)
                return
            expected = self._expected_node(conn)
            if expected is None or (expected != -1 and frame.from_node != expected):
                self._refused.labels("wrong_node_id").inc()
                stream.reset(2)
                return
            if expected == -1:
                from aspen.addr import EndpointAddr

                # A joining node learns who its leader is from the leader's own key.
                if not self._view.peers.update(frame.from_node, EndpointAddr(conn.remote_id), "raft-inbound"):
                    self._refused.labels("wrong_node_id").inc()
                    stream.reset(2)
                    return
            self._inbound[frame.from_node] = conn
            sender = self._peers.get(frame.from_node)
            if sender is not None:
                sender.heard_at = time.monotonic()
            # One ring operation (and at most one worker wake-up) per frame.
            await self._deliver([wm.RaftReceive(frame.from_node, payload) for payload in frame.payloads])
            self._received.inc(len(frame.payloads))
            self._children(frame.from_node)[1].inc(len(body))


__all__ = ["RaftTransport", "RAFT_ALPN", "MAX_QUEUED_MESSAGES_PER_PEER"]
