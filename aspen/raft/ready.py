"""The outputs of the Raft core: `Ready` (etcd's Ready/Advance contract), read results, errors.

The worker's loop, the one contract every adapter and simulator follows (etcd `doc.go`):

    while (rd := core.ready()) is not None:
        1. persist, in this order:  storage.apply_snapshot(rd.snapshot)   if rd.snapshot
                                    storage.append(rd.entries)            if rd.entries
                                    storage.set_hard_state(rd.hard_state) if rd.hard_state
                                    storage.sync()                        if rd.must_sync
        2. send rd.messages (only now: a vote or an ack must never precede its fsync)
        3. apply: restore the state machine from rd.snapshot if set, then apply
           rd.committed_entries in order; then answer rd.read_states (each once applied >= index)
        4. if rd.snapshot_to_take: build a snapshot of the state machine (now at exactly
           rd.snapshot_to_take.index), storage.create_snapshot(...), storage.compact(
           rd.compact_to_index)
        5. core.advance(rd)

Between `ready()` and `advance()` no other core method may be called (UsageError): the core then
knows that everything it handed out was persisted, sent and applied.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from aspen.errors import AspenError
from aspen.raft.messages import RaftMessage
from aspen.raft.types import NO_NODE, Entry, HardState, RaftStorage, Snapshot, SnapshotMeta


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting (leader changes are INFO-level news for operators)."""

    leader_id: int
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """The answer to `read_index(request_id)`.

    `ok`: serve the read once the local state machine has applied >= `index` (it is then
    linearizable, Raft thesis §6.4). Not ok: no leader could confirm it; retry (maybe elsewhere).
    """

    request_id: int
    index: int
    ok: bool


@dataclass(slots=True)
class Ready:
    """Everything the worker must do, fields in the order it acts (see the module docstring)."""

    soft_state: SoftState | None = None  # changed leader/role, for logs and routing
    snapshot: Snapshot | None = None  # a received snapshot: persist, then restore the SM from it
    entries: list[Entry] = field(default_factory=list)  # append to the durable log
    hard_state: HardState | None = None  # persist if not None
    must_sync: bool = False  # fsync before sending (entries, term or vote changed)
    messages: list[RaftMessage] = field(default_factory=list)  # send after persisting
    committed_entries: list[Entry] = field(default_factory=list)  # apply in order
    read_states: list[ReadState] = field(default_factory=list)  # answer after applying
    snapshot_to_take: SnapshotMeta | None = None  # build a snapshot at this point, then compact
    compact_to_index: int = 0  # storage.compact(this) after create_snapshot


class ProposalDropped(AspenError):
    """A proposal, membership change or transfer was refused; the caller may retry elsewhere.

    `reason` says why ("not_leader", "transferring", "config_pending", ...); `leader_id` is the
    leader this node knows of (NO_NODE if none), where a client should retry.
    """

    def __init__(self, reason: str, leader_id: int = NO_NODE) -> None:
        super().__init__(f"proposal dropped: {reason} (leader={leader_id})")
        self.reason = reason
        self.leader_id = leader_id


def write_ready(storage: RaftStorage, rd: Ready) -> None:
    """Step 1 of the contract up to the fsync, in its order: the snapshot, the entries, the hard
    state. The caller then syncs if `rd.must_sync` (separate, so that it can time the fsync or,
    in a simulator, cut the power just before it)."""
    if rd.snapshot is not None:
        storage.apply_snapshot(rd.snapshot)
    if rd.entries:
        storage.append(rd.entries)
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)


def may_send_before_persisting(rd: Ready, is_leader: bool, persisted: HardState) -> bool:
    """True when this Ready's messages may go out before its fsync (steps 2 before 1): a
    leader's appends, with no term or vote to make durable first, no snapshot, no role change
    (Raft thesis §10.2.1: the leader's fsync then overlaps the followers'). Safe only while
    acknowledgements are processed after this Ready's fsync (a single-threaded worker): commit
    then never counts an unsynced leader entry."""
    if not is_leader or rd.soft_state is not None or rd.snapshot is not None:
        return False
    hs = rd.hard_state
    return hs is None or (hs.term == persisted.term and hs.vote == persisted.vote)


def may_apply_before_persisting(rd: Ready) -> bool:
    """True when, in a Ready whose messages go before its fsync, the committed entries may also
    be applied and answered before it (step 3 before 1): they were synced by earlier Readies --
    all precede this Ready's own entries. (A leader that is its own quorum commits entries of
    this very Ready: they wait for the fsync.) etcd applies in parallel with its WAL write."""
    return bool(rd.committed_entries) and bool(rd.entries) and \
        rd.committed_entries[-1].index < rd.entries[0].index


__all__ = ["Role", "SoftState", "ReadState", "Ready", "ProposalDropped", "write_ready",
           "may_send_before_persisting", "may_apply_before_persisting"]
