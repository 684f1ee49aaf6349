"""The durable Raft log: checksummed frames in segment files, group commit, torn-tail recovery.

Rules:

- **Nothing is durable before `sync()` returns.** `append` and `set_hard_state` only buffer
  (reads see the buffered state at once, like MemoryStorage; a crash drops it);
  `sync()` writes everything buffered as ONE frame with one `write` and one `fdatasync` (group
  commit: a batch of N entries costs one sync). `sync_count` counts the real syncs.
- **One frame per sync, and every frame is synced before the next one is written.** So only the
  last frame of the last segment can ever be torn by a crash. Recovery uses this to tell a torn
  tail from corruption: a bad frame with no valid frame after it is a torn tail and is truncated
  (it was never acknowledged); a bad frame *followed by a valid one* means data that was synced
  went bad, and `StorageError` names the file and offset. A bad frame anywhere in a non-last
  segment is always an error. Nothing acknowledged is ever dropped silently; the one blind spot
  (bit rot inside the very last synced frame looks like a torn write) is logged at WARNING with
  file, offset and size.
- **Every frame carries the full hard state (term, vote, commit) and the compaction point**
  (`base_index`, `base_term`). The hard state is therefore written atomically and checksummed in
  the same sync as the entries it goes with (etcd's WAL does the same: HardState records share
  the entries' fsync), instead of a second file with its own temp+fsync+rename+fsync per change.
  Recovery takes them from the last valid frame.
- **A frame replaces the suffix.** A frame with `first_index = f` and n entries means "entries
  >= f are now exactly these n entries" (etcd's WAL replays overwrites the same way). So a Raft
  conflict truncation is just the next frame starting lower; it becomes durable atomically with
  the entries that replace the suffix. An empty frame at `last + 1` only records hard state.
- **Compaction deletes whole segments, oldest first**, once none of their entries is above the
  compaction point (and never the active segment). Only a prefix is deleted, so replaying the
  remaining segments gives the same log above the compaction point.

On-disk layout of a log directory:

    seg-<seq:016x>.log      segments, replayed in seq order; created as .tmp, synced, renamed
      segment header (20 B): magic "ASEG", version u16, reserved u16, seq u64, crc32 u32
      frames, back to back:
        frame header (72 B): magic "AFRM", body_size u32, count u32, first_index u64,
                             hs_term u64, hs_vote u64, hs_commit u64, base_index u64,
                             base_term u64, crc32 u32 (of the header before it + entry table)
        entry table: count x (term u64, kind u8, data_size u32, data_crc32 u32)   17 B each
        entry data, concatenated (each entry's bytes checked by its own crc32 on every read)

Recovery reads every frame since the last compaction and checks every checksum, so its time is
bounded by the snapshot policy (the log since the last snapshot) and MAX_LOG_ENTRIES.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterable

from aspen.errors import LimitExceeded, StorageError, UsageError
from aspen.raft.types import (
    ENTRY_OVERHEAD_BYTES,
    Entry,
    EntryKind,
    HardState,
    LogCompacted,
    LogUnavailable,
    limit_entries_size,
)
from aspen.units import MiB
from aspen.wire import MAX_RPC_MESSAGE_SIZE

logger = logging.getLogger(__name__)

# etcd's WAL uses 64 MB segments (wal.SegmentSizeBytes): big enough that rotation (a file create
# plus a directory fsync) is rare, small enough that compaction frees space in useful steps.
MAX_SEGMENT_SIZE = 64 * MiB
# One frame is written with one write() and one fdatasync(). It must hold one maximal entry
# (MAX_RPC_MESSAGE_SIZE = 10 MiB, the largest entry Raft can replicate) plus its headers.
MAX_FRAME_SIZE = 16 * MiB
# Entries per frame: a group-commit batch of 64 Ki 100-byte entries is ~7.5 MiB, under
# MAX_FRAME_SIZE; larger batches are split into several synced frames.
MAX_FRAME_ENTRIES = 64 * 1024
# Largest entry payload: anything bigger could not travel in one AppendEntries anyway.
MAX_ENTRY_SIZE = MAX_RPC_MESSAGE_SIZE
# Entries between the compaction point and the last index. etcd snapshots every 100,000 entries
# by default (--snapshot-count) and openraft every 5,000; 5x etcd's figure means a healthy
# snapshot policy never hits this, while the in-memory index stays under ~100 MB.
MAX_LOG_ENTRIES = 512 * 1024
# Segment files (and open descriptors): 1024 x 64 MiB = 64 GiB of log. guess: revisit.
MAX_SEGMENTS = 1024
# The most recently synced entries are also kept in memory, up to this many bytes of data, and
# `entries()` serves them from there: a leader reads every new entry back right after its sync
# (one append per follower, then the apply), which cost a pread and a crc check per read (three
# per batch in perf/kv_bench.py). Older entries (a lagging follower) come from disk.
MAX_RECENT_ENTRIES_SIZE = 4 * MiB
# A segment is at most MAX_SEGMENT_SIZE, or one header plus one frame if a single frame is bigger.
MAX_SEGMENT_FILE_SIZE = MAX_SEGMENT_SIZE + MAX_FRAME_SIZE

SEGMENT_MAGIC = b"ASEG"
FRAME_MAGIC = b"AFRM"
SEGMENT_VERSION = 1
_SEGMENT_HEADER = struct.Struct(">4sHHQI")
_FRAME_PREFIX = struct.Struct(">4sIIQQQQQQ")  # the frame header without its crc
_CRC = struct.Struct(">I")
_ENTRY_ROW = struct.Struct(">QBII")
FRAME_HEADER_SIZE = _FRAME_PREFIX.size + _CRC.size
SEGMENT_HEADER_SIZE = _SEGMENT_HEADER.size
# entries() reads a run of entries with one pread if the dead bytes between them (frame headers,
# overwritten entries) are at most this much; past it a second pread is cheaper.
_MAX_READ_GAP_SIZE = 64 * 1024
_SEGMENT_NAME = re.compile(r"^seg-([0-9a-f]{16})\.log$")
_KINDS = frozenset(int(kind) for kind in EntryKind)

# An entry's location: (term, kind, segment seq, data offset in the file, data size, data crc32).
_Loc = tuple[int, int, int, int, int, int]


def fsync_dir(path: str) -> None:
    """fsync a directory so that file creations, renames and deletions in it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _datasync(fd: int) -> None:
    # fdatasync also flushes the file size, which appends need; fsync where it does not exist.
    sync = getattr(os, "fdatasync", os.fsync)
    sync(fd)


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(f"pwrite wrote {written} bytes")
        view = view[written:]
        offset += written


class _Frame:
    """A parsed, fully verified frame."""

    __slots__ = ("first_index", "hard_state", "base_index", "base_term", "locs", "end")

    def __init__(self, first_index: int, hard_state: HardState, base_index: int, base_term: int,
                 locs: list[tuple[int, int, int, int, int]], end: int) -> None:
        self.first_index = first_index
        self.hard_state = hard_state
        self.base_index = base_index
        self.base_term = base_term
        self.locs = locs  # (term, kind, data offset, data size, crc) per entry
        self.end = end


def _parse_frame(buf: bytes, pos: int) -> _Frame | str:
    """The frame at `pos` with every checksum verified, or a string saying what is wrong."""
    header_end = pos + FRAME_HEADER_SIZE
    if header_end > len(buf):
        return f"incomplete frame header ({len(buf) - pos} of {FRAME_HEADER_SIZE} bytes)"
    (magic, body_size, count, first_index, hs_term, hs_vote, hs_commit, base_index,
     base_term) = _FRAME_PREFIX.unpack_from(buf, pos)
    if magic != FRAME_MAGIC:
        return f"bad frame magic {magic!r}"
    table_size = count * _ENTRY_ROW.size
    if body_size > MAX_FRAME_SIZE or count > MAX_FRAME_ENTRIES or table_size > body_size:
        return f"implausible frame sizes (body {body_size} bytes, {count} entries)"
    end = header_end + body_size
    if end > len(buf):
        return f"incomplete frame ({len(buf) - pos} of {FRAME_HEADER_SIZE + body_size} bytes)"
    (stored_crc,) = _CRC.unpack_from(buf, pos + _FRAME_PREFIX.size)
    crc = zlib.crc32(memoryview(buf)[pos:pos + _FRAME_PREFIX.size])
    crc = zlib.crc32(memoryview(buf)[header_end:header_end + table_size], crc)
    if crc != stored_crc:
        return "frame header checksum mismatch"
    locs: list[tuple[int, int, int, int, int]] = []
    offset = header_end + table_size
    view = memoryview(buf)
    for i in range(count):
        term, kind, size, data_crc = _ENTRY_ROW.unpack_from(buf, header_end + i * _ENTRY_ROW.size)
        if offset + size > end:
            return f"entry {first_index + i} overruns its frame"
        if zlib.crc32(view[offset:offset + size]) != data_crc:
            return f"entry {first_index + i} data checksum mismatch"
        if kind not in _KINDS:
            return f"entry {first_index + i} has unknown kind {kind}"
        locs.append((term, kind, offset, size, data_crc))
        offset += size
    if offset != end:
        return f"frame body has {end - offset} unexplained bytes"
    return _Frame(first_index, HardState(term=hs_term, vote=hs_vote, commit=hs_commit),
                  base_index, base_term, locs, end)


def _find_valid_frame(buf: bytes, start: int) -> int | None:
    """Offset of the first fully valid frame at or after `start`, if any (recovery only)."""
    pos = buf.find(FRAME_MAGIC, start)
    while pos != -1:
        if isinstance(_parse_frame(buf, pos), _Frame):
            return pos
        pos = buf.find(FRAME_MAGIC, pos + 1)
    return None


class SegmentLog:
    """The durable log + hard state + compaction point in one directory (see module doc).

    Reads (`term`, `entries`, `last_index`, `hard_state`) see the current state, buffered writes
    included (`durable_last_index`/`durable_hard_state` tell what a crash would leave). Writes:
    `append`*, `set_hard_state`, then `sync()`. `compact` and `reset` are durable when they
    return. After any OS error the log is failed for good (errors are sticky: after a failed
    fsync the page cache can't be trusted); every later call raises StorageError and the owner
    must reopen, which recovers from disk.
    """

    def __init__(self, directory: str) -> None:
        self._dir = directory
        os.makedirs(directory, exist_ok=True)
        self._failed: StorageError | None = None
        self._fds: dict[int, int] = {}  # segment seq -> fd (O_RDWR)
        self._live: Counter[int] = Counter()  # segment seq -> entries of the index stored there
        self._active_seq: int | None = None
        self._active_size_bytes = 0
        self._start = 1  # index of self._locs[0]
        self._locs: list[_Loc] = []
        self._hard_state = HardState()
        self._base_index = 0
        self._base_term = 0
        self._pending_first: int | None = None
        self._pending: list[Entry] = []
        self._pending_size_bytes = 0
        self._pending_hard_state: HardState | None = None
        # A copy of the durable log's tail [_recent_start, durable_last_index] (see
        # MAX_RECENT_ENTRIES_SIZE); empty after recovery, filled by syncs.
        self._recent: list[Entry] = []
        self._recent_start = 1
        self._recent_size_bytes = 0
        self.sync_count = 0
        self.truncated_tail_bytes = 0
        self.deleted_segment_count = 0
        self._replayed_any = False
        try:
            self._recover()
        except BaseException:
            for fd in self._fds.values():
                os.close(fd)
            raise

    # -- recovery ----------------------------------------------------------------------------

    def _path(self, seq: int) -> str:
        return os.path.join(self._dir, f"seg-{seq:016x}.log")

    def _recover(self) -> None:
        seqs: list[int] = []
        for name in os.listdir(self._dir):
            match = _SEGMENT_NAME.match(name)
            if match:
                seqs.append(int(match.group(1), 16))
            elif name.endswith(".tmp"):  # a rotation that crashed before its rename
                os.unlink(os.path.join(self._dir, name))
        seqs.sort()
        if len(seqs) > MAX_SEGMENTS:
            raise LimitExceeded("MAX_SEGMENTS", len(seqs), MAX_SEGMENTS)
        for n, seq in enumerate(seqs):
            self._recover_segment(seq, is_last=n == len(seqs) - 1)
        self._live = Counter(loc[2] for loc in self._locs)
        # Entries at or below the compaction point are covered by a snapshot.
        last = self._start + len(self._locs) - 1
        if last <= self._base_index:
            self._locs = []
            self._live.clear()
            self._start = self._base_index + 1
        elif self._start <= self._base_index:
            self._drop_prefix(self._base_index + 1 - self._start)
        elif self._start > self._base_index + 1:
            raise StorageError(f"{self._dir}: log gap: entries start at {self._start} but the "
                               f"compaction point is {self._base_index}")
        if seqs:
            self._active_seq = seqs[-1]
            self._active_size_bytes = os.fstat(self._fds[seqs[-1]]).st_size

    def _recover_segment(self, seq: int, *, is_last: bool) -> None:
        path = self._path(seq)
        fd = os.open(path, os.O_RDWR)
        self._fds[seq] = fd
        size_bytes = os.fstat(fd).st_size
        if size_bytes > MAX_SEGMENT_FILE_SIZE:
            raise StorageError(f"{path}: {size_bytes} bytes > MAX_SEGMENT_FILE_SIZE")
        buf = os.pread(fd, size_bytes, 0)
        if len(buf) < SEGMENT_HEADER_SIZE:
            raise StorageError(f"{path}: short segment header ({len(buf)} bytes)")
        magic, version, _reserved, stored_seq, crc = _SEGMENT_HEADER.unpack_from(buf, 0)
        if (magic != SEGMENT_MAGIC or version != SEGMENT_VERSION or stored_seq != seq
                or zlib.crc32(buf[:SEGMENT_HEADER_SIZE - 4]) != crc):
            raise StorageError(f"{path}: bad segment header at offset 0")
        pos = SEGMENT_HEADER_SIZE
        while pos < len(buf):
            frame = _parse_frame(buf, pos)
            if isinstance(frame, str):
                if not is_last:
                    raise StorageError(f"{path}: corrupt frame at offset {pos} in a sealed "
                                       f"segment: {frame}")
                follower = _find_valid_frame(buf, pos + 1)
                if follower is not None:
                    raise StorageError(f"{path}: corrupt frame at offset {pos} ({frame}) but a "
                                       f"valid frame follows at offset {follower}: synced data "
                                       f"is damaged, refusing to truncate")
                logger.warning("torn log tail truncated path=%s offset=%d size_bytes=%d reason=%s",
                               path, pos, len(buf) - pos, frame)
                os.ftruncate(fd, pos)
                os.fsync(fd)
                self.truncated_tail_bytes += len(buf) - pos
                break
            self._replay(frame, seq, path, pos)
            pos = frame.end

    def _replay(self, frame: _Frame, seq: int, path: str, pos: int) -> None:
        first = frame.first_index
        next_index = self._start + len(self._locs)
        if first > next_index:
            # Legal only for the first surviving frame (older segments were compacted away) or
            # for a reset after a snapshot install (the frame's base covers the gap).
            if self._replayed_any and frame.base_index < first - 1:
                raise StorageError(f"{path}: frame at offset {pos} starts at index {first} but the "
                                   f"log ends at {next_index - 1}")
            self._locs = []
            self._start = first
        elif first < self._start:
            self._locs = []
            self._start = first
        else:
            del self._locs[first - self._start:]
        self._locs.extend((term, kind, seq, offset, size, crc)
                          for term, kind, offset, size, crc in frame.locs)
        self._hard_state = frame.hard_state
        self._base_index = frame.base_index
        self._base_term = frame.base_term
        self._replayed_any = True

    # -- read side (current state: durable + buffered, like MemoryStorage) -------------------

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed

    @property
    def hard_state(self) -> HardState:
        """The current hard state: the last one set, durable or not (HardState() when fresh)."""
        return self._pending_hard_state or self._hard_state

    @property
    def durable_hard_state(self) -> HardState:
        """The hard state as of the last sync (what a crash now would leave)."""
        return self._hard_state

    @property
    def base_index(self) -> int:
        """The compaction point: entries <= base_index are gone (covered by a snapshot)."""
        return self._base_index

    @property
    def base_term(self) -> int:
        return self._base_term

    def first_index(self) -> int:
        return self._base_index + 1

    def last_index(self) -> int:
        """The last entry appended, synced or not (the core reads what the worker wrote)."""
        if self._pending_first is not None:
            return self._pending_first + len(self._pending) - 1
        return self._start + len(self._locs) - 1

    def durable_last_index(self) -> int:
        """The last entry made durable by a sync (what a crash now would leave)."""
        return self._start + len(self._locs) - 1

    def term(self, index: int) -> int:
        """Term of entry `index` (base_index: base_term); LogCompacted/LogUnavailable outside."""
        self._check()
        if index == self._base_index:
            return self._base_term
        if index < self._base_index:
            raise LogCompacted(f"index {index} is compacted (first index {self._base_index + 1})")
        if index > self.last_index():
            raise LogUnavailable(f"index {index} is beyond the last index {self.last_index()}")
        if self._pending_first is not None and index >= self._pending_first:
            return self._pending[index - self._pending_first].term
        return self._locs[index - self._start][0]

    def entries(self, lo: int, hi: int, max_size_bytes: int) -> list[Entry]:
        """Entries [lo, hi), at most `max_size_bytes` (entry_size_bytes) but >= 1 if lo < hi.

        Durable entries are read from disk and every entry's crc32 is checked on the way out: a
        mismatch is StorageError naming the file and offset, never a corrupted entry returned.
        Buffered (not yet synced) entries come from memory.
        """
        self._check()
        if lo < self._base_index + 1:
            raise LogCompacted(f"index {lo} is compacted (first index {self._base_index + 1})")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"index {hi - 1} is beyond the last index {self.last_index()}")
        if lo >= hi:
            return []
        split = hi if self._pending_first is None else min(hi, self._pending_first)
        out = self._read_durable(lo, split, max_size_bytes) if lo < split else []
        if len(out) < split - lo or split >= hi:
            return out
        total_bytes = sum(len(e.data) + ENTRY_OVERHEAD_BYTES for e in out)
        first = self._pending_first
        assert first is not None
        for entry in self._pending[max(lo, first) - first:hi - first]:
            size_bytes = len(entry.data) + ENTRY_OVERHEAD_BYTES
            if out and total_bytes + size_bytes > max_size_bytes:
                break
            total_bytes += size_bytes
            out.append(entry)
        return out

    def _read_durable(self, lo: int, hi: int, max_size_bytes: int) -> list[Entry]:
        recent_start = self._recent_start
        if recent_start <= lo and hi <= recent_start + len(self._recent):
            return limit_entries_size(self._recent[lo - recent_start:hi - recent_start], max_size_bytes)
        locs = self._locs[lo - self._start:hi - self._start]
        total_bytes = 0
        count = 0
        for loc in locs:
            size_bytes = loc[4] + ENTRY_OVERHEAD_BYTES
            if count and total_bytes + size_bytes > max_size_bytes:
                break
            total_bytes += size_bytes
            count += 1
        out: list[Entry] = []
        n = 0
        while n < count:
            # One pread per run of entries in the same segment (frames are contiguous on disk).
            seq, begin = locs[n][2], locs[n][3]
            m = n
            while (m + 1 < count and locs[m + 1][2] == seq
                   and 0 <= locs[m + 1][3] - (locs[m][3] + locs[m][4]) <= _MAX_READ_GAP_SIZE):
                m += 1
            end = locs[m][3] + locs[m][4]
            try:
                buf = os.pread(self._fds[seq], end - begin, begin)
            except OSError as exc:
                raise self._fail(f"read of {self._path(seq)} failed: {exc}") from exc
            for k in range(n, m + 1):
                term, kind, _seq, offset, size, crc = locs[k]
                data = buf[offset - begin:offset - begin + size]
                if len(data) != size or zlib.crc32(data) != crc:
                    raise StorageError(f"{self._path(seq)}: entry {lo + k} at offset {offset} is "
                                       f"corrupt (checksum mismatch)")
                out.append(Entry(term=term, index=lo + k, kind=EntryKind(kind), data=data))
            n = m + 1
        return out

    # -- write side --------------------------------------------------------------------------

    def _fail(self, message: str) -> StorageError:
        self._failed = StorageError(f"{self._dir}: {message}; the log must be reopened")
        return self._failed

    def append(self, entries: Iterable[Entry]) -> None:
        """Buffer contiguous entries; an index <= the last one first discards that suffix.

        Not durable until `sync()`; a batch larger than MAX_FRAME_SIZE / MAX_FRAME_ENTRIES is
        written and synced in several frames (earlier durability is always allowed). Entries at
        or below the commit index that match the log (same term) are skipped. Raises
        LogUnavailable for a gap and LogCompacted for a compacted index (as MemoryStorage does),
        UsageError for an overwrite of a committed entry with a different term (a core bug that
        would break Raft's State Machine Safety), LimitExceeded (MAX_ENTRY_SIZE,
        MAX_LOG_ENTRIES).
        """
        self._check()
        commit = (self._pending_hard_state or self._hard_state).commit
        for entry in entries:
            index = entry.index
            size_bytes = len(entry.data)
            if size_bytes > MAX_ENTRY_SIZE:
                raise LimitExceeded("MAX_ENTRY_SIZE", size_bytes, MAX_ENTRY_SIZE)
            if index > self.last_index() + 1:
                raise LogUnavailable(f"append gap: index {index} after last {self.last_index()}")
            if index <= self._base_index:
                raise LogCompacted(f"append at {index} at or below the compaction point "
                                   f"{self._base_index}")
            if index <= commit:
                if self.term(index) == entry.term:
                    continue  # identical by Raft's log matching: nothing to rewrite
                raise UsageError(f"append at index {index} (term {entry.term}) would overwrite "
                                 f"a committed entry (term {self.term(index)}, commit {commit})")
            if index - self._base_index > MAX_LOG_ENTRIES:
                raise LimitExceeded("MAX_LOG_ENTRIES", index - self._base_index, MAX_LOG_ENTRIES)
            if self._pending_first is not None and index < self._pending_first + len(self._pending):
                if index <= self._pending_first:
                    self._pending_first = index
                    self._pending = []
                    self._pending_size_bytes = 0
                else:
                    cut = index - self._pending_first
                    self._pending_size_bytes -= sum(len(e.data) for e in self._pending[cut:])
                    del self._pending[cut:]
            frame_bytes = (self._pending_size_bytes + size_bytes
                           + (len(self._pending) + 1) * _ENTRY_ROW.size + FRAME_HEADER_SIZE)
            if self._pending and (frame_bytes > MAX_FRAME_SIZE
                                  or len(self._pending) >= MAX_FRAME_ENTRIES):
                self.sync()
            if self._pending_first is None:
                self._pending_first = index
            self._pending.append(entry)
            self._pending_size_bytes += size_bytes

    def set_hard_state(self, hard_state: HardState) -> None:
        """Buffer a new hard state, durable at the next sync; UsageError if the term goes back."""
        self._check()
        current = self._pending_hard_state or self._hard_state
        if hard_state.term < current.term:
            raise UsageError(f"hard state term going back: {current.term} -> {hard_state.term}")
        if hard_state != current:
            self._pending_hard_state = hard_state

    def has_pending(self) -> bool:
        """Whether a sync() would write anything."""
        return self._pending_first is not None or self._pending_hard_state is not None

    def sync(self) -> bool:
        """Make everything buffered durable: one frame, one write, one fdatasync.

        Returns False (and does no I/O) if nothing was buffered. Raises StorageError on I/O
        failure (sticky: reopen to recover).
        """
        self._check()
        if not self.has_pending():
            return False
        first = self._pending_first
        if first is None:
            first = self.durable_last_index() + 1
        self._write_frame(first, self._pending, self._pending_hard_state or self._hard_state,
                          self._base_index, self._base_term)
        self._pending_first = None
        self._pending = []
        self._pending_size_bytes = 0
        self._pending_hard_state = None
        return True

    def compact(self, index: int, term: int) -> None:
        """Drop entries <= index (term = term(index)), durably; then delete covered segments.

        A no-op at or below the current compaction point. Anything buffered is synced with it.
        """
        self._check()
        if index <= self._base_index:
            return
        first = self._pending_first
        if first is None:
            first = self.durable_last_index() + 1
        self._write_frame(first, self._pending, self._pending_hard_state or self._hard_state,
                          index, term)
        self._pending_first = None
        self._pending = []
        self._pending_size_bytes = 0
        self._pending_hard_state = None
        self._delete_covered_segments()

    def reset(self, index: int, term: int) -> None:
        """Empty the log, positioned after (index, term) (a snapshot was installed); durable.

        Buffered entries are discarded; a buffered hard state is kept and written with it.
        """
        self._check()
        if index < self._base_index:
            raise UsageError(f"reset to {index} below the compaction point {self._base_index}")
        self._pending_first = None
        self._pending = []
        self._pending_size_bytes = 0
        self._write_frame(index + 1, [], self._pending_hard_state or self._hard_state, index, term)
        self._pending_hard_state = None
        self._delete_covered_segments()

    def _write_frame(self, first: int, entries: list[Entry], hard_state: HardState,
                     base_index: int, base_term: int) -> None:
        rows = []
        datas = []
        crcs = []
        crc32 = zlib.crc32
        pack = _ENTRY_ROW.pack
        for entry in entries:
            data = entry.data
            crc = crc32(data)
            rows.append(pack(entry.term, entry.kind, len(data), crc))
            datas.append(data)
            crcs.append(crc)
        table = b"".join(rows)
        body_size = len(table) + sum(map(len, datas))
        prefix = _FRAME_PREFIX.pack(FRAME_MAGIC, body_size, len(entries), first, hard_state.term,
                                    hard_state.vote, hard_state.commit, base_index, base_term)
        frame = b"".join([prefix, _CRC.pack(crc32(table, crc32(prefix))), table, *datas])
        try:
            seq = self._segment_for(len(frame))
            offset = self._active_size_bytes
            fd = self._fds[seq]
            _write_all(fd, frame, offset)
            _datasync(fd)
        except OSError as exc:
            raise self._fail(f"write of a {len(frame)}-byte frame failed: {exc}") from exc
        self.sync_count += 1
        self._active_size_bytes = offset + len(frame)
        # The frame is durable: fold it into the index exactly as recovery would replay it.
        if first > self.durable_last_index() + 1 or first < self._start:
            self._live.clear()
            self._locs = []
            self._start = first
        else:
            for loc in self._locs[first - self._start:]:
                self._live[loc[2]] -= 1
            del self._locs[first - self._start:]
        data_offset = offset + FRAME_HEADER_SIZE + len(table)
        locs = self._locs
        for entry, data, crc in zip(entries, datas, crcs):
            locs.append((entry.term, int(entry.kind), seq, data_offset, len(data), crc))
            data_offset += len(data)
        self._live[seq] += len(entries)
        self._hard_state = hard_state
        if base_index > self._base_index:
            self._base_index, self._base_term = base_index, base_term
            last = self.durable_last_index()
            if last <= base_index:
                for loc in self._locs:
                    self._live[loc[2]] -= 1
                self._locs = []
                self._start = base_index + 1
            elif self._start <= base_index:
                self._drop_prefix(base_index + 1 - self._start)
        elif base_index == self._base_index:
            self._base_term = base_term
        self._remember_recent(first, entries)

    def _drop_prefix(self, count: int) -> None:
        for loc in self._locs[:count]:
            self._live[loc[2]] -= 1
        del self._locs[:count]
        self._start += count

    def _remember_recent(self, first: int, entries: list[Entry]) -> None:
        """Keep the synced frame's entries (from index `first`) as the in-memory tail, which
        must stay exactly the durable log's suffix: cut where the frame overwrote, restart on
        a gap, then drop the oldest beyond MAX_RECENT_ENTRIES_SIZE and below the log start."""
        recent = self._recent
        end = self._recent_start + len(recent)
        if not recent or first < self._recent_start or first > end:
            recent.clear()
            self._recent_start = first
            self._recent_size_bytes = 0
        elif first < end:
            cut = first - self._recent_start
            self._recent_size_bytes -= sum(len(e.data) for e in recent[cut:])
            del recent[cut:]
        recent.extend(entries)
        self._recent_size_bytes += sum(len(e.data) for e in entries)
        self._trim_recent()

    def _trim_recent(self) -> None:
        recent = self._recent
        drop = max(0, self._start - self._recent_start)  # compacted away, or never durable here
        size_bytes = self._recent_size_bytes
        for entry in recent[:drop]:
            size_bytes -= len(entry.data)
        # Trim in chunks (a quarter of the budget) so the list is not shifted on every sync.
        if size_bytes > MAX_RECENT_ENTRIES_SIZE:
            while drop < len(recent) and size_bytes > MAX_RECENT_ENTRIES_SIZE * 3 // 4:
                size_bytes -= len(recent[drop].data)
                drop += 1
        if drop:
            del recent[:drop]
            self._recent_start += drop
            self._recent_size_bytes = size_bytes

    def _segment_for(self, frame_size_bytes: int) -> int:
        """The seq of the segment the next frame goes to, rotating to a new one when full."""
        if self._active_seq is not None:
            has_frames = self._active_size_bytes > SEGMENT_HEADER_SIZE
            if not has_frames or self._active_size_bytes + frame_size_bytes <= MAX_SEGMENT_SIZE:
                return self._active_seq
        if len(self._fds) >= MAX_SEGMENTS:
            raise LimitExceeded("MAX_SEGMENTS", len(self._fds) + 1, MAX_SEGMENTS)
        seq = 1 if self._active_seq is None else self._active_seq + 1
        path = self._path(seq)
        header = _SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, seq, 0)
        header = header[:-4] + _CRC.pack(zlib.crc32(header[:-4]))
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, header, 0)
            os.fsync(fd)
            os.rename(tmp, path)
            fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            raise
        self._fds[seq] = fd
        self._active_seq = seq
        self._active_size_bytes = len(header)
        return seq

    def _delete_covered_segments(self) -> None:
        """Delete the oldest segments that hold no live entry (never the active one)."""
        deleted = False
        for seq in sorted(self._fds):
            if seq == self._active_seq or self._live[seq] > 0:
                break
            os.close(self._fds.pop(seq))
            del self._live[seq]
            try:
                os.unlink(self._path(seq))
            except OSError as exc:
                raise self._fail(f"delete of {self._path(seq)} failed: {exc}") from exc
            self.deleted_segment_count += 1
            deleted = True
        if deleted:
            fsync_dir(self._dir)

    def segment_count(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        """Close the files. Anything not synced is dropped (as a crash would)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._failed = StorageError(f"{self._dir}: log is closed")


__all__ = [
    "MAX_SEGMENT_SIZE",
    "MAX_FRAME_SIZE",
    "MAX_FRAME_ENTRIES",
    "MAX_ENTRY_SIZE",
    "MAX_LOG_ENTRIES",
    "MAX_SEGMENTS",
    "FRAME_HEADER_SIZE",
    "SEGMENT_HEADER_SIZE",
    "SegmentLog",
    "fsync_dir",
]
