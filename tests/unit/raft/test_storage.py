"""Durable storage: group commit, overwrite, torn tails at every byte, corruption, snapshots.

Crash simulation: a "crash" is `close()` without `sync()` (unsynced data is dropped, as the page
cache would be on power loss) plus surgery on the files: truncation at every byte offset of the
last frame, a flipped byte at every offset, zero-filled tails. The claim under test: reopening
never loses a synced entry and never returns a corrupted one; damage to synced data that is not
a torn tail is a StorageError naming the file and offset.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from aspen.errors import StorageError, UsageError
from aspen.raft import segment_log
from aspen.raft.segment_log import FRAME_HEADER_SIZE, SEGMENT_HEADER_SIZE
from aspen.raft.storage import MAX_KEPT_SNAPSHOTS, DurableStorage, write_snapshot_file
from aspen.raft.types import Entry, EntryKind, HardState, LogCompacted, LogUnavailable, Membership, Snapshot, SnapshotMeta

ALL_BYTES = 1 << 40
ONE = Membership(voters=frozenset({1}), addrs={1: "addr-1"})


def payload(index: int, term: int) -> bytes:
    return f"entry {index} of term {term} ".encode() * (1 + index % 3)


def entries(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=payload(i, term)) for i in range(lo, hi + 1)]


def check_log(store: DurableStorage, expected: dict[int, Entry]) -> None:
    """The durable log is exactly `expected` from first_index on (no more, no less, intact)."""
    first, last = store.first_index(), store.last_index()
    got = store.entries(first, last + 1, ALL_BYTES) if last >= first else []
    assert [(e.index, e.term, e.kind, e.data) for e in got] == \
        [(e.index, e.term, e.kind, e.data) for i, e in sorted(expected.items()) if i >= first]
    assert last == max(expected, default=first - 1)


@pytest.fixture
def store_dir(tmp_path: os.PathLike[str]) -> Iterator[str]:
    path = os.path.join(str(tmp_path), "raft")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def segments(path: str) -> list[str]:
    log_dir = os.path.join(path, "log")
    return [os.path.join(log_dir, n) for n in sorted(os.listdir(log_dir)) if n.endswith(".log")]


def test_fresh_store_reports_bootstrap_membership(store_dir: str) -> None:
    store = DurableStorage(store_dir, bootstrap=ONE)
    assert store.initial_state() == (HardState(), ONE)
    assert (store.first_index(), store.last_index(), store.term(0)) == (1, 0, 0)
    assert store.snapshot() == Snapshot(meta=SnapshotMeta(index=0, term=0, membership=ONE))
    store.close()
    store = DurableStorage(store_dir, bootstrap=Membership())  # ignored: the store exists
    assert store.initial_state()[1] == ONE
    store.close()


def test_group_commit_is_one_sync_per_batch_and_survives_reopen(store_dir: str) -> None:
    store = DurableStorage(store_dir)
    for lo in range(1, 1001, 100):
        store.append(entries(lo, lo + 99))
    store.set_hard_state(HardState(term=1, vote=1, commit=900))
    assert store.last_index() == 1000  # reads see what was written, like MemoryStorage
    assert store.entries(999, 1001, ALL_BYTES) == entries(999, 1000)
    assert store.durable_last_index() == 0 and store.durable_hard_state() == HardState()
    assert store.sync_count == 0
    store.sync()
    assert store.sync_count == 1 and store.last_index() == 1000
    store.sync()  # nothing buffered: no I/O
    assert store.sync_count == 1
    store.close()
    store = DurableStorage(store_dir)
    check_log(store, {e.index: e for e in entries(1, 1000)})
    assert store.initial_state()[0] == HardState(term=1, vote=1, commit=900)
    assert store.entries(10, 20, 1) == entries(10, 10)  # at least one entry, then the byte budget
    store.close()


def test_unsynced_appends_are_lost_by_a_crash(store_dir: str) -> None:
    store = DurableStorage(store_dir)
    store.append(entries(1, 5))
    store.sync()
    store.append(entries(6, 9))
    store.set_hard_state(HardState(term=2, vote=3))
    assert store.last_index() == 9 and store.initial_state()[0] == HardState(term=2, vote=3)
    store.close()  # crash before sync
    store = DurableStorage(store_dir)
    check_log(store, {e.index: e for e in entries(1, 5)})
    assert store.initial_state()[0] == HardState()
    store.close()


def test_conflicting_suffix_is_overwritten_durably(store_dir: str) -> None:
    store = DurableStorage(store_dir)
    store.append(entries(1, 10, term=1))
    store.set_hard_state(HardState(term=1, commit=4))
    store.sync()
    store.append(entries(6, 8, term=2))  # Raft §5.3: delete the conflict and all that follows
    store.sync()
    expected = {e.index: e for e in entries(1, 5, 1) + entries(6, 8, 2)}
    check_log(store, expected)
    # Overwrites inside one unsynced batch, including below its start.
    store.append(entries(9, 12, term=3))
    store.append(entries(11, 11, term=4))
    store.append(entries(7, 7, term=5))
    store.sync()
    expected = {e.index: e for e in entries(1, 5, 1) + entries(6, 6, 2) + entries(7, 7, 5)}
    check_log(store, expected)
    store.close()
    store = DurableStorage(store_dir)
    check_log(store, expected)
    with pytest.raises(UsageError, match="committed"):
        store.append(entries(3, 3, term=9))  # commit is 4: committed entries never change
    store.append(entries(2, 8, term=1)[:3] + [Entry(term=5, index=5, data=b"x")])  # 2..4 identical
    with pytest.raises(LogUnavailable, match="gap"):
        store.append(entries(20, 21, term=5))
    store.close()


def test_term_and_entries_bounds(store_dir: str) -> None:
    store = DurableStorage(store_dir)
    store.append(entries(1, 10))
    store.sync()
    with pytest.raises(LogUnavailable):
        store.term(11)
    with pytest.raises(LogUnavailable):
        store.entries(5, 12, ALL_BYTES)
    store.create_snapshot(Snapshot(meta=SnapshotMeta(index=6, term=1), data=b"image"))
    store.compact(4)
    with pytest.raises(LogCompacted):
        store.term(3)
    with pytest.raises(LogCompacted):
        store.entries(4, 6, ALL_BYTES)
    assert store.term(4) == 1 and store.first_index() == 5
    with pytest.raises(LogUnavailable):
        store.compact(7)  # past the newest snapshot
    store.close()


def build_frames(path: str, frame_count: int) -> tuple[dict[int, Entry], list[int]]:
    """A store whose only segment holds `frame_count` synced frames; returns entries and the
    file offset where each frame starts."""
    store = DurableStorage(path)
    expected: dict[int, Entry] = {}
    starts = []
    index = 1
    for n in range(frame_count):
        starts.append(os.path.getsize(segments(path)[0]) if segments(path) else SEGMENT_HEADER_SIZE)
        batch = entries(index, index + 2, term=1 + n // 2)
        store.append(batch)
        store.set_hard_state(HardState(term=1 + n // 2, vote=1, commit=index))
        store.sync()
        expected.update((e.index, e) for e in batch)
        index += 3
    store.close()
    return expected, starts


def test_torn_tail_at_every_byte_offset_of_the_last_frame(store_dir: str, tmp_path: os.PathLike[str]) -> None:
    expected, starts = build_frames(store_dir, 4)
    seg = segments(store_dir)[0]
    pristine = Path(seg).read_bytes()
    last_start = starts[-1]
    acked_before = {i: e for i, e in expected.items() if i <= 9}
    for cut in range(last_start, len(pristine) + 1):
        with open(seg, "wb") as fh:
            fh.write(pristine[:cut])
        store = DurableStorage(store_dir)
        check_log(store, expected if cut == len(pristine) else acked_before)
        assert store.initial_state()[0].commit == (10 if cut == len(pristine) else 7)
        # The store keeps working after the truncation: the tail is appendable again.
        store.append(entries(store.last_index() + 1, store.last_index() + 1, term=9))
        store.sync()
        store.close()
    # Torn pages may read back as zeros: a zero-filled tail after the last good frame.
    with open(seg, "wb") as fh:
        fh.write(pristine + bytes(4096))
    store = DurableStorage(store_dir)
    check_log(store, expected)
    assert store.truncated_tail_bytes == 4096
    store.close()


def test_flipped_byte_anywhere_in_the_last_frame_drops_only_that_frame(store_dir: str) -> None:
    expected, starts = build_frames(store_dir, 3)
    seg = segments(store_dir)[0]
    pristine = Path(seg).read_bytes()
    acked_before = {i: e for i, e in expected.items() if i <= 6}
    for offset in range(starts[-1], len(pristine)):
        damaged = bytearray(pristine)
        damaged[offset] ^= 0x40
        with open(seg, "wb") as fh:
            fh.write(damaged)
        store = DurableStorage(store_dir)
        check_log(store, acked_before)  # never a corrupted entry, never an older frame lost
        store.close()


def test_corruption_in_the_middle_is_a_loud_error(store_dir: str) -> None:
    expected, starts = build_frames(store_dir, 5)
    seg = segments(store_dir)[0]
    pristine = Path(seg).read_bytes()
    rng = random.Random(5)
    offsets = [starts[1], starts[1] + FRAME_HEADER_SIZE - 1, starts[2] - 1] + \
        [rng.randrange(SEGMENT_HEADER_SIZE, starts[-1]) for _ in range(30)]
    for offset in offsets:
        damaged = bytearray(pristine)
        damaged[offset] ^= 0x01
        with open(seg, "wb") as fh:
            fh.write(damaged)
        with pytest.raises(StorageError, match=r"seg-0000000000000001\.log.*offset \d+") as info:
            DurableStorage(store_dir)
        assert "valid frame follows" in str(info.value)
    with open(seg, "wb") as fh:  # the segment header itself
        fh.write(b"X" + pristine[1:])
    with pytest.raises(StorageError, match="bad segment header"):
        DurableStorage(store_dir)


def test_corruption_in_a_sealed_segment_is_a_loud_error(store_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_log, "MAX_SEGMENT_SIZE", 1024)
    store = DurableStorage(store_dir)
    for lo in range(1, 200, 10):
        store.append(entries(lo, lo + 9))
        store.sync()
    store.close()
    segs = segments(store_dir)
    assert len(segs) > 3
    data = bytearray(Path(segs[1]).read_bytes())
    data[-1] ^= 0xFF  # the very end of a sealed segment: a torn tail is impossible there
    Path(segs[1]).write_bytes(data)
    with pytest.raises(StorageError, match="sealed segment"):
        DurableStorage(store_dir)


def test_corruption_after_open_is_caught_on_read(store_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_log, "MAX_RECENT_ENTRIES_SIZE", 0)  # every read goes to disk
    store = DurableStorage(store_dir)
    store.append(entries(1, 50))
    store.sync()
    seg = segments(store_dir)[0]
    data = bytearray(Path(seg).read_bytes())
    data[-5] ^= 0x10  # inside entry 50's data
    with open(seg, "r+b") as fh:
        fh.write(data)
    assert store.entries(1, 50, ALL_BYTES) == entries(1, 49)
    with pytest.raises(StorageError, match=r"entry 50 at offset \d+ is corrupt"):
        store.entries(45, 51, ALL_BYTES)
    store.close()


def test_recent_entries_come_from_memory_and_older_ones_from_disk(store_dir: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_log, "MAX_RECENT_ENTRIES_SIZE", 4000)
    store = DurableStorage(store_dir)
    store.append(entries(1, 50))
    store.sync()
    seg = segments(store_dir)[0]
    data = bytearray(Path(seg).read_bytes())
    data[-5] ^= 0x10  # inside entry 50's data, after it was synced
    with open(seg, "r+b") as fh:
        fh.write(data)
    assert store.entries(45, 51, ALL_BYTES) == entries(45, 50)  # the copy kept in memory
    for lo in range(51, 400, 50):  # later batches push entry 50 out of the in-memory tail
        store.append(entries(lo, lo + 49))
        store.sync()
    assert store.entries(400, 401, ALL_BYTES) == entries(400, 400)
    with pytest.raises(StorageError, match=r"entry 50 at offset \d+ is corrupt"):
        store.entries(45, 51, ALL_BYTES)
    store.close()


def test_snapshot_compaction_deletes_covered_segments(store_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_log, "MAX_SEGMENT_SIZE", 2048)
    store = DurableStorage(store_dir)
    for lo in range(1, 501, 20):
        store.append(entries(lo, lo + 19))
        store.set_hard_state(HardState(term=1, vote=1, commit=lo + 19))
        store.sync()
    before = store.segment_count()
    assert before > 10
    for n, index in enumerate([100, 250, 400]):
        store.create_snapshot(Snapshot(meta=SnapshotMeta(index=index, term=1, membership=ONE),
                                       data=f"image@{index}".encode()))
        store.compact(index - 50)
    assert store.segment_count() < before // 2
    assert len(os.listdir(os.path.join(store_dir, "snap"))) == MAX_KEPT_SNAPSHOTS
    store.close()
    store = DurableStorage(store_dir)
    assert store.first_index() == 351 and store.term(350) == 1
    check_log(store, {e.index: e for e in entries(351, 500)})
    assert store.snapshot().data == b"image@400"
    assert store.initial_state() == (HardState(term=1, vote=1, commit=500), ONE)
    store.close()


def test_apply_snapshot_resets_the_log_and_survives_a_crash_between_steps(store_dir: str) -> None:
    store = DurableStorage(store_dir)
    store.append(entries(1, 10))
    store.sync()
    store.apply_snapshot(Snapshot(meta=SnapshotMeta(index=50, term=4, membership=ONE), data=b"s50"))
    assert (store.first_index(), store.last_index(), store.term(50)) == (51, 50, 4)
    store.append(entries(51, 55, term=4))
    store.sync()
    store.close()
    store = DurableStorage(store_dir)
    assert store.first_index() == 51
    check_log(store, {e.index: e for e in entries(51, 55, 4)})
    store.close()
    # A crash after the installed snapshot file was written but before the log reset: recovery
    # sees a snapshot the log does not hold and finishes the reset.
    snap = Snapshot(meta=SnapshotMeta(index=80, term=6, membership=ONE), data=b"s80")
    write_snapshot_file(os.path.join(store_dir, "snap",
                                     f"snap-{80:020d}-{6:020d}.snap"), snap)
    store = DurableStorage(store_dir)
    assert (store.first_index(), store.last_index(), store.term(80)) == (81, 80, 6)
    assert store.snapshot() == snap
    store.close()


def test_corrupt_newest_snapshot_is_a_loud_error(store_dir: str) -> None:
    store = DurableStorage(store_dir)
    store.append(entries(1, 10))
    store.sync()
    store.create_snapshot(Snapshot(meta=SnapshotMeta(index=8, term=1), data=b"x" * 1000))
    store.compact(8)
    store.close()
    path = os.path.join(store_dir, "snap", f"snap-{8:020d}-{1:020d}.snap")
    data = bytearray(Path(path).read_bytes())
    data[-10] ^= 1
    Path(path).write_bytes(data)
    with pytest.raises(StorageError, match="snapshot checksum mismatch"):
        DurableStorage(store_dir)
    Path(path).write_bytes(data[:-1])
    with pytest.raises(StorageError, match="header says"):
        DurableStorage(store_dir)
    os.unlink(path)  # the log was compacted past what the remaining snapshot covers
    with pytest.raises(StorageError, match="compacted to 8"):
        DurableStorage(store_dir)


def test_large_batches_split_into_several_synced_frames(store_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_log, "MAX_FRAME_ENTRIES", 100)
    store = DurableStorage(store_dir)
    store.append(entries(1, 450))
    assert store.sync_count == 4  # four full frames written on the way
    store.sync()
    assert store.sync_count == 5
    check_log(store, {e.index: e for e in entries(1, 450)})
    store.close()


@pytest.mark.parametrize("seed", [1234, 99, 7])
def test_random_operations_and_crashes_against_a_model(store_dir: str, monkeypatch: pytest.MonkeyPatch,
                                                       seed: int) -> None:
    """Random appends with overwrites, hard states, snapshots, compactions, crashes and torn
    tails; after every reopen the durable state equals the model of what was synced."""
    monkeypatch.setattr(segment_log, "MAX_SEGMENT_SIZE", 4096)
    rng = random.Random(seed)
    monkeypatch.setattr(segment_log, "MAX_RECENT_ENTRIES_SIZE", rng.choice([300, 3000]))
    torn_bytes = deleted_segments = reopens = 0
    durable: dict[int, Entry] = {}
    hard = HardState()
    snap_index = 0
    store = DurableStorage(store_dir)
    term = 1
    for step in range(400):
        roll = rng.random()
        last = store.last_index()
        if roll < 0.55:
            lo = max(store.first_index(), hard.commit + 1, last + 1 - rng.randrange(4))
            batch = [Entry(term=term, index=i, data=payload(i, term) + bytes([step % 256]))
                     for i in range(lo, lo + rng.randrange(1, 12))]
            store.append(batch)
            if rng.random() < 0.5:
                hard = HardState(term=term, vote=1, commit=max(hard.commit, lo - 1))
                store.set_hard_state(hard)
            store.sync()
            for i in [i for i in durable if i >= lo]:
                del durable[i]
            durable.update((e.index, e) for e in batch)
        elif roll < 0.65:
            term += 1
        elif roll < 0.75 and hard.commit > snap_index:
            snap_index = rng.randrange(snap_index + 1, hard.commit + 1)
            store.create_snapshot(Snapshot(meta=SnapshotMeta(index=snap_index, term=store.term(snap_index)),
                                           data=b"img"))
            keep = rng.randrange(0, 20)
            before = store.segment_count()
            store.compact(max(store.first_index() - 1, snap_index - keep))
            deleted_segments += before - store.segment_count()
        elif roll < 0.9:  # crash, maybe with a torn unsynced tail
            store.append([Entry(term=term, index=last + 1, data=b"unsynced")])
            store.close()
            seg = segments(store_dir)[-1]
            if rng.random() < 0.5:
                with open(seg, "ab") as fh:
                    fh.write(os.urandom(rng.randrange(1, 300)))
            store = DurableStorage(store_dir)
            torn_bytes += store.truncated_tail_bytes
            reopens += 1
        else:
            store.close()
            store = DurableStorage(store_dir)
        expected = {i: e for i, e in durable.items() if i >= store.first_index()}
        check_log(store, expected)
        assert store.initial_state()[0] == hard
    store.close()
    assert torn_bytes > 0 and deleted_segments > 0 and reopens > 10  # the test did exercise them


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_behaves_like_memory_storage(store_dir: str, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Differential test against the core's MemoryStorage (the reference the core is tested
    with): the same calls, in the worker's order, give the same reads, crashes included."""
    memory_storage = pytest.importorskip("aspen.raft.memory_storage")
    monkeypatch.setattr(segment_log, "MAX_SEGMENT_SIZE", 4096)
    rng = random.Random(seed)
    # A small in-memory tail, so reads mix memory and disk through overwrites and compactions.
    monkeypatch.setattr(segment_log, "MAX_RECENT_ENTRIES_SIZE", rng.choice([0, 200, 1500]))
    mem = memory_storage.MemoryStorage(ONE)
    disk = DurableStorage(store_dir, bootstrap=ONE)
    term = 1
    for step in range(300):
        roll = rng.random()
        hs, _ = mem.initial_state()
        first, last = mem.first_index(), mem.last_index()
        if roll < 0.45:  # one Ready: append (maybe overwriting uncommitted), hard state, sync
            lo = rng.randrange(max(first, hs.commit + 1), last + 2)
            batch = [Entry(term=term, index=i, kind=rng.choice(list(EntryKind)),
                           data=rng.randbytes(rng.randrange(0, 40))) for i in range(lo, lo + rng.randrange(1, 8))]
            new_hs = HardState(term=term, vote=rng.choice([0, 1, 2]),
                               commit=rng.randrange(hs.commit, batch[-1].index + 1))
            do_sync = rng.random() < 0.9
            for store in (mem, disk):
                store.append(batch)
                store.set_hard_state(new_hs)
                if do_sync:
                    store.sync()
        elif roll < 0.55:
            term += 1
        elif roll < 0.7 and hs.commit >= first:  # snapshot + compaction after a sync
            for store in (mem, disk):
                store.sync()
            index = rng.randrange(max(first - 1, mem.snapshot().meta.index), hs.commit + 1)
            snap = Snapshot(meta=SnapshotMeta(index=index, term=mem.term(index), membership=ONE),
                            data=b"state@%d" % index)
            keep = rng.randrange(0, 6)
            for store in (mem, disk):
                store.create_snapshot(snap)
                store.compact(max(first - 1, min(index, mem.snapshot().meta.index) - keep))
        elif roll < 0.75:  # a snapshot from the leader, beyond or inside the log
            index = rng.randrange(max(hs.commit, mem.snapshot().meta.index) + 1, last + 10)
            snap = Snapshot(meta=SnapshotMeta(index=index, term=term, membership=ONE), data=b"leader")
            for store in (mem, disk):
                store.apply_snapshot(snap)
                store.sync()
        else:  # crash: MemoryStorage keeps what was synced; the disk store is reopened
            mem.crash()
            disk.close()
            disk = DurableStorage(store_dir)
        assert (disk.first_index(), disk.last_index()) == (mem.first_index(), mem.last_index()), step
        assert disk.initial_state() == mem.initial_state(), step
        assert disk.snapshot().meta == mem.snapshot().meta
        lo, hi = disk.first_index(), disk.last_index() + 1
        assert [disk.term(i) for i in range(lo - 1, hi)] == [mem.term(i) for i in range(lo - 1, hi)]
        budget = rng.choice([1, 100, ALL_BYTES])
        assert disk.entries(lo, hi, budget) == mem.entries(lo, hi, budget), step
    disk.close()


def test_a_failed_sync_is_sticky_and_reopen_recovers(store_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a failed fsync the page cache cannot be trusted (PostgreSQL's "fsyncgate"): the log
    refuses every further call until it is reopened from disk."""
    store = DurableStorage(store_dir)
    store.append(entries(1, 5))
    store.sync()

    def broken_sync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken_sync)
    store.append(entries(6, 8))
    with pytest.raises(StorageError, match="Input/output error"):
        store.sync()
    monkeypatch.undo()
    with pytest.raises(StorageError, match="must be reopened"):
        store.term(1)
    with pytest.raises(StorageError, match="must be reopened"):
        store.sync()
    store.close()
    store = DurableStorage(store_dir)
    # 6..8 were written but never acknowledged: either outcome is allowed, 1..5 must be there.
    assert store.last_index() in (5, 8)
    check_log(store, {e.index: e for e in entries(1, store.last_index())})
    store.close()


def test_crash_right_after_a_segment_rotation(store_dir: str) -> None:
    """A new segment that got its header but no frame (and a leftover .tmp) is harmless."""
    import struct
    import zlib

    store = DurableStorage(store_dir)
    store.append(entries(1, 20))
    store.sync()
    store.close()
    log_dir = os.path.join(store_dir, "log")
    header = segment_log._SEGMENT_HEADER.pack(segment_log.SEGMENT_MAGIC, segment_log.SEGMENT_VERSION, 0, 2, 0)
    header = header[:-4] + struct.pack(">I", zlib.crc32(header[:-4]))
    Path(log_dir, "seg-0000000000000002.log").write_bytes(header)
    Path(log_dir, "seg-0000000000000003.log.tmp").write_bytes(header[:7])
    store = DurableStorage(store_dir)
    check_log(store, {e.index: e for e in entries(1, 20)})
    store.append(entries(21, 30))
    store.sync()
    store.close()
    assert sorted(os.listdir(log_dir)) == ["seg-0000000000000001.log", "seg-0000000000000002.log"]
    store = DurableStorage(store_dir)
    check_log(store, {e.index: e for e in entries(1, 30)})
    store.close()


def test_crash_while_writing_a_snapshot_leaves_the_previous_one(store_dir: str) -> None:
    store = DurableStorage(store_dir, bootstrap=ONE)
    store.append(entries(1, 10))
    store.sync()
    store.create_snapshot(Snapshot(meta=SnapshotMeta(index=5, term=1, membership=ONE), data=b"s5"))
    store.close()
    snap_dir = Path(store_dir, "snap")
    (snap_dir / f"snap-{9:020d}-{1:020d}.snap.tmp").write_bytes(b"ASNP half a snapshot")
    store = DurableStorage(store_dir)
    assert store.snapshot().data == b"s5" and store.snapshot_meta().index == 5
    assert not any(name.endswith(".tmp") for name in os.listdir(snap_dir))
    check_log(store, {e.index: e for e in entries(1, 10)})
    store.close()
