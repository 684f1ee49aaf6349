"""A deterministic Raft cluster simulator: N RaftCores, a hostile network, crashes, clients.

Theory of operation: one process, virtual time (ms), one `random.Random(seed)` from which every
other generator is derived, so `run_simulation(seed)` is a pure function of the seed. Each node
is a RaftCore + MemoryStorage + KvStateMachine driven by a worker loop that follows the Ready
contract (persist, fsync, send, apply, advance) in the order aspen.raft.worker does: a leader's
appends, and its answers to entries synced by earlier Readies, go before the fsync
(`may_send_before_persisting`, `may_apply_before_persisting`), so a crash mid-Ready comes after
them. Faults: message drop / duplicate /
delay (reordering), symmetric and asymmetric partitions, crashes that lose everything not
synced (also in the middle of persisting a Ready), restarts, membership changes, leader
transfers and on-demand snapshots. Clients issue concurrent Set, CAS and linearizable reads
(ReadIndex) to random nodes with timeouts; an op that times out has an unknown outcome.

Checked after every step (a violation raises `InvariantViolation` naming the seed):

- election safety: at most one leader per term;
- log matching: an (index, term) pair always denotes the same entry with the same predecessor
  term, on every node (by induction, equal (index, term) => equal prefixes), checked on every
  append; plus a full pairwise comparison after faults and at the end;
- leader completeness: a new leader's log holds every entry any node applied;
- state machine safety: no two nodes apply different entries at the same index;
- nothing committed is lost: at the end the leader holds every applied entry, and every member
  converged to the same state;
- the client history is linearizable for the KV model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from aspen.errors import AspenError
from aspen.raft.config import RaftConfig
from aspen.raft.core import RaftCore
from aspen.raft.kv import (
    CasResult,
    CompareAndSwap,
    Get,
    GetResult,
    KvStateMachine,
    Set,
    WriteResult,
    encode_command,
)
from aspen.raft.memory_storage import MemoryStorage
from aspen.raft.messages import ForwardedReads, ForwardedResults, ForwardedWrites, RaftMessage, decode_message, encode_message
from aspen.raft.ready import ProposalDropped, Ready, Role, may_apply_before_persisting, may_send_before_persisting
from aspen.raft.types import Entry, EntryKind, HardState, Membership, Snapshot
from aspen.testing import linearizability
from aspen.testing.kv_lincheck import KvOp, observed_values
from aspen.testing.kv_lincheck import check_history as quick_check_history
from aspen.testing.sim import NetworkFaults, SimNetwork

# Readies drained per input before we call it a livelock (a core that always has output).
MAX_READY_ROUNDS = 1_000
# Simulation events per run (a bound on the main loop, far above a normal run's count).
MAX_EVENTS = 2_000_000


class InvariantViolation(AspenError):
    """A Raft safety property was broken (or the cluster did not converge after healing)."""


@dataclass
class SimParams:
    """Shape of one simulated run. `random_params(rng)` picks one per seed."""

    voters: int = 3
    spares: int = 1  # nodes outside the initial config, to be added as learners
    fault_ms: int = 1500  # faults happen in [0, fault_ms)
    settle_ms: int = 3000  # then the network heals; convergence is required within this
    heartbeat_interval_ms: int = 20
    election_timeout_min_ms: int = 100
    election_timeout_max_ms: int = 200
    snapshot_interval_entries: int = 30
    snapshot_keep_entries: int = 5
    snapshot_chunk_size_bytes: int = 200
    max_entries_per_append: int = 8
    max_inflight_appends: int = 4
    clients: int = 3
    keys: int = 2
    op_timeout_ms: int = 300
    max_think_ms: int = 30
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    max_delay_ms: int = 5
    fault_interval_ms: int = 150  # mean time between injected faults
    crash: bool = True
    mid_ready_crash_rate: float = 0.002
    partition: bool = True
    membership: bool = True
    transfer: bool = True
    read_rate: float = 0.3
    cas_rate: float = 0.3
    # Safety must not depend on these (they are liveness features): some seeds turn them off,
    # which also widens the window in which a deposed leader still believes it leads.
    check_quorum: bool = True
    pre_vote: bool = True


def random_params(rng: random.Random) -> SimParams:
    """A varied but small run: 3-5 voters, some drops/dups/delays, all fault kinds."""
    p = SimParams()
    p.voters = rng.choice([3, 3, 3, 5])
    p.spares = rng.choice([0, 1, 2])
    p.drop_rate = rng.choice([0.0, 0.0, 0.05, 0.1, 0.2])
    p.duplicate_rate = rng.choice([0.0, 0.02, 0.05])
    p.max_delay_ms = rng.choice([2, 5, 10, 30, 60])  # 60 ms ~ a slow network (3 heartbeats)
    p.snapshot_interval_entries = rng.choice([5, 10, 30, 1000])
    p.snapshot_keep_entries = rng.choice([0, 2, 5])
    p.snapshot_chunk_size_bytes = rng.choice([64, 200, 4096])
    p.max_entries_per_append = rng.choice([1, 8, 64])
    p.max_inflight_appends = rng.choice([1, 4, 16])
    p.keys = rng.choice([1, 2, 3])
    p.clients = rng.choice([2, 3, 4, 6])
    p.fault_interval_ms = rng.choice([100, 200, 400])
    p.max_think_ms = rng.choice([5, 20, 50])
    p.check_quorum = rng.random() < 0.75
    p.pre_vote = rng.random() < 0.75
    return p


@dataclass
class _Op:
    client_id: int
    kind: str
    key: str
    value: str | None = None
    expected: str | None = None
    call_ms: int = 0
    deadline_ms: int = 0
    return_ms: int | None = None
    output: object = None
    status: str = "pending"  # pending | ok | failed | unknown


@dataclass
class _Client:
    id: int
    next_ms: int = 0
    op: _Op | None = None
    target: int = 0
    seen: dict[str, str | None] = field(default_factory=dict)
    counter: int = 0
    follow_up: str | None = None  # key to read next (read-your-writes probe)


class _Node:
    def __init__(self, node_id: int, storage: MemoryStorage) -> None:
        self.id = node_id
        self.storage = storage
        self.core: RaftCore | None = None
        self.kv = KvStateMachine()
        self.alive = False
        self.restart_at_ms = 0
        self.pending_writes: dict[int, tuple[int, _Op]] = {}
        self.pending_reads: dict[int, _Op] = {}
        self.reads_waiting: list[tuple[int, _Op]] = []
        self.persisted_hs = HardState()  # term and vote as last written (the worker's _persisted_hs)
        self.settled_voters: frozenset[int] = frozenset()  # the voters after the last Ready loop


class RaftSimulation:
    """One seeded run. `run()` raises InvariantViolation on any safety or liveness failure."""

    def __init__(self, seed: int, params: SimParams | None = None) -> None:
        self.seed = seed
        root = random.Random(seed)
        self.params = params if params is not None else random_params(random.Random(root.getrandbits(64)))
        p = self.params
        self._rng = random.Random(root.getrandbits(64))  # faults and clients
        self._core_seed = root.getrandbits(64)
        self.net: SimNetwork[bytes] = SimNetwork(
            random.Random(root.getrandbits(64)),
            NetworkFaults(p.drop_rate, p.duplicate_rate, 1, p.max_delay_ms),
        )
        self.now_ms = 0
        ids = list(range(1, p.voters + p.spares + 1))
        self.initial = Membership(frozenset(ids[: p.voters]), frozenset(), {i: f"sim://{i}" for i in ids[: p.voters]})
        self.nodes: dict[int, _Node] = {}
        for i in ids:
            storage = MemoryStorage(self.initial if i <= p.voters else Membership())
            node = _Node(i, storage)
            self.nodes[i] = node
            self._start(node)
        self.clients = [_Client(c, next_ms=self._rng.randint(0, 50)) for c in range(1, p.clients + 1)]
        self.history: list[_Op] = []
        self._read_ids = 0
        self._next_fault_ms = self._rng.randint(50, 2 * p.fault_interval_ms)
        # Invariant state.
        self.leaders_by_term: dict[int, int] = {}
        self.applied: dict[int, tuple[int, EntryKind, bytes]] = {}
        self._entry_ids: dict[tuple[int, int], tuple[EntryKind, bytes, int]] = {}
        self.events = 0
        self._dirty: dict[int, None] = {}  # nodes stepped since their last Ready loop, in order
        self.cross_check = False  # also run the quick per-key checker (tests enable it)
        self.stats: dict[str, int] = {"crashes": 0, "mid_ready_crashes": 0, "partitions": 0,
                                      "config_changes": 0, "transfers": 0, "snapshots_installed": 0,
                                      "applied_before_fsync": 0}

    # ------------------------------------------------------------------ node lifecycle

    def _config_for(self, node_id: int) -> RaftConfig:
        p = self.params
        return RaftConfig(
            node_id=node_id,
            heartbeat_interval_ms=p.heartbeat_interval_ms,
            election_timeout_min_ms=p.election_timeout_min_ms,
            election_timeout_max_ms=p.election_timeout_max_ms,
            max_entries_per_append=p.max_entries_per_append,
            max_inflight_appends=p.max_inflight_appends,
            snapshot_interval_entries=p.snapshot_interval_entries,
            snapshot_keep_entries=p.snapshot_keep_entries,
            snapshot_chunk_size_bytes=p.snapshot_chunk_size_bytes,
            check_quorum=p.check_quorum,
            pre_vote=p.pre_vote,
        )

    def _start(self, node: _Node) -> None:
        rng = random.Random(f"{self._core_seed}/{node.id}/{self.now_ms}")
        node.core = RaftCore(self._config_for(node.id), node.storage, rng=rng)
        node.persisted_hs, _ = node.storage.initial_state()
        node.kv = KvStateMachine()
        snap = node.storage.snapshot()
        if snap.data:
            node.kv.restore(snap.data)
        if node.kv.applied_index != snap.meta.index:
            raise self._violation(f"node {node.id} restored KV at {node.kv.applied_index} != snapshot {snap.meta.index}")
        node.alive = True
        node.core.tick(self.now_ms)
        self._drain(node)

    def _crash(self, node: _Node) -> None:
        node.alive = False
        node.core = None
        node.storage.crash()
        node.pending_writes.clear()
        node.pending_reads.clear()
        node.reads_waiting.clear()
        self.net.drop_to(node.id)
        node.restart_at_ms = self.now_ms + self._rng.randint(20, 400)
        self.stats["crashes"] += 1

    def _violation(self, what: str) -> InvariantViolation:
        return InvariantViolation(f"seed {self.seed} at {self.now_ms} ms: {what}")

    # ------------------------------------------------------------------ the worker loop

    def _drain(self, node: _Node) -> None:
        """Run the Ready/Advance loop of `node` until it has nothing to do (the worker)."""
        core = node.core
        assert core is not None
        for _ in range(MAX_READY_ROUNDS):
            rd = core.ready()
            if rd is None:
                self._check_leader(node)
                node.settled_voters = core.membership.voters
                return
            storage = node.storage
            # Like aspen.raft.worker: a leader's appends, and answers to entries synced earlier,
            # may go before this Ready's fsync (a crash below then comes after them).
            send_early = may_send_before_persisting(rd, core.role is Role.LEADER, node.persisted_hs)
            apply_early = send_early and may_apply_before_persisting(rd)
            if send_early:
                self._send(rd)
            if apply_early:
                self.stats["applied_before_fsync"] += 1
                for e in rd.committed_entries:  # answered before this Ready's fsync: synced before
                    if storage.durable_term(e.index) != e.term and storage.snapshot().meta.index < e.index:
                        raise self._violation(f"node {node.id} answers {e.term}/{e.index} before it is durable")
                self._apply_ready(node, rd)
            # 1. persist
            if rd.snapshot is not None:
                storage.apply_snapshot(rd.snapshot)
            if rd.entries:
                self._check_appended(node, rd.entries)
                storage.append(rd.entries)
            if rd.hard_state is not None:
                storage.set_hard_state(rd.hard_state)
                node.persisted_hs = rd.hard_state
            if self.params.crash and self._rng.random() < self.params.mid_ready_crash_rate and self.now_ms < self.params.fault_ms:
                self.stats["mid_ready_crashes"] += 1
                self._crash(node)  # power cut after write(), before fsync()
                return
            if rd.must_sync:
                storage.sync()
            if rd.hard_state is not None and core.role is Role.LEADER:
                self._check_commit_durable(node, rd.hard_state.commit)
            # 2. send
            if not send_early:
                self._send(rd)
            # 3. apply
            if not apply_early:
                self._apply_ready(node, rd)
            # 4. snapshot policy
            if rd.snapshot_to_take is not None:
                meta = rd.snapshot_to_take
                if node.kv.applied_index != meta.index:
                    raise self._violation(f"node {node.id}: snapshot_to_take {meta.index} != applied {node.kv.applied_index}")
                storage.create_snapshot(Snapshot(meta, node.kv.snapshot_bytes()))
                storage.compact(rd.compact_to_index)
            core.advance(rd)
            if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
                self._check_leader_completeness(node)
        raise self._violation(f"node {node.id} still has output after {MAX_READY_ROUNDS} Ready rounds")

    def _send(self, rd: Ready) -> None:
        for msg in rd.messages:
            self.net.send(msg.from_id, msg.to_id, encode_message(msg), self.now_ms)

    def _apply_ready(self, node: _Node, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.stats["snapshots_installed"] += 1
            node.kv = KvStateMachine()
            node.kv.restore(rd.snapshot.data) if rd.snapshot.data else None
            if node.kv.applied_index != rd.snapshot.meta.index:
                raise self._violation(f"node {node.id}: snapshot KV index mismatch")
            self._drop_pending_below(node, rd.snapshot.meta.index)
        for e in rd.committed_entries:
            self._apply(node, e.index, e.term, e.kind, e.data)
        for rs in rd.read_states:
            op = node.pending_reads.pop(rs.request_id, None)
            if op is None:
                continue
            if rs.ok:
                node.reads_waiting.append((rs.index, op))
            else:
                self._finish(op, "failed")
        if node.reads_waiting:
            self._serve_reads(node)

    def _apply(self, node: _Node, index: int, term: int, kind: EntryKind, data: bytes) -> None:
        seen = self.applied.get(index)
        if seen is None:
            self.applied[index] = (term, kind, data)
        elif seen != (term, kind, data):
            raise self._violation(f"state machine safety: node {node.id} applied {term}/{index} != {seen[0]}/{index}")
        result = node.kv.apply(index, data if kind is EntryKind.NORMAL else b"")
        pending = node.pending_writes.pop(index, None)
        if pending is None:
            return
        pterm, op = pending
        if op.status != "pending":
            return
        if pterm != term:
            self._finish(op, "failed")  # another entry won this index: ours can never commit
            return
        if isinstance(result, WriteResult):
            op.output = result.previous
        elif isinstance(result, CasResult):
            op.output = (result.succeeded, result.current)
        else:
            raise self._violation(f"unexpected KV result {result!r} for {op}")
        self._finish(op, "ok")

    def _drop_pending_below(self, node: _Node, index: int) -> None:
        # Entries folded into an installed snapshot are not applied one by one here: unknown.
        for i in [i for i in node.pending_writes if i <= index]:
            del node.pending_writes[i]

    def _serve_reads(self, node: _Node) -> None:
        applied = node.kv.applied_index
        still = []
        for index, op in node.reads_waiting:
            if applied >= index:
                if op.status == "pending":
                    op.output = node.kv.get(op.key)
                    self._finish(op, "ok")
            else:
                still.append((index, op))
        node.reads_waiting = still

    # ------------------------------------------------------------------ invariants

    def _check_leader(self, node: _Node) -> None:
        core = node.core
        if core is not None and core.role is Role.LEADER:
            other = self.leaders_by_term.setdefault(core.term, node.id)
            if other != node.id:
                raise self._violation(f"election safety: {other} and {node.id} both lead term {core.term}")

    def _check_appended(self, node: _Node, entries: list[Entry]) -> None:
        core = node.core
        assert core is not None
        prev_term = core.log.term(entries[0].index - 1)
        if prev_term is None:
            raise self._violation(f"node {node.id} appends at {entries[0].index} with unknown predecessor")
        ids = self._entry_ids
        for e in entries:
            record = (e.kind, e.data, prev_term)
            seen = ids.setdefault((e.index, e.term), record)
            if seen != record:
                raise self._violation(f"log matching: node {node.id} entry {e.term}/{e.index} differs from another node's")
            prev_term = e.term

    def _check_commit_durable(self, node: _Node, commit: int) -> None:
        """Nothing committed is lost: a leader's commit index is durable on a quorum of voters."""
        core = node.core
        assert core is not None
        term = core.log.term(commit)
        if term is None or commit == 0:
            return
        # The commit was decided while this Ready loop's input was stepped, under the voters in
        # force then: those after the last Ready loop, or after a membership change stepped in
        # the same batch (at most one is pending at a time). Single-server changes keep their
        # quorums overlapping, so a quorum of either holds every commit through elections.
        counts = []
        for voters in (core.membership.voters, node.settled_voters):
            durable = sum(1 for v in voters if self.nodes[v].storage.durable_term(commit) == term
                          or self.nodes[v].storage.snapshot().meta.index >= commit)
            if voters and durable >= len(voters) // 2 + 1:
                return
            counts.append(f"{durable} of {sorted(voters)}")
        raise self._violation(f"leader {node.id} committed {term}/{commit} but only {' or '.join(counts)} "
                              "hold it durably")

    def _check_leader_completeness(self, node: _Node) -> None:
        core = node.core
        assert core is not None
        first = core.log.first_index()
        for index, (term, _, _) in self.applied.items():
            # Entries below `first` are inside the leader's snapshot, which only holds
            # committed state (checked when it was taken: snapshot_to_take == applied).
            if index >= first and core.log.term(index) != term:
                raise self._violation(f"leader completeness: leader {node.id} term {core.term} lacks {term}/{index}")

    def check_logs(self) -> None:
        """Full pairwise log matching over the alive nodes."""
        views = {}
        for node in self.nodes.values():
            if node.core is None:
                continue
            log = node.core.log
            first, last = log.first_index(), log.last_index()
            views[node.id] = (first, {e.index: e for e in log.entries(first, last + 1, 1 << 62)} if last >= first else {})
        items = sorted(views.items())
        for i, (a, (fa, ea)) in enumerate(items):
            for b, (fb, eb) in items[i + 1 :]:
                common = sorted(set(ea) & set(eb))
                matched = [k for k in common if ea[k].term == eb[k].term]
                if not matched:
                    continue
                top = matched[-1]
                for k in common:
                    if k > top:
                        break
                    if ea[k] != eb[k]:
                        raise self._violation(f"log matching: nodes {a},{b} agree at {top} but differ at {k}")

    # ------------------------------------------------------------------ clients

    def _finish(self, op: _Op, status: str) -> None:
        op.status = status
        if status == "ok":
            op.return_ms = self.now_ms
        client = self.clients[op.client_id - 1]
        if client.op is op:
            client.next_ms = min(client.next_ms, self.now_ms)  # the client sees the answer now

    def _client_step(self, client: _Client) -> None:
        p = self.params
        rng = self._rng
        op = client.op
        if op is not None:
            if op.status == "pending" and self.now_ms < op.deadline_ms:
                client.next_ms = op.deadline_ms
                return
            if op.status == "pending":
                op.status = "unknown"
            if op.status == "ok" and op.kind == "get":
                client.seen[op.key] = op.output  # type: ignore[assignment]
            elif op.status == "ok" and op.kind == "cas":
                client.seen[op.key] = op.output[1]  # type: ignore[index]
            client.op = None
            client.next_ms = self.now_ms + rng.randint(0, p.max_think_ms)
            if op.status == "ok" and op.kind != "get" and rng.random() < 0.5:
                client.follow_up = op.key  # read your write at once, from any node
                client.next_ms = self.now_ms
            return
        if self.now_ms >= p.fault_ms + p.settle_ms // 2:
            client.next_ms = 1 << 62  # stop issuing ops so the cluster can settle
            return
        key = f"k{rng.randrange(p.keys)}"
        client.counter += 1
        value = f"c{client.id}.{client.counter}"
        roll = rng.random()
        if client.follow_up is not None:
            key, client.follow_up, roll = client.follow_up, None, -1.0
        if roll < p.read_rate:
            op = _Op(client.id, "get", key)
        elif roll < p.read_rate + p.cas_rate:
            op = _Op(client.id, "cas", key, value=value, expected=client.seen.get(key))
        else:
            op = _Op(client.id, "put", key, value=value)
        op.call_ms = self.now_ms
        op.deadline_ms = self.now_ms + p.op_timeout_ms
        client.op = op
        self.history.append(op)
        client.next_ms = self.now_ms  # re-check immediately if it fails synchronously
        # Writes mostly go where the last one succeeded (the leader); reads mostly anywhere, so
        # lagging followers serve reads (what a stale-read bug would get wrong).
        sticky = 0.8 if op.kind != "get" else 0.3
        node = self.nodes.get(client.target) if rng.random() < sticky else None
        if node is None or not node.alive:
            node = self.nodes[rng.choice(sorted(self.nodes))]
        core = node.core
        if not node.alive or core is None:
            self._finish(op, "failed")
            client.target = 0
            return
        if op.kind == "get":
            self._read_ids += 1
            node.pending_reads[self._read_ids] = op
            core.read_index(self._read_ids, self.now_ms)
        else:
            cmd = Set(op.key, value) if op.kind == "put" else CompareAndSwap(op.key, op.expected, value)
            try:
                term, index = core.propose(encode_command(cmd), self.now_ms)
            except ProposalDropped as exc:
                self._finish(op, "failed")
                client.target = exc.leader_id
                client.next_ms = self.now_ms + 1
                return
            node.pending_writes[index] = (term, op)
        client.target = node.id
        client.next_ms = op.deadline_ms
        self._dirty[node.id] = None

    # ------------------------------------------------------------------ faults

    def _leader(self) -> _Node | None:
        best = None
        for node in self.nodes.values():
            if node.alive and node.core is not None and node.core.is_leader:
                if best is None or node.core.term > best.core.term:  # type: ignore[union-attr]
                    best = node
        return best

    def _inject_fault(self) -> None:
        p = self.params
        rng = self._rng
        kinds = []
        if p.crash:
            kinds += ["crash", "crash_leader"]
        if p.partition:
            kinds += ["partition", "isolate_leader", "asymmetric", "heal"]
        if p.membership:
            kinds += ["membership", "membership"]
        if p.transfer:
            kinds += ["transfer"]
        kinds += ["snapshot"]
        kind = rng.choice(kinds)
        alive = [n for n in self.nodes.values() if n.alive]
        leader = self._leader()
        ids = sorted(self.nodes)
        if kind == "crash" and alive:
            self._crash(rng.choice(alive))
        elif kind == "crash_leader" and leader is not None:
            self._crash(leader)
        elif kind == "partition":
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            self.net.heal()
            self.net.partition(set(ids[:cut]), set(ids[cut:]))
            self.stats["partitions"] += 1
        elif kind == "isolate_leader" and leader is not None:
            self.net.heal()
            self.net.isolate(leader.id, set(self.nodes))
            self.stats["partitions"] += 1
        elif kind == "asymmetric":
            a, b = rng.sample(ids, 2)
            self.net.block(a, b)
            self.stats["partitions"] += 1
        elif kind == "heal":
            self.net.heal()
        elif kind == "membership" and leader is not None:
            self._change_membership(leader)
        elif kind == "transfer" and leader is not None and leader.core is not None:
            voters = sorted(leader.core.membership.voters - {leader.id})
            if voters:
                try:
                    leader.core.transfer_leadership(rng.choice(voters), self.now_ms)
                    self.stats["transfers"] += 1
                except ProposalDropped:
                    pass
                self._drain(leader)
        elif kind == "snapshot" and alive:
            node = rng.choice(alive)
            assert node.core is not None
            node.core.request_snapshot(self.now_ms)
            self._drain(node)
        self.check_logs()

    def _change_membership(self, leader: _Node) -> None:
        core = leader.core
        assert core is not None
        rng = self._rng
        m = core.membership
        outside = sorted(set(self.nodes) - m.voters - m.learners)
        options = []
        if outside:
            options.append("add_learner")
        if m.learners:
            options += ["promote", "promote", "remove_learner"]
        if len(m.voters) > 2:
            options.append("remove_voter")
        if not options:
            return
        choice = rng.choice(options)
        voters, learners, addrs = set(m.voters), set(m.learners), dict(m.addrs)
        if choice == "add_learner":
            n = rng.choice(outside)
            learners.add(n)
            addrs[n] = f"sim://{n}"
        elif choice == "promote":
            n = rng.choice(sorted(learners))
            learners.discard(n)
            voters.add(n)
        elif choice == "remove_learner":
            n = rng.choice(sorted(learners))
            learners.discard(n)
            del addrs[n]
        else:
            n = rng.choice(sorted(voters))
            voters.discard(n)
            del addrs[n]
        try:
            core.change_membership(Membership(frozenset(voters), frozenset(learners), addrs), self.now_ms)
            self.stats["config_changes"] += 1
        except ProposalDropped:
            pass
        self._drain(leader)

    # ------------------------------------------------------------------ main loop

    def _deliver(self, src: int, dst: int, body: bytes) -> None:
        node = self.nodes.get(dst)
        if node is None or not node.alive or node.core is None:
            return
        msg = decode_message(body)
        assert not isinstance(msg, (ForwardedWrites, ForwardedReads, ForwardedResults)), "cores never send these"
        node.core.step(msg, self.now_ms)
        self._dirty[node.id] = None

    def _drain_dirty(self) -> None:
        """Run the Ready loop of every node that took input since its last one. Like the worker,
        which steps every message a ring read brings before it pumps once, a node takes all
        messages due at the same moment and that moment's client requests into one Ready loop."""
        while self._dirty:
            node = self.nodes[next(iter(self._dirty))]
            del self._dirty[node.id]
            if node.alive and node.core is not None:
                self._drain(node)

    def run(self) -> None:
        """Run the faulty phase, heal, settle, then check convergence and linearizability."""
        p = self.params
        end_ms = p.fault_ms + p.settle_ms
        healed = False
        while self.now_ms <= end_ms:
            self.events += 1
            if self.events > MAX_EVENTS:
                raise self._violation("event budget exhausted")
            if not healed and self.now_ms >= p.fault_ms:
                healed = True
                self.net.heal()
                self.net.faults = NetworkFaults(0.0, 0.0, 1, min(p.max_delay_ms, 10))
                for node in self.nodes.values():
                    if not node.alive:
                        node.restart_at_ms = self.now_ms
            if healed and self.now_ms >= p.fault_ms + p.settle_ms // 2 and self._converged():
                break
            # What happens next, and when.
            t = self._next_event_ms(healed)
            if t > self.now_ms and self._dirty:
                self._drain_dirty()  # this moment's input is all in: one Ready loop per node
                t = self._next_event_ms(healed)
            if t > self.now_ms:
                self.now_ms = t
            due = self.net.pop_due(self.now_ms)
            if due is not None:
                self._deliver(*due)
                continue
            for node in self.nodes.values():
                if node.alive and node.core is not None:
                    if node.core.next_deadline_ms() <= self.now_ms:
                        node.core.tick(self.now_ms)
                        self._drain(node)
                elif not node.alive and node.restart_at_ms <= self.now_ms:
                    self._start(node)
            for client in self.clients:
                if client.next_ms <= self.now_ms:
                    self._client_step(client)
            for node in self.nodes.values():
                if node.reads_waiting:
                    self._serve_reads(node)
            if not healed and self.now_ms >= self._next_fault_ms:
                self._next_fault_ms = self.now_ms + self._rng.randint(1, 2 * p.fault_interval_ms)
                self._inject_fault()
        self._drain_dirty()
        self._final_checks()

    def _next_event_ms(self, healed: bool) -> int:
        now = self.now_ms
        best = now + 1000
        t = self.net.next_delivery_ms()
        if t is not None and t < best:
            best = t
        if best <= now:
            return now
        for node in self.nodes.values():
            core = node.core
            t = core.next_deadline_ms() if node.alive and core is not None else node.restart_at_ms
            if t < best:
                best = t
        for c in self.clients:
            if c.next_ms < best:
                best = c.next_ms
        if not healed:
            best = min(best, self._next_fault_ms, self.params.fault_ms)
        return max(now, best)

    def _converged(self) -> bool:
        leader = self._leader()
        if leader is None or leader.core is None:
            return False
        core = leader.core
        if core.commit_index != core.last_index or core.applied_index != core.commit_index:
            return False
        if any(c.op is not None for c in self.clients):
            return False
        for n in core.membership.voters | core.membership.learners:
            node = self.nodes[n]
            if node.core is None or node.core.applied_index != core.commit_index:
                return False
        return True

    def _final_checks(self) -> None:
        if not self._converged():
            leader = self._leader()
            raise self._violation(
                "no convergence after healing: leader="
                + (str(leader.id) if leader else "none")
                + " states="
                + str({n.id: (n.alive, n.core.role.value, n.core.term, n.core.commit_index, n.core.applied_index)
                       for n in self.nodes.values() if n.core is not None})
            )
        leader = self._leader()
        assert leader is not None and leader.core is not None
        self._check_leader_completeness(leader)
        self.check_logs()
        image = leader.kv.snapshot_bytes()
        for n in leader.core.membership.voters | leader.core.membership.learners:
            if self.nodes[n].kv.snapshot_bytes() != image:
                raise self._violation(f"node {n} state differs from leader {leader.id} after convergence")
        self.check_history()

    def check_history(self) -> None:
        """Linearizability of the client history, by the full checker and the quick one."""
        done = [op for op in self.history if op.status == "ok" or (op.status == "unknown" and op.kind != "get")]
        # A write with an unknown outcome whose (unique) value nobody observed can only have
        # been last or never applied: dropping it changes no output and keeps the search small
        # (see kv_lincheck.check_history; without it a few seeds exhaust the step budget).
        observed = observed_values([_as_kv_op(op) for op in done])
        searched = [op for op in done if op.status == "ok" or op.value in observed]
        full = linearizability.check_history([_as_operation(op) for op in searched])
        if full.timed_out:
            raise self._violation(f"linearizability check gave no verdict: {full.explanation}")
        if not full.ok:
            raise self._violation(f"history not linearizable: {full.explanation}")
        if self.cross_check:
            quick = quick_check_history([_as_kv_op(op) for op in done])
            if not quick.ok:
                raise self._violation(f"quick checker disagrees (key {quick.key}: {quick.reason})")

    def summary(self) -> dict[str, object]:
        ok = sum(1 for op in self.history if op.status == "ok")
        return {"seed": self.seed, "now_ms": self.now_ms, "events": self.events, "ops": len(self.history),
                "ok_ops": ok, "applied": len(self.applied), **self.stats,
                "net": vars(self.net.stats)}


def _as_kv_op(op: _Op) -> KvOp:
    return KvOp(op.client_id, op.kind, op.key, op.value, op.expected, op.output, op.call_ms,
                op.return_ms if op.status == "ok" else None)


def _as_operation(op: _Op) -> linearizability.Operation:
    """The simulator's op record in the shared checker's terms."""
    out: object
    if op.kind == "put":
        cmd: object = Set(op.key, op.value or "")
        out = WriteResult(previous=op.output) if op.status == "ok" else None  # type: ignore[arg-type]
    elif op.kind == "cas":
        cmd = CompareAndSwap(op.key, op.expected, op.value)
        out = CasResult(*op.output) if op.status == "ok" else None  # type: ignore[misc]
    else:
        cmd = Get(op.key)
        out = GetResult(op.output) if op.status == "ok" else None  # type: ignore[arg-type]
    return linearizability.Operation(op.client_id, op.call_ms, op.return_ms if op.status == "ok" else None,
                                     cmd, out)  # type: ignore[arg-type]


def run_simulation(seed: int, params: SimParams | None = None) -> RaftSimulation:
    """Run one seed; raises InvariantViolation (with the seed in the message) on failure."""
    sim = RaftSimulation(seed, params)
    sim.run()
    return sim


__all__ = ["SimParams", "random_params", "RaftSimulation", "run_simulation", "InvariantViolation"]
