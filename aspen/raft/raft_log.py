"""RaftLog: the durable log (read through RaftStorage) plus the core's unstable tail.

Rules (etcd `log.go` + `log_unstable.go`):

- Entries with index >= `_offset` live in `_unstable` (not yet handed to the worker, or handed
  out in a Ready not yet advanced); entries below live in storage. A pending received snapshot
  (`_snapshot`) sits "below" the unstable entries until the worker persisted it.
- `committed` only grows (Raft §5.3); truncating at or below it is a safety bug and raises.
- `applied` <= `committed`; it moves when a Ready's committed entries were applied (advance).
- Nothing here sends messages or knows about roles; the core does.
"""

from __future__ import annotations

from aspen.errors import AspenError
from aspen.raft.types import Entry, RaftStorage, Snapshot, entry_size_bytes, limit_entries_size


class RaftSafetyError(AspenError):
    """An invariant of Raft would be broken (e.g. truncating committed entries): a bug."""


class RaftLog:
    """Durable log + unstable tail + commit/applied indexes. Owned by one RaftCore."""

    __slots__ = ("storage", "_unstable", "_offset", "_snapshot", "committed", "applied")

    def __init__(self, storage: RaftStorage) -> None:
        self.storage = storage
        self._unstable: list[Entry] = []
        self._offset = storage.last_index() + 1
        self._snapshot: Snapshot | None = None
        # After a restart the state machine is rebuilt from the snapshot (etcd Config.Applied):
        # the owner calls restart_at(snapshot index).
        self.committed = storage.first_index() - 1
        self.applied = self.committed

    def restart_at(self, snapshot_index: int) -> None:
        """Commit and applied start at the durable snapshot (it may be past the compaction point)."""
        self.committed = max(self.committed, snapshot_index)
        self.applied = max(self.applied, snapshot_index)

    # -- positions --

    def first_index(self) -> int:
        if self._snapshot is not None:
            return self._snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self._unstable:
            return self._unstable[-1].index
        if self._snapshot is not None:
            return self._snapshot.meta.index
        return self.storage.last_index()

    def term(self, index: int) -> int | None:
        """Term at `index`, or None when compacted away or beyond the end."""
        off = self._offset
        if index >= off:
            pos = index - off
            if pos < len(self._unstable):
                return self._unstable[pos].term
            return None
        snap = self._snapshot
        if snap is not None:
            if index == snap.meta.index:
                return snap.meta.term
            if index < snap.meta.index:
                return None
            # offset == snap.index + 1 while a snapshot is pending, so we cannot get here.
            return None
        storage = self.storage
        if index < storage.first_index() - 1 or index > storage.last_index():
            return None
        return storage.term(index)

    def last_term(self) -> int:
        term = self.term(self.last_index())
        assert term is not None, "the last index always has a known term"
        return term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up-to-date as ours?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    # -- reading --

    def entries(self, lo: int, hi: int, max_size_bytes: int) -> list[Entry]:
        """Entries [lo, hi) within `max_size_bytes` (at least one if lo < hi); lo >= first_index."""
        if lo >= hi:
            return []
        off = self._offset
        out: list[Entry] = []
        if lo < off:
            out = self.storage.entries(lo, min(hi, off), max_size_bytes)
            if hi <= off or out[-1].index < min(hi, off) - 1:
                return out
            max_size_bytes -= sum(entry_size_bytes(e) for e in out)
            lo = off
        tail = self._unstable[lo - off : hi - off]
        if not out:
            return limit_entries_size(tail, max_size_bytes)
        if max_size_bytes <= 0:
            return out
        return out + limit_entries_size(tail, max_size_bytes, at_least_one=False)

    def unstable_entries(self) -> list[Entry]:
        return self._unstable

    def pending_snapshot(self) -> Snapshot | None:
        return self._snapshot

    def next_committed_entries(self, max_size_bytes: int) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if lo > self.committed:
            return []
        return self.entries(lo, self.committed + 1, max_size_bytes)

    def has_next_committed_entries(self) -> bool:
        return self.committed > self.applied

    # -- writing (in memory; the worker persists what the Ready hands out) --

    def append(self, entries: list[Entry]) -> None:
        """Append contiguous `entries`, truncating any existing suffix from entries[0].index."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise RaftSafetyError(f"truncating committed entry {first} (committed {self.committed})")
        unstable = self._unstable
        end = self._offset + len(unstable)
        if first == end:
            unstable.extend(entries)
        elif first <= self._offset:
            # Replaces durable entries too: storage.append truncates them when it writes these.
            self._offset = first
            self._unstable = list(entries)
        else:
            del unstable[first - self._offset :]
            unstable.extend(entries)

    def find_conflict(self, entries: list[Entry]) -> int:
        """Index of the first of `entries` not already in the log (0 if all are present).

        Log Matching (§5.3) lets us check the last entry first: if it matches, all do.
        """
        last = entries[-1]
        if self.term(last.index) == last.term:
            return 0
        for e in entries:
            if self.term(e.index) != e.term:
                return e.index
        return 0

    def maybe_append(self, prev_index: int, prev_term: int, commit: int, entries: list[Entry]) -> int | None:
        """AppendEntries receiver rules (Raft Fig. 2). Returns the last new index, or None on mismatch."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        if entries:
            conflict = self.find_conflict(entries)
            if conflict:
                if conflict <= self.committed:
                    raise RaftSafetyError(f"conflict at {conflict} <= committed {self.committed}")
                self.append(entries[conflict - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest (i, term(i)) with i <= index and term(i) <= term (etcd findConflictByTerm).

        Stops at the first unknown term (compacted): returns that index with term 0.
        """
        index = min(index, self.last_index())
        while index > 0:
            t = self.term(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            self.committed = min(index, self.last_index())
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = index

    def restore(self, snapshot: Snapshot) -> None:
        """Adopt a received snapshot: the log restarts after it (persisted via the next Ready)."""
        index = snapshot.meta.index
        self._snapshot = snapshot
        self._unstable = []
        self._offset = index + 1
        self.committed = index
        self.applied = index

    def stable_to(self, last_index: int, last_term: int) -> None:
        """The worker persisted unstable entries up to `last_index` (etcd stableTo)."""
        if self.term(last_index) != last_term or last_index < self._offset:
            return
        del self._unstable[: last_index + 1 - self._offset]
        self._offset = last_index + 1

    def stable_snapshot(self) -> None:
        self._snapshot = None


__all__ = ["RaftLog", "RaftSafetyError"]
