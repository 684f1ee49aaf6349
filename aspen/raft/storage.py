"""Durable Raft storage: the `RaftStorage` protocol over a segment log and snapshot files.

Rules:

- Implements `aspen.raft.types.RaftStorage` exactly; the worker calls the write side in the
  protocol's order per Ready: `apply_snapshot` -> `append` -> `set_hard_state` -> `sync` (only
  then send messages) -> apply committed entries -> `create_snapshot` -> `compact`.
- Nothing is acknowledged before it is on disk: `append`/`set_hard_state` buffer, `sync()` writes
  them as one checksummed frame with one fdatasync (group commit; `sync_count` counts syncs).
  `apply_snapshot`, `create_snapshot` and `compact` are durable when they return.
- Reads (`first_index`, `last_index`, `term`, `entries`, `initial_state`) show the current state,
  appended-but-unsynced entries included, exactly like `MemoryStorage` (so the core behaves the
  same on both); under the worker's order (sync before advance) that is also the durable state.
  Errors also match MemoryStorage: LogUnavailable / LogCompacted for out-of-range appends,
  compactions and snapshots.
- Snapshots are written atomically (temp file, fsync, rename, fsync of the directory) with a
  blake3 digest over meta and data and a crc32 over the header; the latest one failing its
  checks is a loud StorageError at open, never a silent fallback.

On-disk layout under the directory the worker passes (by convention `<data_dir>/raft`):

    log/seg-<seq:016x>.log                   the log, hard state and compaction point
                                             (format in aspen/raft/segment_log.py)
    snap/snap-<index:020d>-<term:020d>.snap  snapshots, newest last; MAX_KEPT_SNAPSHOTS kept
      header (60 B): magic "ASNP", version u16, reserved u16, meta_size u32, data_size u64,
                     blake3(meta || data) 32 B, crc32 of the header before it u32
      meta: msgpack SnapshotMeta (index, term, membership); then data (the state machine's image)

A fresh directory gets a bootstrap snapshot (index 0, term 0, the membership given to the
constructor, empty data), so `initial_state()` always has a membership to report.

Recovery (the constructor): replay the log (torn tail truncated, middle corruption raises),
load the newest snapshot, then reconcile: if the snapshot is newer than the compaction point and
the log does not hold the snapshot's (index, term), the crash came between writing an installed
snapshot and resetting the log, so the log is reset now (etcd raft's rule for a snapshot that
disagrees with the log). A log compacted past the newest snapshot is a StorageError.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterable

import blake3
import msgspec

from aspen.errors import LimitExceeded, StorageError, UsageError
from aspen.raft.segment_log import SegmentLog, fsync_dir
from aspen.raft.types import Entry, HardState, LogUnavailable, Membership, Snapshot, SnapshotMeta
from aspen.units import GiB, MiB

# Snapshots kept on disk: the newest is the one used; one older copy is kept for an operator's
# manual recovery should the newest ever be damaged (it is never used automatically).
MAX_KEPT_SNAPSHOTS = 2
# Largest snapshot image: above the KV state machine's own bound (MAX_KV_SNAPSHOT_SIZE, about
# 2.2 GiB for etcd's 2 GiB quota) with room for another state machine's overhead. guess: revisit.
MAX_SNAPSHOT_SIZE = 4 * GiB
# A snapshot up to this size stays in memory after it is written or read, so a leader sending
# it in 10 MiB chunks does not re-read and re-hash it per chunk; bigger ones are re-read.
# guess: revisit (the KV image of 100,000 small pairs is ~10 MiB).
MAX_CACHED_SNAPSHOT_SIZE = 64 * MiB
# SnapshotMeta holds at most MAX_MEMBERS (100) members with MAX_ADDR_SIZE (4 KiB) addresses.
MAX_SNAPSHOT_META_SIZE = 1024 * 1024

SNAPSHOT_MAGIC = b"ASNP"
SNAPSHOT_VERSION = 1
_SNAPSHOT_PREFIX = struct.Struct(">4sHHIQ32s")
_CRC = struct.Struct(">I")
SNAPSHOT_HEADER_SIZE = _SNAPSHOT_PREFIX.size + _CRC.size
_SNAPSHOT_NAME = re.compile(r"^snap-(\d{20})-(\d{20})\.snap$")

_META_ENCODER = msgspec.msgpack.Encoder()
_META_DECODER: msgspec.msgpack.Decoder[SnapshotMeta] = msgspec.msgpack.Decoder(SnapshotMeta)


def _snapshot_name(index: int, term: int) -> str:
    return f"snap-{index:020d}-{term:020d}.snap"


def write_snapshot_file(path: str, snapshot: Snapshot) -> None:
    """Write `snapshot` to `path` atomically and durably (temp, fsync, rename, fsync dir)."""
    if len(snapshot.data) > MAX_SNAPSHOT_SIZE:
        raise LimitExceeded("MAX_SNAPSHOT_SIZE", len(snapshot.data), MAX_SNAPSHOT_SIZE)
    meta = _META_ENCODER.encode(snapshot.meta)
    if len(meta) > MAX_SNAPSHOT_META_SIZE:
        raise LimitExceeded("MAX_SNAPSHOT_META_SIZE", len(meta), MAX_SNAPSHOT_META_SIZE)
    digest = blake3.blake3(meta)
    digest.update(snapshot.data)
    prefix = _SNAPSHOT_PREFIX.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, 0, len(meta),
                                   len(snapshot.data), digest.digest())
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in (prefix, _CRC.pack(zlib.crc32(prefix)), meta, snapshot.data):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(os.path.dirname(path))


def read_snapshot_file(path: str, *, with_data: bool = True) -> Snapshot:
    """Read and verify a snapshot file; StorageError naming the file if anything is off.

    With `with_data=False` only the header and meta are read and checked (the digest needs the
    data, so it is verified whenever the data is read).
    """
    try:
        with open(path, "rb") as fh:
            header = fh.read(SNAPSHOT_HEADER_SIZE)
            if len(header) != SNAPSHOT_HEADER_SIZE:
                raise StorageError(f"{path}: short snapshot header ({len(header)} bytes)")
            (magic, version, _reserved, meta_size, data_size,
             digest) = _SNAPSHOT_PREFIX.unpack_from(header)
            (crc,) = _CRC.unpack_from(header, _SNAPSHOT_PREFIX.size)
            if magic != SNAPSHOT_MAGIC or version != SNAPSHOT_VERSION or \
                    zlib.crc32(header[:_SNAPSHOT_PREFIX.size]) != crc:
                raise StorageError(f"{path}: bad snapshot header at offset 0")
            if meta_size > MAX_SNAPSHOT_META_SIZE or data_size > MAX_SNAPSHOT_SIZE:
                raise StorageError(f"{path}: implausible snapshot sizes (meta {meta_size}, "
                                   f"data {data_size} bytes)")
            file_size_bytes = os.fstat(fh.fileno()).st_size
            if file_size_bytes != SNAPSHOT_HEADER_SIZE + meta_size + data_size:
                raise StorageError(f"{path}: snapshot is {file_size_bytes} bytes, header says "
                                   f"{SNAPSHOT_HEADER_SIZE + meta_size + data_size}")
            meta_bytes = fh.read(meta_size)
            data = fh.read(data_size) if with_data else b""
    except OSError as exc:
        raise StorageError(f"{path}: cannot read snapshot: {exc}") from exc
    if with_data:
        check = blake3.blake3(meta_bytes)
        check.update(data)
        if check.digest() != digest:
            raise StorageError(f"{path}: snapshot checksum mismatch")
    try:
        meta = _META_DECODER.decode(meta_bytes)
    except msgspec.DecodeError as exc:
        raise StorageError(f"{path}: bad snapshot meta: {exc}") from exc
    return Snapshot(meta=meta, data=data)


class DurableStorage:
    """`RaftStorage` on local disk (see the module doc for the layout and the call order).

    `directory` is created if needed. `bootstrap` is the membership a fresh store reports from
    `initial_state()` (ignored when the directory already holds a store). Raises StorageError if
    the store is damaged in a way that could lose acknowledged data.
    """

    def __init__(self, directory: str, *, bootstrap: Membership = Membership()) -> None:
        self._dir = directory
        self._snap_dir = os.path.join(directory, "snap")
        log_dir = os.path.join(directory, "log")
        is_fresh = not os.path.isdir(log_dir) or not any(
            name.endswith(".log") for name in os.listdir(log_dir))
        os.makedirs(self._snap_dir, exist_ok=True)
        self._snapshot_cache: Snapshot | None = None
        self._log = SegmentLog(log_dir)
        try:
            self._open_snapshots(bootstrap, is_fresh=is_fresh)
            if is_fresh:  # make the new directories themselves durable
                fsync_dir(directory)
                fsync_dir(os.path.dirname(os.path.abspath(directory)))
        except BaseException:
            self._log.close()
            raise

    def _snapshot_files(self) -> list[tuple[int, int, str]]:
        found = []
        for name in os.listdir(self._snap_dir):
            match = _SNAPSHOT_NAME.match(name)
            if match:
                found.append((int(match.group(1)), int(match.group(2)), name))
            elif name.endswith(".tmp"):  # a snapshot write that crashed before its rename
                os.unlink(os.path.join(self._snap_dir, name))
        found.sort()
        return found

    def _open_snapshots(self, bootstrap: Membership, *, is_fresh: bool) -> None:
        files = self._snapshot_files()
        if not files:
            if not is_fresh:
                raise StorageError(f"{self._snap_dir}: no snapshot but the log exists")
            self._save_snapshot(Snapshot(meta=SnapshotMeta(index=0, term=0, membership=bootstrap)))
            files = self._snapshot_files()
        index, term, name = files[-1]
        self._snapshot_path = os.path.join(self._snap_dir, name)
        # Verify the whole newest snapshot once at open: it is what recovery depends on.
        meta = read_snapshot_file(self._snapshot_path).meta
        if (meta.index, meta.term) != (index, term):
            raise StorageError(f"{self._snapshot_path}: meta says ({meta.index}, {meta.term})")
        self._snapshot_meta = meta
        log = self._log
        if meta.index < log.base_index:
            raise StorageError(f"{self._dir}: log compacted to {log.base_index} but the newest "
                               f"snapshot is at {meta.index}")
        if meta.index > log.base_index:
            holds_it = meta.index <= log.last_index() and log.term(meta.index) == meta.term
            if not holds_it:
                log.reset(meta.index, meta.term)

    def _save_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        path = os.path.join(self._snap_dir, _snapshot_name(meta.index, meta.term))
        write_snapshot_file(path, snapshot)
        self._snapshot_path = path
        self._snapshot_meta = meta
        self._snapshot_cache = snapshot if len(snapshot.data) <= MAX_CACHED_SNAPSHOT_SIZE else None
        files = self._snapshot_files()
        for _index, _term, name in files[:-MAX_KEPT_SNAPSHOTS]:
            os.unlink(os.path.join(self._snap_dir, name))
        if len(files) > MAX_KEPT_SNAPSHOTS:
            fsync_dir(self._snap_dir)

    # -- read side (core) --------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, Membership]:
        """The durable hard state and the membership of the newest snapshot."""
        return self._log.hard_state, self._snapshot_meta.membership

    def first_index(self) -> int:
        return self._log.first_index()

    def last_index(self) -> int:
        return self._log.last_index()

    def term(self, index: int) -> int:
        return self._log.term(index)

    def entries(self, lo: int, hi: int, max_size_bytes: int) -> list[Entry]:
        return self._log.entries(lo, hi, max_size_bytes)

    def snapshot(self) -> Snapshot:
        """The newest snapshot. Up to MAX_CACHED_SNAPSHOT_SIZE it is kept in memory once written
        or read; a bigger one is read from disk and verified (blake3) on every call."""
        if self._snapshot_cache is not None:
            return self._snapshot_cache
        snapshot = read_snapshot_file(self._snapshot_path)
        if len(snapshot.data) <= MAX_CACHED_SNAPSHOT_SIZE:
            self._snapshot_cache = snapshot
        return snapshot

    def snapshot_meta(self) -> SnapshotMeta:
        """The newest snapshot's meta, without reading its data."""
        return self._snapshot_meta

    # -- write side (worker) -----------------------------------------------------------------

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install a snapshot received from the leader; durable when it returns.

        Order (crash-safe): the snapshot file first, then a log reset frame; recovery finishes a
        reset a crash interrupted. Raises UsageError if it is older than the newest snapshot.
        """
        meta = snapshot.meta
        if meta.index < self._snapshot_meta.index:
            raise UsageError(f"apply_snapshot at {meta.index} is older than the snapshot at "
                             f"{self._snapshot_meta.index}")
        self._save_snapshot(snapshot)
        hard_state = self._log.hard_state
        if hard_state.commit < meta.index:  # a snapshot holds committed entries only
            self._log.set_hard_state(HardState(term=hard_state.term, vote=hard_state.vote,
                                               commit=meta.index))
        self._log.reset(meta.index, meta.term)

    def append(self, entries: Iterable[Entry]) -> None:
        """Buffer entries (see SegmentLog.append); durable after `sync()`."""
        self._log.append(entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        """Buffer the hard state; durable after `sync()` (same frame as the entries)."""
        self._log.set_hard_state(hard_state)

    def sync(self) -> None:
        """Make appended entries and the hard state durable: one write + one fdatasync."""
        self._log.sync()

    def create_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot the worker built at `snapshot.meta.index`; durable when it returns.

        A snapshot not newer than the newest one is ignored (as MemoryStorage does). Raises
        LogUnavailable past the last index, LogCompacted below the compaction point, UsageError
        if the log holds a different term at that index.
        """
        meta = snapshot.meta
        if meta.index <= self._snapshot_meta.index:
            return
        term = self._log.term(meta.index)
        if term != meta.term:
            raise UsageError(f"create_snapshot at {meta.index}: term {meta.term} but the log "
                             f"has {term}")
        self._save_snapshot(snapshot)

    def compact(self, index: int) -> None:
        """Drop entries <= index (<= the newest snapshot's index), durably; delete old segments.

        Raises LogUnavailable past the newest snapshot (as MemoryStorage does).
        """
        if index > self._snapshot_meta.index:
            raise LogUnavailable(f"compact to {index} past the newest snapshot at "
                             f"{self._snapshot_meta.index}")
        if index <= self._log.base_index:
            return
        self._log.compact(index, self._log.term(index))

    # -- introspection -----------------------------------------------------------------------

    @property
    def sync_count(self) -> int:
        """fdatasyncs of log frames so far (group commit: one per batch)."""
        return self._log.sync_count

    @property
    def truncated_tail_bytes(self) -> int:
        """Bytes of torn tail dropped by recovery at open."""
        return self._log.truncated_tail_bytes

    def durable_last_index(self) -> int:
        """The last entry a crash now would leave (last_index() includes unsynced appends)."""
        return self._log.durable_last_index()

    def durable_hard_state(self) -> HardState:
        """The hard state a crash now would leave."""
        return self._log.durable_hard_state

    def segment_count(self) -> int:
        return self._log.segment_count()

    def close(self) -> None:
        """Close the files; anything appended but not synced is dropped (as in a crash)."""
        self._log.close()


__all__ = [
    "MAX_KEPT_SNAPSHOTS",
    "MAX_SNAPSHOT_SIZE",
    "MAX_SNAPSHOT_META_SIZE",
    "MAX_CACHED_SNAPSHOT_SIZE",
    "DurableStorage",
    "write_snapshot_file",
    "read_snapshot_file",
]
