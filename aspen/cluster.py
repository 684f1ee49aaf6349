"""The node's ClusterApi: client and membership requests, served locally or forwarded.

Any node accepts any request (the Rust Aspen answers 502 on a non-leader). A request goes to the
local worker first; a `NotLeader(leader)` answer sends it to that leader's I/O process over the
`aspen-client/1` ALPN, which submits it to its own worker. A request follows at most
`MAX_FORWARD_ATTEMPTS` leader hints within `CLIENT_REQUEST_TIMEOUT_MS`, waiting briefly while
no leader is known (an election in progress). Writes, linearizable reads and membership changes
go straight to the leader this node knows of (a stale hint costs one NotLeader answer); writes
and reads travel on the raft-rpc stream to the leader's worker (`aspen.forwarding`, etcd's
MsgProp; the leader runs ReadIndex for the reads), the rest over `aspen-client/1`. Stale reads
are served by the local worker.

Forwarded requests are accepted only from members of this cluster (their key is in the
membership), and only the client-request kinds; everything else closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from prometheus_client import CollectorRegistry, Counter

from aspen import api_types as t
from aspen import worker_messages as wm
from aspen.addr import EndpointAddr
from aspen.cluster_view import ClusterView, member_addr_text
from aspen.control_plane import ApiError
from aspen.errors import AspenError, LimitExceeded, WireDecodeError
from aspen.forwarding import LeaderForwarder
from aspen.identity import EndpointId
from aspen.peer_spec import parse_peer_spec
from aspen.plugin_api import PeerConnection
from aspen.raft import kv
from aspen.worker_supervisor import WorkerSupervisor, WorkerUnavailable

logger = logging.getLogger(__name__)

CLIENT_ALPN = "aspen-client/1"
CLIENT_REQUEST_TIMEOUT_MS = 10_000  # a write waits at most this long for commit, forwarding included
MAX_FORWARD_ATTEMPTS = 8  # leader hints followed per request (elections can chain a few)
NO_LEADER_RETRY_MS = 50  # wait between attempts while no leader is known
# Transient refusals (503: a config change still committing, a leader transfer under way, a
# learner catching up) are retried within the request's deadline, this often at most.
MAX_BUSY_RETRIES = 100
BUSY_RETRY_MS = 100
# Forwarded requests that arrive in one event-loop turn travel to the leader as one batch (one
# QUIC stream and one frame instead of one each: aioquic's per-stream costs dominated the
# forwarding node's CPU in perf/kv_bench.py). Bounded in count and bytes (10 MiB frames).
MAX_FORWARD_BATCH = 256
FORWARD_BATCH_TARGET_SIZE = 1024 * 1024
# At most this many forwarded batches in flight to one leader; requests arriving meanwhile wait
# for the next free slot and go together. The batch size then follows the load (one request at
# a time when idle, tens under load) instead of the event loop's turn length: at c=64 batches
# held ~1.2 requests and the per-batch costs (a QUIC stream each way) dominated forwarding.
MAX_FORWARD_BATCHES_IN_FLIGHT = 2
TICKET_PROVIDER_KEY = "cluster_ticket"  # NodeContext.extensions key: () -> {"ticket": ..., ...}
FORWARDABLE = (wm.ClientWrite, wm.ClientRead, wm.AddLearner, wm.ChangeMembership)


class ForwardBatch(msgspec.Struct, tag="forward_batch", frozen=True):
    """Encoded worker requests (ToWorker) a member forwards to the leader, in order."""

    requests: Annotated[list[bytes], msgspec.Meta(max_length=MAX_FORWARD_BATCH)]


class ForwardBatchReply(msgspec.Struct, tag="forward_batch_reply", frozen=True):
    """The encoded FromWorker reply of each request, in the same order."""

    replies: Annotated[list[bytes], msgspec.Meta(max_length=MAX_FORWARD_BATCH)]


_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(ForwardBatch)
_batch_reply_decoder = msgspec.msgpack.Decoder(ForwardBatchReply)


class _Outgoing:
    """Requests waiting to be forwarded to one leader in the next batch."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes, asyncio.Future[bytes]]] = []
        self.size_bytes = 0
        self.scheduled = False
        self.in_flight = 0  # batches sent and not yet answered


class ClusterService:
    """Implements `aspen.control_plane.ClusterApi` and serves forwarded requests."""

    alpn = CLIENT_ALPN

    def __init__(self, *, node_id: int, worker: WorkerSupervisor, view: ClusterView,
                 registry: CollectorRegistry, own_addr: Callable[[], EndpointAddr],
                 http_addr: Callable[[], str], rpc: Callable[[EndpointAddr, str, bytes, int], Any],
                 extensions: dict[str, object] | None = None, leader_forwarder: LeaderForwarder | None = None) -> None:
        self._node_id = node_id
        # Sends writes and reads to the leader over raft-rpc; None: over aspen-client/1.
        self._leader_forwarder = leader_forwarder
        # Plugin-provided extras (NodeContext.extensions): a plugin that can mint cluster tickets
        # (gossip) puts a `() -> dict` under TICKET_PROVIDER_KEY.
        self._extensions = extensions if extensions is not None else {}
        self._worker = worker
        self._view = view
        self._own_addr = own_addr
        self._http_addr = http_addr
        self._rpc = rpc
        self._forwards = Counter("aspen_forwarded_requests", "client requests forwarded to the leader",
                                 ["kind"], registry=registry)
        self._forward_counters: dict[str, Counter] = {}
        self._refused = Counter("aspen_client_forward_refused", "forwarded requests refused by reason",
                                ["reason"], registry=registry)
        self._errors = Counter("aspen_errors", "errors by type (storage, network, rpc)", ["type"],
                               registry=registry)
        self._outgoing: dict[int, _Outgoing] = {}
        self._batch_tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ submitting

    async def _submit(self, make: Callable[[int], wm.ToWorker], *, needs_leader: bool = True) -> wm.FromWorker:
        """Serve `make(request_id)` locally or at the leader. A request that only the leader can
        serve (`needs_leader`: writes, linearizable reads, membership) goes straight to the leader this node knows of
        (a stale hint costs one NotLeader answer); asking the local worker first cost a ring round
        trip and a worker wake-up per forwarded write (measured in perf/kv_bench.py)."""
        deadline = time.monotonic() + CLIENT_REQUEST_TIMEOUT_MS / 1000
        target = self._node_id
        if needs_leader and self._view.leader_id:
            target = self._view.leader_id  # `_forward` answers 502 if its address is unknown
        hints = busy = 0
        last_busy: wm.ErrorReply | None = None
        while hints < MAX_FORWARD_ATTEMPTS and busy < MAX_BUSY_RETRIES:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            try:
                if target == self._node_id:
                    reply = await self._worker.call(make, timeout_ms=remaining_ms)
                else:
                    reply = await self._forward(target, make(0), remaining_ms)
            except WorkerUnavailable as exc:
                raise ApiError(503, f"raft worker unavailable: {exc}") from None
            if isinstance(reply, wm.ErrorReply) and reply.status == 503:
                busy += 1
                last_busy = reply
                await asyncio.sleep(BUSY_RETRY_MS / 1000)
                continue
            if not isinstance(reply, wm.NotLeader):
                return reply
            hints += 1
            target = reply.leader_id or await self._wait_for_leader(deadline)
        if last_busy is not None:
            raise ApiError(503, f"{last_busy.message} (still refused after retrying)")
        raise ApiError(502, "no leader could serve the request in time (election in progress or quorum lost)")

    async def _wait_for_leader(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            if self._view.leader_id:
                return self._view.leader_id
            await asyncio.sleep(NO_LEADER_RETRY_MS / 1000)
        return self._node_id

    async def _forward(self, leader_id: int, message: wm.ToWorker, timeout_ms: int) -> wm.FromWorker:
        addr = self._view.addr_of(leader_id)
        if addr is None:
            raise ApiError(502, f"leader is node {leader_id} but its address is unknown here")
        kind = type(message).__name__
        counter = self._forward_counters.get(kind)
        if counter is None:  # labels() hashes and locks on every call: one lookup per kind
            counter = self._forward_counters[kind] = self._forwards.labels(kind)
        counter.inc()
        forwarder = self._leader_forwarder
        if forwarder is not None:
            if isinstance(message, wm.ClientWrite):
                return await forwarder.forward(leader_id, message.command, timeout_ms)
            if isinstance(message, wm.ClientRead) and message.linearizable:
                return await forwarder.forward_read(leader_id, message.query, timeout_ms)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        encoded = wm.encode(message)
        out = self._outgoing.setdefault(leader_id, _Outgoing())
        out.items.append((encoded, future))
        out.size_bytes += len(encoded)
        if len(out.items) >= MAX_FORWARD_BATCH or out.size_bytes >= FORWARD_BATCH_TARGET_SIZE:
            self._send_batch(leader_id, addr, full=True)
        elif not out.scheduled and out.in_flight < MAX_FORWARD_BATCHES_IN_FLIGHT:
            out.scheduled = True
            asyncio.get_running_loop().call_soon(self._send_batch, leader_id, addr)
        try:
            raw = await asyncio.wait_for(future, timeout_ms / 1000)
            return wm.decode_from_worker(raw)
        except (AspenError, OSError, TimeoutError) as exc:
            self._errors.labels("network").inc()
            raise ApiError(502, f"forwarding to leader {leader_id} failed: {exc}") from None

    def _send_batch(self, leader_id: int, addr: EndpointAddr, *, full: bool = False) -> None:
        """Send what is waiting for `leader_id` if a slot is free (or the batch is full)."""
        out = self._outgoing.get(leader_id)
        if out is None:
            return
        out.scheduled = False
        if not out.items or (out.in_flight >= MAX_FORWARD_BATCHES_IN_FLIGHT and not full):
            return  # the next answered batch sends these
        items, out.items, out.size_bytes = out.items, [], 0
        out.in_flight += 1
        task = asyncio.create_task(self._deliver_batch(addr, items), name=f"forward-{leader_id}")
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)
        task.add_done_callback(lambda _: self._batch_done(leader_id, addr, out))

    def _batch_done(self, leader_id: int, addr: EndpointAddr, out: _Outgoing) -> None:
        out.in_flight -= 1
        if out.items and not out.scheduled:
            out.scheduled = True
            asyncio.get_running_loop().call_soon(self._send_batch, leader_id, addr)

    async def _deliver_batch(self, addr: EndpointAddr, items: list[tuple[bytes, asyncio.Future[bytes]]]) -> None:
        try:
            body = _batch_encoder.encode(ForwardBatch([encoded for encoded, _ in items]))
            raw = await self._rpc(addr, CLIENT_ALPN, body, CLIENT_REQUEST_TIMEOUT_MS)
            replies = _batch_reply_decoder.decode(raw).replies
            if len(replies) != len(items):
                raise WireDecodeError(f"leader answered {len(replies)} of {len(items)} forwarded requests")
        except (AspenError, OSError, TimeoutError, msgspec.DecodeError) as exc:
            for _, future in items:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, AspenError) else WireDecodeError(str(exc)))
            return
        for (_, future), reply in zip(items, replies):
            if not future.done():
                future.set_result(reply)

    @staticmethod
    def _check(reply: wm.FromWorker) -> wm.FromWorker:
        if isinstance(reply, wm.ErrorReply):
            raise ApiError(reply.status, reply.message)
        return reply

    # ------------------------------------------------------------------ ClusterApi

    async def write(self, command: kv.KvCommand) -> kv.KvResult:
        data = kv.encode_command(command)
        reply = self._check(await self._submit(lambda rid: wm.ClientWrite(rid, data)))
        assert isinstance(reply, wm.WriteDone), reply
        return kv.decode_result(reply.result)

    async def read(self, query: kv.Get | kv.Scan, *, linearizable: bool) -> kv.GetResult | kv.ScanResult:
        data = kv.encode_command(query)
        reply = self._check(await self._submit(lambda rid: wm.ClientRead(rid, data, linearizable),
                                               needs_leader=linearizable))
        assert isinstance(reply, wm.ReadDone), reply
        result = kv.decode_result(reply.result)
        assert isinstance(result, (kv.GetResult, kv.ScanResult))
        return result

    def _resolve_addr(self, node: t.ClusterNode) -> str:
        """The membership address text for `node`: explicit endpoint_addr, an endpoint id or
        EndpointAddr in raft_addr, ourselves, or what the peer map knows — else 400."""
        if node.id == self._node_id:
            return member_addr_text(self._own_addr(), node.addr or self._http_addr(), node.raft_addr)
        if node.endpoint_addr is not None:
            try:
                return member_addr_text(EndpointAddr.from_json(node.endpoint_addr), node.addr, node.raft_addr)
            except ValueError as exc:
                raise ApiError(422, f"invalid request body: {exc} - at `endpoint_addr` of node {node.id}") from None
        if node.raft_addr:
            try:
                _, addr = parse_peer_spec(f"{node.id}@{node.raft_addr}")
            except ValueError:
                pass  # the Rust docs put arbitrary text here; fall through to the peer map
            else:
                known = self._view.peers.get(node.id)
                if known is not None and known.addr.endpoint_id == addr.endpoint_id:
                    addr = known.addr
                return member_addr_text(addr, node.addr, node.raft_addr)
        known = self._view.peers.get(node.id)
        if known is None:
            raise ApiError(400, f"no address known for node {node.id}: pass endpoint_addr, start it with "
                                f"--peers, call /add-peer, or let discovery find it")
        return member_addr_text(known.addr, node.addr, node.raft_addr)

    def _cluster_state(self, reply: wm.FromWorker) -> dict[str, Any]:
        reply = self._check(reply)
        assert isinstance(reply, wm.ClusterState), reply
        from aspen.cluster_view import parse_member_addr

        def node_json(node_id: int) -> dict[str, Any]:
            member = parse_member_addr(reply.addrs.get(node_id, ""))
            return {"id": node_id, "addr": member.addr, "raft_addr": member.raft_addr,
                    "endpoint_addr": member.endpoint_addr.to_json() if member.endpoint_addr else None}

        return {"nodes": [node_json(n) for n in reply.voters], "members": list(reply.voters),
                "learners": [node_json(n) for n in reply.learners]}

    async def init(self, members: list[t.ClusterNode]) -> dict[str, Any]:
        ids = [m.id for m in members]
        if len(set(ids)) != len(ids):
            raise ApiError(400, "initial_members lists a node twice")
        if self._node_id not in ids:
            raise ApiError(400, f"this node ({self._node_id}) must be one of initial_members")
        addrs = {m.id: self._resolve_addr(m) for m in members}
        return self._cluster_state(await self._worker.call(lambda rid: wm.InitCluster(rid, addrs)))

    async def add_learner(self, learner: t.ClusterNode) -> dict[str, Any]:
        addr = self._resolve_addr(learner)
        return self._cluster_state(await self._submit(lambda rid: wm.AddLearner(rid, learner.id, addr)))

    async def change_membership(self, voters: list[int]) -> dict[str, Any]:
        if len(set(voters)) != len(voters):
            raise ApiError(400, "members lists a node twice")
        return self._cluster_state(await self._submit(lambda rid: wm.ChangeMembership(rid, sorted(voters))))

    async def promote_learner(self, request: t.PromoteLearnerRequest) -> dict[str, Any]:
        status = await self._status()
        if request.learner_id not in status.learners:
            raise ApiError(400, f"node {request.learner_id} is not a learner")
        previous = list(status.voters)
        target = set(previous) | {request.learner_id}
        if request.replace_node is not None:
            target.discard(request.replace_node)
        state = await self.change_membership(sorted(target))
        return {"success": True, "learner_id": request.learner_id, "previous_voters": previous,
                "new_voters": state["members"],
                "message": f"Learner {request.learner_id} promoted to voter successfully"}

    async def add_peer(self, node_id: int, addr: EndpointAddr) -> None:
        if not self._view.peers.update(node_id, addr, "api"):
            raise ApiError(409, f"node {node_id} is already bound to another endpoint id")

    async def _status(self) -> wm.RaftStatus:
        try:
            reply = await self._worker.call(wm.RaftStatusRequest)
        except WorkerUnavailable as exc:
            raise ApiError(503, f"raft worker unavailable: {exc}") from None
        assert isinstance(reply, wm.RaftStatus), reply
        return reply

    async def raft_metrics(self) -> dict[str, Any]:
        s = await self._status()
        return {
            "node_id": s.node_id, "state": s.role,
            "current_leader": s.leader_id or None, "current_term": s.term,
            "last_log_index": s.last_log_index, "commit_index": s.commit_index,
            "last_applied": {"term": s.applied_term, "index": s.applied_index} if s.applied_index else None,
            "snapshot": {"term": s.snapshot_term, "index": s.snapshot_index} if s.snapshot_index else None,
            "replication": ({str(n): {"term": s.term, "index": m} for n, m in sorted(s.replication.items())}
                            if s.role == "Leader" else None),
            "voters": s.voters, "learners": s.learners, "fsyncs": s.fsyncs,
        }

    async def leader(self) -> int | None:
        return self._view.leader_id or None

    async def trigger_snapshot(self) -> dict[str, Any] | None:
        try:
            reply = self._check(await self._worker.call(wm.TriggerSnapshot))
        except WorkerUnavailable as exc:
            raise ApiError(503, f"raft worker unavailable: {exc}") from None
        assert isinstance(reply, wm.SnapshotDone), reply
        return {"term": reply.term, "index": reply.index} if reply.index else None

    async def cluster_ticket(self) -> dict[str, Any]:
        provider = self._extensions.get(TICKET_PROVIDER_KEY)
        if not callable(provider):
            raise ApiError(501, "cluster tickets need the gossip plugin (not loaded on this node)")
        ticket = provider()
        assert isinstance(ticket, dict)
        return ticket

    # ------------------------------------------------------------------ serving forwards

    async def handle_connection(self, conn: PeerConnection) -> None:
        """ProtocolHandler for CLIENT_ALPN: members forward their clients' requests here."""
        if self._view.member_node_id(conn.remote_id) is None:
            self._refused.labels("not_member").inc()
            conn.close(0, "not a member of this cluster")
            return
        from aspen.quic import serve_rpc

        await serve_rpc(conn, self._serve_forward)

    async def _serve_forward(self, body: bytes) -> bytes:
        """Answer a ForwardBatch: every request goes to our worker in one ring write (they share
        its next pump, hence one fsync), replies come back in order."""
        try:
            batch = _batch_decoder.decode(body)
        except msgspec.DecodeError:
            self._refused.labels("malformed").inc()
            return _batch_encoder.encode(ForwardBatchReply([]))
        replies: list[bytes | None] = []
        makes: list[Callable[[int], wm.ToWorker]] = []
        for encoded in batch.requests:
            refusal = self._forward_refusal(encoded)
            if isinstance(refusal, bytes):
                replies.append(refusal)
            else:
                replies.append(None)
                makes.append(_with_request_id(refusal))
        if makes:
            try:
                answers = [wm.encode(reply) for reply in
                           await self._worker.call_many(makes, timeout_ms=CLIENT_REQUEST_TIMEOUT_MS)]
            except (WorkerUnavailable, LimitExceeded) as exc:
                busy = wm.encode(wm.ErrorReply(0, f"raft worker unavailable on the leader: {exc}", 503))
                answers = [busy] * len(makes)
            it = iter(answers)
            replies = [next(it) if reply is None else reply for reply in replies]
        return _batch_encoder.encode(ForwardBatchReply([r for r in replies if r is not None]))

    def _forward_refusal(self, encoded: bytes) -> bytes | wm.ToWorker:
        """The decoded request if it may be forwarded, else the encoded refusal (counted)."""
        try:
            message = wm.decode_to_worker(encoded)
        except WireDecodeError:
            self._refused.labels("malformed").inc()
            return wm.encode(wm.ErrorReply(0, "malformed forwarded request", 400))
        if not isinstance(message, FORWARDABLE):
            self._refused.labels("kind").inc()
            return wm.encode(wm.ErrorReply(0, f"{type(message).__name__} cannot be forwarded", 400))
        return message


def _with_request_id(message: wm.ToWorker) -> Callable[[int], wm.ToWorker]:
    return lambda rid: msgspec.structs.replace(message, request_id=rid)


__all__ = ["ClusterService", "TICKET_PROVIDER_KEY", "CLIENT_ALPN", "CLIENT_REQUEST_TIMEOUT_MS", "MAX_FORWARD_ATTEMPTS"]
