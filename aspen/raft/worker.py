"""RaftWorker: drives RaftCore + storage + the KV state machine inside the worker process.

The process shell (`aspen/worker_process.py`) reads messages from the ring, hands them to
`handle(message, now_ms)`, calls `tick(now_ms)` when `next_deadline_ms()` is due, then `pump()`,
and puts every returned message on the outbound ring. This class owns no ring, socket or clock,
so tests drive it directly with a ManualClock.

`pump()` follows the Ready contract (aspen/raft/ready.py) to the letter: persist (one fsync for
every entry proposed since the last pump — this is the group commit: a burst of client writes
drained from the ring in one go costs one sync), then send, then apply and answer clients, then
snapshot/compact, then advance. A leader widens the group: while every follower has an append in
flight (so a new partial append would wait for its acknowledgement anyway), client writes are
held until the next peer message instead of each costing a pump with its own fsync
(MAX_WRITE_HOLD_MS).

Client requests are answered when their outcome is known: a write when the entry at its
(term, index) is applied (another term there means it was lost: 502, the client retries); a
linearizable read when its ReadIndex round confirmed leadership and the state machine reached
the read index (followers serve reads too: the core forwards the ReadIndex to the leader).
A leader proposes the client writes a follower's I/O process forwarded (`ForwardedWrites`,
etcd's MsgProp, aspen.forwarding) and answers with `ForwardedResults` once applied. Any
request this node cannot serve gets `NotLeader(leader_id)`; the I/O process forwards it.

Membership changes are one voter at a time (the core's rule); `ChangeMembership` to a set that
differs by several voters runs as a plan of single steps, answered when the last one commits. A
leader never removes itself: it first hands leadership to a remaining voter and answers
NotLeader, so the request is re-sent to the new leader.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aspen import worker_messages as wm
from aspen.errors import LimitExceeded, WireDecodeError
from aspen.raft import kv
from aspen.raft.config import RaftConfig
from aspen.raft.core import RaftCore
from aspen.raft.messages import (
    STATUS_NOT_LEADER,
    ForwardedReads,
    ForwardedResult,
    ForwardedResults,
    ForwardedWrites,
    chunk_by_size,
    InstallSnapshot,
    decode_message,
    encode_message,
)
from aspen.raft.ready import (
    ProposalDropped,
    Ready,
    Role,
    may_apply_before_persisting,
    may_send_before_persisting,
    write_ready,
)
from aspen.raft.types import NO_NODE, Entry, EntryKind, HardState, Membership, RaftStorage, Snapshot

logger = logging.getLogger(__name__)

# Client requests waiting for their entry or read index. Bounded so a node cut off from its
# quorum cannot accumulate them forever; beyond it new requests get 503. guess: revisit.
MAX_PENDING_CLIENT_REQUESTS = 100_000
# A leader whose every follower has an append in flight holds new client writes until the next
# message from a peer (normally that acknowledgement) instead of proposing and syncing each on
# its own: their entries could not be sent before it anyway (hold_partial_appends). Bounds: the
# writes go at the latest this long after the first was held (a silent follower), or at once
# when they would fill an append.
MAX_WRITE_HOLD_MS = 10
# Voter changes one ChangeMembership may need (add + remove for each of MAX_MEMBERS).
MAX_PLAN_STEPS = 200
# A ReadIndex round normally resolves within a heartbeat round trip; one still unresolved after
# this long (its request or answer was lost, or leadership moved mid-round) is handed back as
# NotLeader so the I/O process retries it. Above the default election timeout (3 s max).
READ_INDEX_TIMEOUT_MS = 4_000

ROLE_NAMES = {Role.LEADER: "Leader", Role.FOLLOWER: "Follower", Role.CANDIDATE: "Candidate",
              Role.PRE_CANDIDATE: "Candidate"}


@dataclass
class _PendingWrite:
    request_id: int
    term: int
    origin: int = 0  # the follower that forwarded it (answered with a ForwardedResult), 0 = ours


@dataclass
class _PendingRead:
    request_id: int
    query: kv.Get | kv.Scan
    started_ms: int
    index: int = -1  # set when the ReadState arrives
    origin: int = 0  # the follower that forwarded it (answered with a ForwardedResult), 0 = ours


@dataclass
class _MembershipPlan:
    """A multi-step voter change, answered when the final step commits."""

    request_id: int
    target_voters: frozenset[int]
    conf_index: int = 0  # the step currently in flight (0 = none)
    steps: int = 0


@dataclass
class _Waiters:
    writes: dict[int, _PendingWrite] = field(default_factory=dict)  # by log index
    reads: dict[int, _PendingRead] = field(default_factory=dict)  # by read id
    confs: dict[int, int] = field(default_factory=dict)  # conf entry index -> request id
    snapshots: list[int] = field(default_factory=list)  # request ids waiting for a snapshot

    def count(self) -> int:
        return len(self.writes) + len(self.reads) + len(self.confs) + len(self.snapshots)


def _result_size(result: ForwardedResult) -> int:
    return len(result.result) + len(result.message)


def node_role(core: RaftCore) -> str:
    if core.role is Role.FOLLOWER and core.id not in core.membership.voters:
        return "Learner"
    return ROLE_NAMES[core.role]


class RaftWorker:
    """One node's consensus, storage and state machine. See the module docstring."""

    def __init__(self, config: RaftConfig, storage: RaftStorage, *, rng: random.Random,
                 send_now: Callable[[list[wm.FromWorker]], None] | None = None) -> None:
        self._config = config
        # If set, a leader hands its appends to the I/O process *before* its own fsync (Raft
        # thesis §10.2.1), so the followers' fsyncs overlap the leader's, and with them its
        # answers to entries that earlier pumps synced (aspen.raft.ready.may_*_before_persisting).
        # Safe here because this worker is single-threaded: an acknowledgement is processed only
        # after the pump that synced those entries has returned, so commit never counts an
        # unsynced leader entry.
        self.send_now = send_now
        self._held_writes: list[tuple[int, bytes]] = []  # (request id, command): see MAX_WRITE_HOLD_MS
        self._held_bytes = 0
        self._held_since_ms = 0
        self._released_out: list[wm.FromWorker] = []  # refusals of writes released outside handle()
        self._storage = storage
        self._rng = rng
        self.kv = kv.KvStateMachine()
        snapshot = storage.snapshot()
        if snapshot.meta.index > 0 and snapshot.data:
            self.kv.restore(snapshot.data)
        self._snapshot_index = snapshot.meta.index
        self._snapshot_term = snapshot.meta.term
        self.core = RaftCore(config, storage, rng=rng)
        self._waiters = _Waiters()
        # Results of writes followers forwarded, per follower, sent at the end of the pump.
        self._results_out: dict[int, list[ForwardedResult]] = {}
        self._plan: _MembershipPlan | None = None
        self._next_read_id = 1
        self._applied_term = snapshot.meta.term
        self._last_update: wm.StateUpdate | None = None
        self._persisted_hs, _ = storage.initial_state()
        self.fsyncs = 0
        self.fsync_seconds_total = 0.0  # time spent in storage.sync(), for /metrics
        self.fsync_seconds_max = 0.0

    # ------------------------------------------------------------------ inputs

    def next_deadline_ms(self) -> int:
        deadline = self.core.next_deadline_ms()
        if self._held_writes:
            deadline = min(deadline, self._held_since_ms + MAX_WRITE_HOLD_MS)
        return deadline

    def tick(self, now_ms: int) -> None:
        if self._held_writes and now_ms >= self._held_since_ms + MAX_WRITE_HOLD_MS:
            self._released_out.extend(self._release_writes(now_ms))
        self.core.tick(now_ms)

    def _hold_write(self, rid: int, command: bytes, now_ms: int) -> bool:
        """True if this client write waits (MAX_WRITE_HOLD_MS) rather than being proposed now."""
        held = self._held_writes
        if not held:
            core = self.core
            if not (core.is_leader and core.new_entries_would_wait()):
                return False
            self._held_since_ms = now_ms
        held.append((rid, command))
        self._held_bytes += len(command)
        cfg = self._config
        if len(held) >= cfg.max_entries_per_append or self._held_bytes >= cfg.max_append_size_bytes:
            self._released_out.extend(self._release_writes(now_ms))  # a full append goes at once
        return True

    def _release_writes(self, now_ms: int) -> list[wm.FromWorker]:
        """Propose every held write, in arrival order; returns their immediate refusals."""
        held, self._held_writes, self._held_bytes = self._held_writes, [], 0
        out: list[wm.FromWorker] = []
        for rid, command in held:
            out.extend(self._write(rid, command, now_ms))
        return out

    def handle(self, message: wm.ToWorker, now_ms: int) -> list[wm.FromWorker]:
        """Feed one message; returns immediate replies (others come out of `pump`)."""
        match message:
            case wm.RaftReceive(from_node=from_node, payload=payload):
                out = self._release_writes(now_ms) if self._held_writes else []  # arrival order
                self._receive(from_node, payload, now_ms)
                return out
            case wm.ClientWrite(request_id=rid, command=command):
                if self._hold_write(rid, command, now_ms):
                    return []
                return self._write(rid, command, now_ms)
            case wm.ClientRead(request_id=rid, query=query, linearizable=linearizable):
                return self._read(rid, query, linearizable, now_ms)
            case wm.InitCluster(request_id=rid, members=members):
                return self._init(rid, members, now_ms)
            case wm.AddLearner(request_id=rid, node_id=node_id, addr=addr):
                return self._add_learner(rid, node_id, addr, now_ms)
            case wm.ChangeMembership(request_id=rid, voters=voters):
                return self._change_membership(rid, frozenset(voters), now_ms)
            case wm.TriggerSnapshot(request_id=rid):
                return self._trigger_snapshot(rid, now_ms)
            case wm.RaftStatusRequest(request_id=rid):
                return [self.status(rid)]
            case _:
                raise AssertionError(f"not a Raft message: {message!r}")

    def _receive(self, from_node: int, payload: bytes, now_ms: int) -> None:
        try:
            msg = decode_message(payload)
        except WireDecodeError as exc:
            logger.warning("dropping undecodable Raft message from node %d: %s", from_node, exc)
            return
        if msg.from_id != from_node:
            # The I/O process authenticated the sender as `from_node`; a message claiming to be
            # from another node is an impersonation attempt, never applied.
            logger.warning("dropping Raft message from node %d claiming to be node %d", from_node, msg.from_id)
            return
        if isinstance(msg, ForwardedWrites):
            self._propose_forwarded(msg, now_ms)
        elif isinstance(msg, ForwardedReads):
            self._serve_forwarded_reads(msg, now_ms)
        elif isinstance(msg, ForwardedResults):
            # The follower's I/O process takes its answers (aspen.forwarding); one that
            # reached the worker anyway (sent while this node was restarting) has no waiter.
            logger.debug("ignoring forwarded-write answers from node %d", from_node)
        else:
            self.core.step(msg, now_ms)

    def _propose_forwarded(self, msg: ForwardedWrites, now_ms: int) -> None:
        """Leader: propose a follower's writes; each is answered when applied or refused."""
        if not self._accepts_forwarded(msg.from_id, msg.to_id):
            return
        for write in msg.writes:
            refusal = self._forwarded_refusal(write.request_id)
            if refusal is None:
                try:
                    term, index = self.core.propose(write.command, now_ms)
                except ProposalDropped as exc:
                    refusal = ForwardedResult(write.request_id, STATUS_NOT_LEADER, leader_id=exc.leader_id) \
                        if exc.reason == "not_leader" else \
                        ForwardedResult(write.request_id, 503, message=f"write refused: {exc.reason}")
                except LimitExceeded as exc:
                    refusal = ForwardedResult(write.request_id, 400, message=str(exc))
                else:
                    self._waiters.writes[index] = _PendingWrite(write.request_id, term, origin=msg.from_id)
            if refusal is not None:
                self._results_out.setdefault(msg.from_id, []).append(refusal)

    def _serve_forwarded_reads(self, msg: ForwardedReads, now_ms: int) -> None:
        """Leader: run ReadIndex for a follower's reads; each is answered once applied, or refused."""
        if not self._accepts_forwarded(msg.from_id, msg.to_id):
            return
        for read in msg.reads:
            refusal = self._forwarded_refusal(read.request_id)
            if refusal is None:
                try:
                    query = kv.decode_command(read.query)
                except WireDecodeError as exc:
                    refusal = ForwardedResult(read.request_id, 400, message=str(exc))
                else:
                    if isinstance(query, (kv.Get, kv.Scan)):
                        self._start_read(read.request_id, query, now_ms, origin=msg.from_id)
                    else:
                        refusal = ForwardedResult(read.request_id, 400, message="not a read query")
            if refusal is not None:
                self._results_out.setdefault(msg.from_id, []).append(refusal)

    def _accepts_forwarded(self, from_id: int, to_id: int) -> bool:
        # Only members forward (the I/O process authenticated the sender as that node).
        return to_id == self.core.id and from_id in self.core.membership.members()

    def _forwarded_refusal(self, request_id: int) -> ForwardedResult | None:
        """Why a forwarded request cannot even be tried here (not the leader, too busy), if so."""
        if not self.core.is_leader:
            return ForwardedResult(request_id, STATUS_NOT_LEADER, leader_id=self.core.leader_id)
        if self._waiters.count() >= MAX_PENDING_CLIENT_REQUESTS:
            return ForwardedResult(request_id, 503, message="too many requests in flight on the leader")
        return None

    def _leader_hint(self) -> int:
        """The leader to retry at: NO_NODE when none is known or this node just stopped leading."""
        return self.core.leader_id if self.core.leader_id != self.core.id else NO_NODE

    def _fail(self, origin: int, request_id: int, status: int, message: str, out: list[wm.FromWorker]) -> None:
        """Answer a request with an error: a ForwardedResult to the follower it came from
        (`origin`), else an ErrorReply to our I/O process."""
        if origin:
            self._results_out.setdefault(origin, []).append(ForwardedResult(request_id, status, message=message))
        else:
            out.append(wm.ErrorReply(request_id, message, status))

    def _start_read(self, rid: int, query: kv.Get | kv.Scan, now_ms: int, origin: int = 0) -> None:
        read_id = self._next_read_id
        self._next_read_id += 1
        self._waiters.reads[read_id] = _PendingRead(rid, query, now_ms, origin=origin)
        self.core.read_index(read_id, now_ms)

    def _answer_read(self, pending: _PendingRead, out: list[wm.FromWorker], *, done: bool) -> None:
        """`done`: the read index is applied, serve it; else no leader confirmed it: retry."""
        leader = self._leader_hint()
        if pending.origin:
            self._results_out.setdefault(pending.origin, []).append(
                ForwardedResult(pending.request_id, 200, kv.encode_result(self.kv.read(pending.query))) if done else
                ForwardedResult(pending.request_id, STATUS_NOT_LEADER, leader_id=leader))
        elif done:
            out.append(wm.ReadDone(pending.request_id, kv.encode_result(self.kv.read(pending.query))))
        else:
            out.append(wm.NotLeader(pending.request_id, leader))

    def _busy(self, rid: int) -> list[wm.FromWorker] | None:
        if self._waiters.count() >= MAX_PENDING_CLIENT_REQUESTS:
            return [wm.ErrorReply(rid, "too many requests in flight (MAX_PENDING_CLIENT_REQUESTS)", 503)]
        return None

    def _not_initialized(self, rid: int) -> list[wm.FromWorker] | None:
        # A node that never took part in an election nor heard of a configuration is fresh; one
        # that has (term > 0) is in a cluster whose leader it may just not know yet.
        if not self.core.membership.members() and self.core.term == 0:
            return [wm.ErrorReply(rid, "cluster not initialized", 412)]
        return None

    def _write(self, rid: int, command: bytes, now_ms: int) -> list[wm.FromWorker]:
        early = self._busy(rid) or self._not_initialized(rid)
        if early:
            return early
        if not self.core.is_leader:
            return [wm.NotLeader(rid, self._leader_hint())]
        try:
            term, index = self.core.propose(command, now_ms)
        except ProposalDropped as exc:
            return [wm.NotLeader(rid, exc.leader_id)] if exc.reason == "not_leader" else \
                [wm.ErrorReply(rid, f"write refused: {exc.reason}", 503)]
        except LimitExceeded as exc:
            return [wm.ErrorReply(rid, str(exc), 400)]
        self._waiters.writes[index] = _PendingWrite(rid, term)
        return []

    def _read(self, rid: int, query_bytes: bytes, linearizable: bool, now_ms: int) -> list[wm.FromWorker]:
        early = self._busy(rid)
        if early:
            return early
        try:
            query = kv.decode_command(query_bytes)
        except WireDecodeError as exc:
            return [wm.ErrorReply(rid, str(exc), 400)]
        if not isinstance(query, (kv.Get, kv.Scan)):
            return [wm.ErrorReply(rid, "not a read query", 400)]
        if not linearizable:
            return [wm.ReadDone(rid, kv.encode_result(self.kv.read(query)))]
        not_init = self._not_initialized(rid)
        if not_init:
            return not_init
        self._start_read(rid, query, now_ms)
        return []

    # ------------------------------------------------------------------ membership

    def _state(self, rid: int, membership: Membership) -> wm.ClusterState:
        return wm.ClusterState(rid, sorted(membership.voters), sorted(membership.learners), dict(membership.addrs))

    def _init(self, rid: int, members: dict[int, str], now_ms: int) -> list[wm.FromWorker]:
        core = self.core
        if core.membership.members() or core.last_index > 0 or core.term > 0:
            return [wm.ErrorReply(rid, "cluster already initialized (or this node has joined one)", 400)]
        if core.id not in members:
            return [wm.ErrorReply(rid, f"this node ({core.id}) must be one of initial_members", 400)]
        membership = Membership(voters=frozenset(members), learners=frozenset(), addrs=dict(members))
        try:
            membership.validate()
        except ValueError as exc:
            return [wm.ErrorReply(rid, str(exc), 400)]
        # etcd-style bootstrap: the initial configuration is entry 1 of term 1, committed by
        # definition. Only this node writes it; the others receive it from the leader it elects.
        from aspen.raft.types import encode_membership

        entry = Entry(1, 1, EntryKind.CONFIG, encode_membership(membership))
        self._storage.append([entry])
        self._storage.set_hard_state(HardState(term=1, vote=NO_NODE, commit=1))
        self._storage.sync()
        self.fsyncs += 1
        self.core = RaftCore(self._config, self._storage, rng=self._rng)
        # Campaign at once rather than after a full election timeout: init is an explicit ask.
        self.core.tick(now_ms)
        self._waiters.confs[1] = rid
        return []

    def _propose_membership(self, rid: int, membership: Membership, now_ms: int) -> list[wm.FromWorker] | int:
        if not self.core.is_leader:
            return [wm.NotLeader(rid, self.core.leader_id)]
        try:
            return self.core.change_membership(membership, now_ms)
        except ProposalDropped as exc:
            if exc.reason == "not_leader":
                return [wm.NotLeader(rid, exc.leader_id)]
            return [wm.ErrorReply(rid, f"membership change refused: {exc.reason}", 503)]
        except ValueError as exc:
            return [wm.ErrorReply(rid, str(exc), 400)]

    def _add_learner(self, rid: int, node_id: int, addr: str, now_ms: int) -> list[wm.FromWorker]:
        early = self._busy(rid) or self._not_initialized(rid)
        if early:
            return early
        m = self.core.membership
        if node_id in m.voters:
            return [wm.ErrorReply(rid, f"node {node_id} is already a voter", 400)]
        new = Membership(voters=m.voters, learners=m.learners | {node_id}, addrs={**m.addrs, node_id: addr})
        result = self._propose_membership(rid, new, now_ms)
        if isinstance(result, list):
            return result
        self._waiters.confs[result] = rid
        return []

    def _change_membership(self, rid: int, target: frozenset[int], now_ms: int) -> list[wm.FromWorker]:
        early = self._busy(rid) or self._not_initialized(rid)
        if early:
            return early
        if not self.core.is_leader:
            return [wm.NotLeader(rid, self.core.leader_id)]
        m = self.core.membership
        unknown = sorted(target - m.members())
        if unknown:
            return [wm.ErrorReply(rid, f"nodes {unknown} are not members; add them as learners first", 400)]
        if self._plan is not None:
            return [wm.ErrorReply(rid, "another membership change is in progress", 503)]
        self._plan = _MembershipPlan(rid, target)
        return self._advance_plan(now_ms)

    def _advance_plan(self, now_ms: int) -> list[wm.FromWorker]:
        """Propose the next single-voter step of the plan, or answer when it is done."""
        plan = self._plan
        assert plan is not None
        core = self.core
        m = core.membership
        if m.voters == plan.target_voters:
            self._plan = None
            return [self._state(plan.request_id, m)]
        if plan.steps >= MAX_PLAN_STEPS:
            self._plan = None
            return [wm.ErrorReply(plan.request_id, "membership plan did not converge", 502)]
        to_add = sorted(plan.target_voters - m.voters)
        to_remove = sorted(m.voters - plan.target_voters)
        if to_add:
            node = to_add[0]
            new = Membership(voters=m.voters | {node}, learners=m.learners - {node}, addrs=m.addrs)
        else:
            node = next((n for n in to_remove if n != core.id), core.id)
            if node == core.id:
                # Thesis §4.2.2: rather than lead a configuration it is not part of, the leader
                # hands over to a remaining voter; the client's retry reaches the new leader.
                successor = min(plan.target_voters)
                self._plan = None
                try:
                    core.transfer_leadership(successor, now_ms)
                except ProposalDropped as exc:
                    return [wm.ErrorReply(plan.request_id, f"leader transfer refused: {exc.reason}", 503)]
                return [wm.NotLeader(plan.request_id, successor)]
            addrs = {k: v for k, v in m.addrs.items() if k != node}
            new = Membership(voters=m.voters - {node}, learners=m.learners - {node}, addrs=addrs)
        result = self._propose_membership(plan.request_id, new, now_ms)
        if isinstance(result, list):
            self._plan = None
            return result
        plan.conf_index = result
        plan.steps += 1
        return []

    def _trigger_snapshot(self, rid: int, now_ms: int) -> list[wm.FromWorker]:
        if self.core.applied_index <= self._snapshot_index:
            return [wm.SnapshotDone(rid, self._snapshot_index, self._snapshot_term)]
        self.core.request_snapshot(now_ms)
        self._waiters.snapshots.append(rid)
        return []

    # ------------------------------------------------------------------ the Ready loop

    def pump(self, now_ms: int) -> list[wm.FromWorker]:
        """Process every pending Ready; returns messages for the I/O process, in order."""
        out, self._released_out = self._released_out, []
        sends: list[wm.RaftSend] = []
        while (rd := self.core.ready()) is not None:
            batch = [wm.RaftSend(msg.to_id, payload, isinstance(msg, InstallSnapshot) or len(payload) >= wm.LARGE_MESSAGE_SIZE)
                     for msg in rd.messages for payload in (encode_message(msg),)]
            applied = False
            if batch and self.send_now is not None and \
                    may_send_before_persisting(rd, self.core.is_leader, self._persisted_hs):
                early: list[wm.FromWorker] = list(wm.send_batches(batch))
                if may_apply_before_persisting(rd):
                    # Answer what earlier pumps synced now: this Ready's fsync then overlaps
                    # the answers' way back to the clients.
                    self._apply(rd, out, now_ms)
                    applied = True
                    early.extend(wm.send_batches(self._forwarding_sends()))
                    early.extend(out)
                    out.clear()
                self.send_now(early)
                self._persist(rd)
            else:
                self._persist(rd)  # the Ready contract: durable before anything is sent
                sends.extend(batch)
            if not applied:
                self._apply(rd, out, now_ms)
            self._take_snapshot(rd, out)
            self.core.advance(rd)
        sends.extend(self._forwarding_sends())
        out[:0] = wm.send_batches(sends)  # Raft traffic first
        self._expire_reads(out, now_ms)
        update = self._state_update()
        if update is not None:
            out.append(update)
        if self._plan is not None and self._plan.conf_index and self._plan.conf_index <= self.core.applied_index:
            self._plan.conf_index = 0
            out.extend(self._advance_plan(now_ms))
            out.extend(self.pump(now_ms))
        return out

    def _persist(self, rd: Ready) -> None:
        storage = self._storage
        write_ready(storage, rd)
        if rd.hard_state is not None:
            self._persisted_hs = rd.hard_state
        if rd.must_sync:
            started = time.perf_counter()
            storage.sync()
            elapsed = time.perf_counter() - started
            self.fsyncs += 1
            self.fsync_seconds_total += elapsed
            self.fsync_seconds_max = max(self.fsync_seconds_max, elapsed)

    def _apply(self, rd: Ready, out: list[wm.FromWorker], now_ms: int) -> None:
        if rd.snapshot is not None:
            self._restore(rd.snapshot)
        waiters = self._waiters
        for entry in rd.committed_entries:
            # CONFIG and NOOP entries advance the state machine's applied index as NoOps.
            is_command = entry.kind is EntryKind.NORMAL
            result = self.kv.apply(entry.index, entry.data if is_command else b"")
            self._applied_term = entry.term
            pending = waiters.writes.pop(entry.index, None)
            if pending is not None:
                if not (pending.term == entry.term and is_command):
                    self._fail(pending.origin, pending.request_id, 502, "write lost to a leader change; retry", out)
                elif pending.origin:
                    self._results_out.setdefault(pending.origin, []).append(
                        ForwardedResult(pending.request_id, 200, kv.encode_result(result)))
                else:
                    out.append(wm.WriteDone(pending.request_id, kv.encode_result(result)))
            conf_rid = waiters.confs.pop(entry.index, None)
            if conf_rid is not None:
                if entry.kind is EntryKind.CONFIG:
                    out.append(self._state(conf_rid, self.core.membership_at(entry.index)))
                else:
                    out.append(wm.ErrorReply(conf_rid, "membership change lost to a leader change; retry", 502))
        for rs in rd.read_states:
            pending_read = waiters.reads.get(rs.request_id)
            if pending_read is None:
                continue
            if not rs.ok:
                del waiters.reads[rs.request_id]
                # No leader could confirm it (none known, or leadership lost mid-round): the I/O
                # process waits for a leader and retries, here or there.
                self._answer_read(pending_read, out, done=False)
            else:
                pending_read.index = rs.index
        applied = self.kv.applied_index
        for read_id, pending_read in list(waiters.reads.items()):
            if 0 <= pending_read.index <= applied:
                del waiters.reads[read_id]
                self._answer_read(pending_read, out, done=True)
        # Writes proposed in a term that is over can no longer be answered by this node's log
        # position alone once that position is applied; those still ahead stay pending.
        if not self.core.is_leader:
            for index in [i for i, w in waiters.writes.items() if w.term < self.core.term and i <= applied]:
                lost = waiters.writes.pop(index)
                self._fail(lost.origin, lost.request_id, 502, "write lost; retry", out)

    def _forwarding_sends(self) -> list[wm.RaftSend]:
        """This pump's answers to forwarded writes and reads, per follower, bounded per message."""
        sends: list[wm.RaftSend] = []
        me, term = self.core.id, self.core.term
        for origin, results in self._results_out.items():
            for chunk in chunk_by_size(results, _result_size):
                payload = encode_message(ForwardedResults(me, origin, term, chunk))
                sends.append(wm.RaftSend(origin, payload, len(payload) >= wm.LARGE_MESSAGE_SIZE))
        self._results_out.clear()
        return sends

    def _expire_reads(self, out: list[wm.FromWorker], now_ms: int) -> None:
        reads = self._waiters.reads
        if not reads:
            return
        expired = [rid for rid, r in reads.items() if r.index < 0 and now_ms - r.started_ms > READ_INDEX_TIMEOUT_MS]
        for read_id in expired:
            self._answer_read(reads.pop(read_id), out, done=False)

    def _restore(self, snapshot: Snapshot) -> None:
        self.kv.restore(snapshot.data)
        self._snapshot_index = snapshot.meta.index
        self._snapshot_term = snapshot.meta.term
        self._applied_term = snapshot.meta.term
        for index in [i for i in self._waiters.writes if i <= snapshot.meta.index]:
            # Covered by a snapshot from the leader: we cannot tell if it was ours; the client
            # retries (CAS-style commands make that safe for users who need it).
            self._waiters.writes.pop(index)

    def _take_snapshot(self, rd: Ready, out: list[wm.FromWorker]) -> None:
        meta = rd.snapshot_to_take
        if meta is None:
            return
        from aspen.raft.types import encode_membership

        data = self.kv.snapshot_bytes(encode_membership(meta.membership))
        self._storage.create_snapshot(Snapshot(meta=meta, data=data))
        self._storage.compact(rd.compact_to_index)
        self._snapshot_index, self._snapshot_term = meta.index, meta.term
        for rid in self._waiters.snapshots:
            out.append(wm.SnapshotDone(rid, meta.index, meta.term))
        self._waiters.snapshots.clear()
        logger.info("snapshot taken index=%d term=%d compacted_to=%d", meta.index, meta.term, rd.compact_to_index)

    def _state_update(self) -> wm.StateUpdate | None:
        core = self.core
        m = core.membership
        update = wm.StateUpdate(core.leader_id, core.term, node_role(core), sorted(m.voters), sorted(m.learners),
                                dict(m.addrs))
        if update == self._last_update:
            return None
        if self._last_update is None or self._last_update.leader_id != update.leader_id:
            logger.info("leader is now node %d (term %d, this node %s)", update.leader_id, update.term, update.role)
        self._last_update = update
        return update

    # ------------------------------------------------------------------ status

    def status(self, rid: int) -> wm.RaftStatus:
        core = self.core
        replication = {n: pr.match for n, pr in core.progress.items()} if core.is_leader else {}
        return wm.RaftStatus(
            request_id=rid, node_id=core.id, role=node_role(core), leader_id=core.leader_id, term=core.term,
            commit_index=core.commit_index, last_log_index=core.last_index, applied_index=core.applied_index,
            applied_term=self._applied_term, snapshot_index=self._snapshot_index, snapshot_term=self._snapshot_term,
            voters=sorted(core.membership.voters), learners=sorted(core.membership.learners),
            replication=replication, fsyncs=self.fsyncs, fsync_seconds_total=self.fsync_seconds_total,
            fsync_seconds_max=self.fsync_seconds_max)


__all__ = ["RaftWorker", "MAX_PENDING_CLIENT_REQUESTS"]
