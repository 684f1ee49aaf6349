"""The scenario environment: RaftCores wired by hand, one handler per command (etcd rafttest).

Every handler documents its syntax in its docstring; `Env.handle(command, args)` dispatches and
returns the output lines. Messages are printed one per line as `1->2 App term=1 ...` by
`describe()`. Time is virtual; nothing here is random except each node's election timeout,
drawn from `random.Random(node_id)` so files replay byte for byte.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import msgspec

from aspen.raft.config import RaftConfig
from aspen.raft.core import RaftCore
from aspen.raft.memory_storage import MemoryStorage
from aspen.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    RaftMessage,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
    decode_message,
    encode_message,
)
from aspen.raft.ready import ProposalDropped, write_ready
from aspen.raft.types import Entry, EntryKind, Membership, Snapshot

# Delivery rounds of one `stabilize` before we call it a livelock.
MAX_STABILIZE_ROUNDS = 10_000
_APPLIED = msgspec.msgpack.Decoder(list[str])
_ENC = msgspec.msgpack.Encoder()


def _entry(e: Entry) -> str:
    if e.kind is EntryKind.NOOP:
        return f"{e.term}/{e.index}:noop"
    if e.kind is EntryKind.CONFIG:
        return f"{e.term}/{e.index}:conf"
    return f"{e.term}/{e.index}"


def describe(m: RaftMessage) -> str:
    """One line per message, etcd style (`1->2 MsgApp Term:1 Log:1/11`)."""
    head = f"{m.from_id}->{m.to_id}"
    match m:
        case AppendEntries():
            ents = " ".join(_entry(e) for e in m.entries)
            return f"{head} App term={m.term} prev={m.prev_term}/{m.prev_index} commit={m.leader_commit} [{ents}]"
        case AppendEntriesResponse():
            if m.reject:
                return f"{head} AppResp term={m.term} reject index={m.index} hint={m.hint_term}/{m.hint_index}"
            return f"{head} AppResp term={m.term} index={m.index}"
        case RequestVote():
            kind = "PreVote" if m.pre_vote else "Vote"
            extra = " transfer" if m.transfer else ""
            return f"{head} {kind} term={m.term} last={m.last_term}/{m.last_index}{extra}"
        case RequestVoteResponse():
            kind = "PreVoteResp" if m.pre_vote else "VoteResp"
            return f"{head} {kind} term={m.term} {'granted' if m.granted else 'rejected'}"
        case Heartbeat():
            return f"{head} Heartbeat term={m.term} commit={m.commit} ctx={m.read_ctx}"
        case HeartbeatResponse():
            lost = f" lost_log last={m.last_index}" if m.lost_log else ""
            return f"{head} HeartbeatResp term={m.term} ctx={m.read_ctx}{lost}"
        case InstallSnapshot():
            done = " done" if m.done else ""
            return (f"{head} Snapshot term={m.term} meta={m.meta.term}/{m.meta.index} "
                    f"offset={m.offset} len={len(m.data)}{done}")
        case InstallSnapshotResponse():
            done = " done" if m.done else ""
            return f"{head} SnapshotResp term={m.term} meta={m.meta_term}/{m.meta_index} next={m.next_offset}{done}"
        case TimeoutNow():
            return f"{head} TimeoutNow term={m.term}"
        case ReadIndexRequest():
            return f"{head} ReadIndex term={m.term} id={m.request_id}"
        case ReadIndexResponse():
            return f"{head} ReadIndexResp term={m.term} id={m.request_id} index={m.index} ok={m.ok}"
    raise AssertionError(f"unknown message {m!r}")


class _Node:
    def __init__(self, node_id: int, storage: MemoryStorage, config: RaftConfig) -> None:
        self.id = node_id
        self.storage = storage
        self.config = config
        self.core: RaftCore | None = None
        self.applied: list[str] = []  # the "state machine": applied NORMAL commands in order
        self.reads: list[str] = []


def _kv(args: list[str]) -> tuple[list[str], dict[str, str]]:
    pos = [a for a in args if "=" not in a]
    kw = dict(a.split("=", 1) for a in args if "=" in a)
    return pos, kw


def _ids(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


class Env:
    """A hand-driven cluster. Commands are methods `cmd_<name>` (dashes become underscores)."""

    def __init__(self) -> None:
        self.now_ms = 0
        self.nodes: dict[int, _Node] = {}
        self.queue: list[RaftMessage] = []  # sent, not yet delivered, in send order
        self.blocked: set[tuple[int, int]] = set()
        self.out: list[str] = []
        self.rng = random.Random(0)  # for lossy delivery only
        self.bootstrap = Membership()

    def handle(self, command: str, args: list[str]) -> list[str]:
        handler: Callable[[list[str]], None] | None = getattr(self, "cmd_" + command.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {command!r}")
        self.out = []
        handler(args)
        return self.out or ["ok"]

    # ------------------------------------------------------------------ plumbing

    def _core(self, node_id: int) -> RaftCore:
        core = self.nodes[node_id].core
        if core is None:
            raise ValueError(f"node {node_id} is down")
        return core

    def _drain(self, node_id: int) -> None:
        """The worker loop for one node: persist, sync, send (queue), apply, advance."""
        node = self.nodes[node_id]
        core = node.core
        assert core is not None
        for _ in range(1000):
            rd = core.ready()
            if rd is None:
                return
            st = node.storage
            write_ready(st, rd)
            if rd.must_sync:
                st.sync()
            if rd.soft_state is not None:
                self.out.append(f"> {node_id} is {rd.soft_state.role.value} (leader {rd.soft_state.leader_id}, term {core.term})")
            self.queue.extend(rd.messages)
            if rd.snapshot is not None:
                node.applied = _APPLIED.decode(rd.snapshot.data) if rd.snapshot.data else []
                self.out.append(f"> {node_id} installed snapshot {rd.snapshot.meta.term}/{rd.snapshot.meta.index}")
            for e in rd.committed_entries:
                if e.kind is EntryKind.NORMAL:
                    node.applied.append(e.data.decode())
            for rs in rd.read_states:
                if rs.ok:
                    self.out.append(f"> {node_id} read {rs.request_id} ok at index {rs.index} (applied {core.applied_index if not rd.committed_entries else rd.committed_entries[-1].index})")
                else:
                    self.out.append(f"> {node_id} read {rs.request_id} failed")
            if rd.snapshot_to_take is not None:
                meta = rd.snapshot_to_take
                st.create_snapshot(Snapshot(meta, _ENC.encode(node.applied)))
                st.compact(rd.compact_to_index)
                self.out.append(f"> {node_id} took snapshot {meta.term}/{meta.index}, compacted to {rd.compact_to_index}")
            core.advance(rd)

    def _start(self, node: _Node) -> None:
        node.core = RaftCore(node.config, node.storage, rng=random.Random(node.id))
        snap = node.storage.snapshot()
        node.applied = _APPLIED.decode(snap.data) if snap.data else []
        node.core.tick(self.now_ms)
        self._drain(node.id)

    def _deliver(self, msg: RaftMessage, lossy: float = 0.0) -> None:
        # Round-trip through the wire codec, as the network would.
        msg = decode_message(encode_message(msg))
        node = self.nodes.get(msg.to_id)
        if (msg.from_id, msg.to_id) in self.blocked or node is None or node.core is None:
            self.out.append(describe(msg) + "  (dropped)")
            return
        if lossy and self.rng.random() < lossy:
            self.out.append(describe(msg) + "  (lost)")
            return
        self.out.append(describe(msg))
        node.core.step(msg, self.now_ms)
        self._drain(msg.to_id)

    def _tick_all(self) -> None:
        for node_id, node in sorted(self.nodes.items()):
            if node.core is not None and node.core.next_deadline_ms() <= self.now_ms:
                node.core.tick(self.now_ms)
                self._drain(node_id)

    # ------------------------------------------------------------------ commands

    def cmd_add_nodes(self, args: list[str]) -> None:
        """add-nodes N [voters=1,2,3] [learners=4] [heartbeat=10] [election=50,100]
        [snapshot-interval=0] [snapshot-keep=0] [chunk=1024] [max-entries=300] [inflight=64]
        [lag=100] [prevote=true] [checkquorum=true] [commit-notify=0] [hold=false] — nodes 1..N;
        members of the bootstrap config get it, the others start empty. commit-notify defaults to 0
        (followers told of a commit at once) and hold to false (every Ready's entries sent at once,
        pipelined) so that the scenarios show every step as etcd would; commit_notify_deferred.txt
        and hold_partial_appends.txt cover the node's defaults."""
        pos, kw = _kv(args)
        n = int(pos[0])
        voters = _ids(kw.get("voters", ",".join(str(i) for i in range(1, n + 1))))
        learners = _ids(kw.get("learners", ""))
        election = _ids(kw.get("election", "50,100"))
        members = voters + learners
        boot = Membership(frozenset(voters), frozenset(learners), {i: f"addr{i}" for i in members})
        self.bootstrap = boot
        for i in range(1, n + 1):
            cfg = RaftConfig(
                node_id=i,
                heartbeat_interval_ms=int(kw.get("heartbeat", "10")),
                election_timeout_min_ms=election[0],
                election_timeout_max_ms=election[1],
                snapshot_interval_entries=int(kw.get("snapshot-interval", "0")),
                snapshot_keep_entries=int(kw.get("snapshot-keep", "0")),
                snapshot_chunk_size_bytes=int(kw.get("chunk", "1024")),
                max_entries_per_append=int(kw.get("max-entries", "300")),
                max_inflight_appends=int(kw.get("inflight", "64")),
                max_learner_lag_entries=int(kw.get("lag", "100")),
                pre_vote=kw.get("prevote", "true") == "true",
                check_quorum=kw.get("checkquorum", "true") == "true",
                commit_notify_delay_ms=int(kw.get("commit-notify", "0")),
                hold_partial_appends=kw.get("hold", "false") == "true",
            )
            node = _Node(i, MemoryStorage(boot if i in members else Membership()), cfg)
            self.nodes[i] = node
            self._start(node)

    def cmd_campaign(self, args: list[str]) -> None:
        """campaign ID — ID's election timeout fires now."""
        node_id = int(args[0])
        self._core(node_id).campaign(self.now_ms)
        self._drain(node_id)
        self._print_queue_tail()

    def _print_queue_tail(self) -> None:
        for m in self.queue:
            self.out.append("  sends " + describe(m))

    def cmd_stabilize(self, args: list[str]) -> None:
        """stabilize [lossy=0.2] [latency=MS] — deliver everything queued, and what that causes,
        until quiet. `lossy` drops each message with that probability (seeded); `latency` lets
        MS pass (ticking every node) before each delivery round, like a slow network."""
        _, kw = _kv(args)
        lossy = float(kw.get("lossy", "0"))
        latency = int(kw.get("latency", "0"))
        for _ in range(MAX_STABILIZE_ROUNDS):
            if not self.queue:
                return
            if latency:
                self.now_ms += latency
                self.out.append(f"(+{latency} ms, now {self.now_ms})")
                self._tick_all()
            batch, self.queue = self.queue, []
            for msg in batch:
                self._deliver(msg, lossy)
        raise AssertionError("stabilize did not settle")

    def cmd_deliver(self, args: list[str]) -> None:
        """deliver [from=ID] [to=ID] — deliver one round of queued messages (matching filters);
        what they cause is queued, not delivered."""
        _, kw = _kv(args)
        keep, batch = [], []
        for m in self.queue:
            ok = ("from" not in kw or m.from_id == int(kw["from"])) and ("to" not in kw or m.to_id == int(kw["to"]))
            (batch if ok else keep).append(m)
        self.queue = keep
        for m in batch:
            self._deliver(m)

    def cmd_drop(self, args: list[str]) -> None:
        """drop [from=ID] [to=ID] [type=App] — discard queued messages matching the filters."""
        _, kw = _kv(args)
        keep = []
        for m in self.queue:
            line = describe(m)
            hit = (("from" not in kw or m.from_id == int(kw["from"]))
                   and ("to" not in kw or m.to_id == int(kw["to"]))
                   and ("type" not in kw or line.split()[1] == kw["type"]))
            if hit:
                self.out.append(line + "  (dropped)")
            else:
                keep.append(m)
        self.queue = keep

    def cmd_elapse(self, args: list[str]) -> None:
        """elapse MS — let MS pass and tick every node whose deadline is due (messages queued)."""
        self.now_ms += int(args[0])
        before = len(self.queue)
        self._tick_all()
        for m in self.queue[before:]:
            self.out.append("  sends " + describe(m))

    def cmd_run(self, args: list[str]) -> None:
        """run MS [step=10] [lossy=P] [latency=MS] — let MS pass in steps; each step ticks every
        node and delivers what is due (everything, or with `latency` what was sent that long
        ago: a slow network). Prints only state changes (`>` lines) and how many messages moved."""
        pos, kw = _kv(args)
        step = int(kw.get("step", "10"))
        lossy = float(kw.get("lossy", "0"))
        latency = int(kw.get("latency", "0"))
        total = int(pos[0])
        outer, delivered = self.out, 0
        in_flight: list[tuple[int, RaftMessage]] = []
        for _ in range(max(1, total // step)):
            self.out = []
            self.now_ms += step
            self._tick_all()
            for _ in range(MAX_STABILIZE_ROUNDS):
                if latency:
                    in_flight.extend((self.now_ms + latency, m) for m in self.queue)
                    self.queue = [m for due, m in in_flight if due <= self.now_ms]
                    in_flight = [(due, m) for due, m in in_flight if due > self.now_ms]
                if not self.queue:
                    break
                batch, self.queue = self.queue, []
                for msg in batch:
                    self._deliver(msg, lossy)
            delivered += sum(1 for line in self.out if not line.startswith(">"))
            outer.extend(line for line in self.out if line.startswith(">"))
        self.out = outer
        self.queue.extend(m for _, m in in_flight)
        self.out.append(f"({total} ms, {delivered} messages)")

    def cmd_propose(self, args: list[str]) -> None:
        """propose ID DATA... — propose each DATA at node ID."""
        node_id = int(args[0])
        core = self._core(node_id)
        for data in args[1:]:
            try:
                term, index = core.propose(data.encode(), self.now_ms)
                self.out.append(f"{data}: {term}/{index}")
            except ProposalDropped as exc:
                self.out.append(f"{data}: dropped ({exc.reason}, leader {exc.leader_id})")
        self._drain(node_id)

    def cmd_read(self, args: list[str]) -> None:
        """read ID REQUEST_ID... — linearizable reads (ReadIndex) at node ID, asked together (before
        one Ready)."""
        node_id = int(args[0])
        for rid in args[1:]:
            self._core(node_id).read_index(int(rid), self.now_ms)
        self._drain(node_id)
        self._print_queue_tail()

    def cmd_transfer(self, args: list[str]) -> None:
        """transfer LEADER TARGET — leader transfer."""
        node_id, target = int(args[0]), int(args[1])
        try:
            self._core(node_id).transfer_leadership(target, self.now_ms)
        except ProposalDropped as exc:
            self.out.append(f"dropped ({exc.reason})")
        self._drain(node_id)
        self._print_queue_tail()

    def _change(self, leader: int, edit: Callable[[set[int], set[int], dict[int, str]], None]) -> None:
        core = self._core(leader)
        m = core.membership
        voters, learners, addrs = set(m.voters), set(m.learners), dict(m.addrs)
        edit(voters, learners, addrs)
        try:
            index = core.change_membership(Membership(frozenset(voters), frozenset(learners), addrs), self.now_ms)
            self.out.append(f"config at {index}: voters={sorted(voters)} learners={sorted(learners)}")
        except ProposalDropped as exc:
            self.out.append(f"dropped ({exc.reason})")
        except ValueError as exc:
            self.out.append(f"refused ({exc})")
        self._drain(leader)

    def cmd_add_learner(self, args: list[str]) -> None:
        """add-learner LEADER ID — add ID as a learner (with its address)."""
        n = int(args[1])

        def edit(v: set[int], lrn: set[int], a: dict[int, str]) -> None:
            lrn.add(n)
            a[n] = f"addr{n}"
        self._change(int(args[0]), edit)

    def cmd_promote(self, args: list[str]) -> None:
        """promote LEADER ID — make learner ID a voter."""
        n = int(args[1])

        def edit(v: set[int], lrn: set[int], a: dict[int, str]) -> None:
            lrn.discard(n)
            v.add(n)
        self._change(int(args[0]), edit)

    def cmd_remove(self, args: list[str]) -> None:
        """remove LEADER ID — remove ID (voter or learner) from the configuration."""
        n = int(args[1])

        def edit(v: set[int], lrn: set[int], a: dict[int, str]) -> None:
            v.discard(n)
            lrn.discard(n)
            a.pop(n, None)
        self._change(int(args[0]), edit)

    def cmd_change(self, args: list[str]) -> None:
        """change LEADER voters=1,2,3 [learners=4] — propose an arbitrary configuration."""
        _, kw = _kv(args[1:])
        voters, learners = set(_ids(kw.get("voters", ""))), set(_ids(kw.get("learners", "")))

        def edit(v: set[int], lrn: set[int], a: dict[int, str]) -> None:
            v.clear()
            v.update(voters)
            lrn.clear()
            lrn.update(learners)
            a.clear()
            a.update({i: f"addr{i}" for i in voters | learners})
        self._change(int(args[0]), edit)

    def cmd_snapshot(self, args: list[str]) -> None:
        """snapshot ID — ask ID for a snapshot at its applied index (on demand)."""
        node_id = int(args[0])
        self._core(node_id).request_snapshot(self.now_ms)
        self._drain(node_id)

    def cmd_partition(self, args: list[str]) -> None:
        """partition 1,2 3,4,5 — groups that cannot reach each other (both directions)."""
        groups = [set(_ids(g)) for g in args]
        for a in self.nodes:
            for b in self.nodes:
                ga = next((i for i, g in enumerate(groups) if a in g), None)
                gb = next((i for i, g in enumerate(groups) if b in g), None)
                if a != b and ga != gb:
                    self.blocked.add((a, b))

    def cmd_block(self, args: list[str]) -> None:
        """block FROM TO — asymmetric: FROM can no longer reach TO."""
        self.blocked.add((int(args[0]), int(args[1])))

    def cmd_heal(self, args: list[str]) -> None:
        """heal — all links work again."""
        self.blocked.clear()

    def cmd_crash(self, args: list[str]) -> None:
        """crash ID — power cut: lose what was not synced, drop messages queued to ID."""
        node = self.nodes[int(args[0])]
        node.core = None
        node.storage.crash()
        self.queue = [m for m in self.queue if m.to_id != node.id]

    def cmd_wipe(self, args: list[str]) -> None:
        """wipe ID — ID is down and its disk is empty; an operator re-initialises it with the
        cluster's bootstrap configuration (as `aspen init` would)."""
        node = self.nodes[int(args[0])]
        node.core = None
        node.storage.wipe(self.bootstrap)
        node.applied = []
        self.queue = [m for m in self.queue if m.to_id != node.id]

    def cmd_restart(self, args: list[str]) -> None:
        """restart ID — start ID again from its (synced) storage."""
        self._start(self.nodes[int(args[0])])

    def cmd_status(self, args: list[str]) -> None:
        """status [IDS] — role, term, leader, commit, applied, last index and config per node."""
        ids = _ids(args[0]) if args else sorted(self.nodes)
        for i in ids:
            core = self.nodes[i].core
            if core is None:
                self.out.append(f"{i}: down")
                continue
            m = core.membership
            learners = f" learners={sorted(m.learners)}" if m.learners else ""
            self.out.append(
                f"{i}: {core.role.value} term={core.term} leader={core.leader_id} commit={core.commit_index} "
                f"applied={core.applied_index} last={core.last_index} voters={sorted(m.voters)}{learners}"
            )

    def cmd_log(self, args: list[str]) -> None:
        """log ID — the node's log (first..last) as term/index."""
        core = self._core(int(args[0]))
        log = core.log
        first, last = log.first_index(), log.last_index()
        ents = log.entries(first, last + 1, 1 << 62) if last >= first else []
        self.out.append(f"first={first} last={last}: " + " ".join(_entry(e) for e in ents))

    def cmd_applied(self, args: list[str]) -> None:
        """applied [IDS] — the commands each node's state machine applied, in order."""
        ids = _ids(args[0]) if args else sorted(self.nodes)
        for i in ids:
            self.out.append(f"{i}: {' '.join(self.nodes[i].applied) or '(none)'}")
