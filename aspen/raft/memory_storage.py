"""MemoryStorage: an in-memory RaftStorage that models fsync, for tests and simulation.

Rules:

- Writes (`append`, `set_hard_state`) change the *current* state at once, and become *durable*
  only at `sync()`. `crash()` throws away everything not synced, like a power cut on a disk
  whose page cache was not flushed.
- `apply_snapshot`, `create_snapshot` and `compact` are durable when they return (a real
  storage writes a new file and renames it atomically). A snapshot install also makes the
  (then empty) log durable.
- Reads see the current state: the core only reads what the worker wrote for it.

The log is a list whose element 0 is a sentinel carrying the index and term just before the
first entry (the snapshot or compaction point), as in etcd's MemoryStorage.
"""

from __future__ import annotations

from aspen.raft.types import (
    Entry,
    EntryKind,
    HardState,
    LogCompacted,
    LogUnavailable,
    Membership,
    Snapshot,
    SnapshotMeta,
    limit_entries_size,
)


class MemoryStorage:
    """RaftStorage in memory with synced/unsynced state (see the module docstring)."""

    def __init__(self, membership: Membership | None = None) -> None:
        """A fresh store bootstrapped with `membership` (empty: a node that joins later)."""
        snap = Snapshot(SnapshotMeta(0, 0, membership or Membership()), b"")
        self._snapshot = snap
        self._ents: list[Entry] = [Entry(0, 0, EntryKind.NOOP, b"")]
        self._hs = HardState()
        # Durable copy: `_durable_ents` equals `_ents[:_dirty_pos]` plus its own tail; sync()
        # copies only what changed since the last sync.
        self._durable_ents: list[Entry] = list(self._ents)
        self._durable_hs = self._hs
        self._dirty_pos: int | None = None  # lowest list position written since the last sync
        self.sync_count = 0

    # -- read side --

    def initial_state(self) -> tuple[HardState, Membership]:
        return self._hs, self._snapshot.meta.membership

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        ents = self._ents
        return ents[0].index + len(ents) - 1

    def term(self, index: int) -> int:
        ents = self._ents
        offset = ents[0].index
        if index < offset:
            raise LogCompacted(f"index {index} compacted (first {offset + 1})")
        pos = index - offset
        if pos >= len(ents):
            raise LogUnavailable(f"index {index} > last {offset + len(ents) - 1}")
        return ents[pos].term

    def entries(self, lo: int, hi: int, max_size_bytes: int) -> list[Entry]:
        ents = self._ents
        offset = ents[0].index
        if lo <= offset:
            raise LogCompacted(f"index {lo} compacted (first {offset + 1})")
        if hi > offset + len(ents):
            raise LogUnavailable(f"index {hi - 1} > last {offset + len(ents) - 1}")
        return limit_entries_size(ents[lo - offset : hi - offset], max_size_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- write side (worker) --

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        self._snapshot = snapshot
        self._ents = [Entry(meta.term, meta.index, EntryKind.NOOP, b"")]
        self._durable_ents = list(self._ents)
        self._dirty_pos = None
        if self._hs.commit < meta.index:
            self._hs = HardState(self._hs.term, self._hs.vote, meta.index)

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        ents = self._ents
        offset = ents[0].index
        first = entries[0].index
        if first <= offset:
            raise LogCompacted(f"append at {first} at or below the compaction point {offset}")
        pos = first - offset
        if pos > len(ents):
            raise LogUnavailable(f"append at {first} leaves a gap after {offset + len(ents) - 1}")
        if pos < len(ents):
            del ents[pos:]
        ents.extend(entries)
        if self._dirty_pos is None or pos < self._dirty_pos:
            self._dirty_pos = pos

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hs = hard_state

    def sync(self) -> None:
        pos = self._dirty_pos
        if pos is not None:
            durable = self._durable_ents
            del durable[pos:]
            durable.extend(self._ents[pos:])
            self._dirty_pos = None
        self._durable_hs = self._hs
        self.sync_count += 1

    def create_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.meta.index <= self._snapshot.meta.index:
            return  # an older or equal snapshot: keep the newer one
        if snapshot.meta.index > self.last_index():
            raise LogUnavailable(f"snapshot at {snapshot.meta.index} beyond last {self.last_index()}")
        self._snapshot = snapshot

    def compact(self, index: int) -> None:
        ents = self._ents
        offset = ents[0].index
        if index <= offset:
            return
        if index > self._snapshot.meta.index:
            raise LogUnavailable(f"compact to {index} beyond the snapshot {self._snapshot.meta.index}")
        pos = index - offset
        sentinel = Entry(ents[pos].term, index, EntryKind.NOOP, b"")
        self._ents = [sentinel] + ents[pos + 1 :]
        # Compaction only drops applied (hence synced) entries: the durable copy follows.
        durable = self._durable_ents
        self._durable_ents = [sentinel] + durable[pos + 1 :]
        if self._dirty_pos is not None:
            self._dirty_pos = max(1, self._dirty_pos - pos)

    # -- simulation --

    def crash(self) -> None:
        """Lose everything not synced (a power cut). The store stays usable, as after a reboot."""
        self._ents = list(self._durable_ents)
        self._hs = self._durable_hs
        self._dirty_pos = None

    def wipe(self, membership: Membership | None = None) -> None:
        """Lose the whole disk (a follower restarting from an empty disk)."""
        self.__init__(membership)  # type: ignore[misc]

    def all_entries(self) -> list[Entry]:
        """The current log (for invariant checks)."""
        return self._ents[1:]

    def durable_hard_state(self) -> HardState:
        return self._durable_hs

    def durable_term(self, index: int) -> int | None:
        """Term of the durable entry at `index` (None: not durable, or folded into the snapshot)."""
        durable = self._durable_ents
        offset = durable[0].index
        if index < offset:
            return None
        pos = index - offset
        return durable[pos].term if pos < len(durable) else None


__all__ = ["MemoryStorage"]
