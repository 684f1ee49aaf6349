"""Raft data types shared by the core, the storages, the state machine and the worker.

Rules:

- Everything here is a plain value (msgspec Structs, frozen). The core, `memory_storage.py`,
  the durable `storage.py` and the worker all speak these types; the wire messages in
  `messages.py` embed `Entry` and `SnapshotMeta`.
- Node ids are integers (u64, like the Rust Aspen's `NodeId = u64`). `NO_NODE = 0` means "none"
  (no vote, no known leader), so real node ids start at 1 (etcd's `None = 0` convention).
- Log indexes start at 1; index 0 / term 0 is the empty log's sentinel (Raft §5.3: prevLogIndex
  of the first entry is 0).

Theory of the storage seam (etcd's `Storage` interface, `storage.go`): the core reads the
*durable* log through `RaftStorage` and keeps the not-yet-persisted tail itself (the "unstable"
log). Writes are done by the worker, never by the core, in the order the `Ready` lists them;
see `RaftStorage` for the exact sequence.
"""

from __future__ import annotations

import enum
from typing import Annotated, Protocol

import msgspec

from aspen.errors import StorageError
from aspen.wire import MAX_RPC_MESSAGE_SIZE

# "No node": node ids are u64 and start at 1; 0 is the absent vote / unknown leader (etcd's None).
NO_NODE = 0

# Bound on members (voters + learners) of one configuration: the Rust Aspen's MAX_VOTERS = 100
# (learner_promotion.rs); learners share the bound (guess: revisit).
MAX_MEMBERS = 100

# An address is opaque to Raft (the network layer's EndpointAddr, JSON or ticket form). 4 KiB
# holds an endpoint id, a relay URL and a handful of socket addresses (guess: revisit).
MAX_ADDR_SIZE = 4096

# Encoding overhead charged per entry when sizing batches: a msgpack array header, term, index
# and kind as ints, and the bin header of `data` (measured: <= 24 bytes for u64 term/index).
ENTRY_OVERHEAD_BYTES = 24


class EntryKind(enum.IntEnum):
    """What an entry's `data` holds. Stored and sent as a small int."""

    NORMAL = 0  # an application command (opaque bytes for Raft)
    CONFIG = 1  # an encoded `Membership` (see `encode_membership`)
    NOOP = 2  # the empty entry a new leader appends (Raft §8: commit an entry of its term)


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One log entry. `data` is opaque for NORMAL, an encoded Membership for CONFIG, b"" for NOOP."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_RPC_MESSAGE_SIZE)] = b""


def entry_size_bytes(entry: Entry) -> int:
    """The size charged for `entry` against byte limits (payload + ENTRY_OVERHEAD_BYTES)."""
    return len(entry.data) + ENTRY_OVERHEAD_BYTES


def limit_entries_size(entries: list[Entry], max_size_bytes: int, *, at_least_one: bool = True) -> list[Entry]:
    """The longest prefix of `entries` within `max_size_bytes` (entry_size_bytes each); with
    `at_least_one`, the first entry even if it alone is larger (progress over any limit)."""
    total = 0
    for i, e in enumerate(entries):
        total += len(e.data) + ENTRY_OVERHEAD_BYTES
        if total > max_size_bytes:
            return entries[: max(i, 1 if at_least_one else 0)]
    return entries


class HardState(msgspec.Struct, frozen=True, array_like=True):
    """The state Raft must persist before answering (Raft Fig. 2: currentTerm, votedFor) + commit.

    `commit` is persisted for faster restarts but may lag (etcd does the same): losing it is safe.
    """

    term: int = 0
    vote: int = NO_NODE
    commit: int = 0


class Membership(msgspec.Struct, frozen=True):
    """A cluster configuration: who votes, who only learns, and how to reach each of them.

    `addrs` maps every member (voter or learner) to its opaque network address; the network
    layer reads it to reach new members. Invariant (checked by `validate`): voters and learners
    are disjoint, and every member has an address entry (possibly "").
    """

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()
    addrs: dict[int, Annotated[str, msgspec.Meta(max_length=MAX_ADDR_SIZE)]] = {}

    def validate(self) -> None:
        """Raise ValueError if the configuration is malformed."""
        if self.voters & self.learners:
            raise ValueError(f"nodes both voter and learner: {sorted(self.voters & self.learners)}")
        members = self.voters | self.learners
        if len(members) > MAX_MEMBERS:
            raise ValueError(f"{len(members)} members > MAX_MEMBERS={MAX_MEMBERS}")
        if any(n <= NO_NODE for n in members):
            raise ValueError("node ids start at 1")
        if set(self.addrs) != members:
            raise ValueError("addrs must list exactly the members")

    def members(self) -> frozenset[int]:
        return self.voters | self.learners

    def quorum(self) -> int:
        """Votes needed for a majority of voters (Raft §5.2)."""
        return len(self.voters) // 2 + 1


_MEMBERSHIP_ENCODER = msgspec.msgpack.Encoder()
_MEMBERSHIP_DECODER = msgspec.msgpack.Decoder(Membership)


def encode_membership(membership: Membership) -> bytes:
    """The `data` of a CONFIG entry."""
    return _MEMBERSHIP_ENCODER.encode(membership)


def decode_membership(data: bytes) -> Membership:
    """Inverse of `encode_membership`; raises msgspec.DecodeError on garbage."""
    return _MEMBERSHIP_DECODER.decode(data)


class SnapshotMeta(msgspec.Struct, frozen=True):
    """Where a snapshot stands in the log: the last included entry and the config in force there."""

    index: int = 0
    term: int = 0
    membership: Membership = Membership()


class Snapshot(msgspec.Struct, frozen=True):
    """A state-machine snapshot: `data` is the state machine's own encoding, opaque to Raft."""

    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""


class LogCompacted(StorageError):
    """The requested index is at or below the compaction point (use the snapshot instead)."""


class LogUnavailable(StorageError):
    """The requested index is above the last durable index."""


class RaftStorage(Protocol):
    """The durable Raft state, as the core reads it and as the worker writes it.

    READ side (called by the core, synchronously; etcd `Storage`):

    - `initial_state()` -> (HardState, Membership of the latest snapshot). A fresh store reports
      `HardState()` and the membership it was bootstrapped with (`SnapshotMeta(index=0, term=0,
      membership=...)`); a node that will join later is bootstrapped with an empty Membership.
      The core finds later CONFIG entries itself by reading the log once at startup.
    - `first_index()` -> index of the first entry still in the log (snapshot/compaction index + 1,
      so 1 for a fresh store); `last_index()` -> index of the last durable entry (first_index()-1
      when the log is empty).
    - `term(index)` -> term of the entry at `index`, valid for first_index()-1 <= index <=
      last_index() (the entry just before the first is remembered: the snapshot's or compaction
      point's term). Raises LogCompacted below, LogUnavailable above.
    - `entries(lo, hi, max_size_bytes)` -> entries [lo, hi), contiguous, stopping before the
      total `entry_size_bytes` would exceed `max_size_bytes` but always returning at least one
      entry if lo < hi. Raises LogCompacted if lo < first_index(), LogUnavailable if hi >
      last_index() + 1.
    - `snapshot()` -> the latest snapshot (meta + data).

    WRITE side (called by the worker, never by the core, in exactly this order per Ready):

    1. `apply_snapshot(snapshot)` if `ready.snapshot`: replace everything with the snapshot; the
       log becomes empty, positioned right after `snapshot.meta.index`.
    2. `append(entries)` if `ready.entries`: the entries are contiguous; if the first one's index
       is <= last_index(), first discard the stored suffix from that index (a conflict the core
       resolved), then append.
    3. `set_hard_state(hard_state)` if `ready.hard_state`.
    4. `sync()` if `ready.must_sync`: make 1-3 durable (fsync) before any message is sent.
    Then, after the worker applied `ready.committed_entries` and if `ready.snapshot_to_take`:
    5. `create_snapshot(snapshot)`: store a snapshot the worker built from its state machine at
       `snapshot.meta.index` (<= applied); durable when it returns (atomic replace).
    6. `compact(index)`: drop entries <= index (index <= latest snapshot index, the core passes
       `ready.compact_to_index`), remembering term(index); durable when it returns.
    """

    # -- read side (core) --
    def initial_state(self) -> tuple[HardState, Membership]: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def term(self, index: int) -> int: ...

    def entries(self, lo: int, hi: int, max_size_bytes: int) -> list[Entry]: ...

    def snapshot(self) -> Snapshot: ...

    # -- write side (worker), in this order --
    def apply_snapshot(self, snapshot: Snapshot) -> None: ...

    def append(self, entries: list[Entry]) -> None: ...

    def set_hard_state(self, hard_state: HardState) -> None: ...

    def sync(self) -> None: ...

    def create_snapshot(self, snapshot: Snapshot) -> None: ...

    def compact(self, index: int) -> None: ...


__all__ = [
    "NO_NODE",
    "MAX_MEMBERS",
    "MAX_ADDR_SIZE",
    "ENTRY_OVERHEAD_BYTES",
    "EntryKind",
    "Entry",
    "entry_size_bytes",
    "limit_entries_size",
    "HardState",
    "Membership",
    "encode_membership",
    "decode_membership",
    "SnapshotMeta",
    "Snapshot",
    "LogCompacted",
    "LogUnavailable",
    "RaftStorage",
]
