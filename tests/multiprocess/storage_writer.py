"""A process that appends to a DurableStorage and prints each acknowledged (synced) index.

Usage: python storage_writer.py DIRECTORY SEED

Run by tests/multiprocess/test_storage_kill9.py, which kills it with SIGKILL at random moments
and checks that every index printed here survived. A line is printed only after `sync()`
returned, so a printed index is an acknowledged one. Entries carry `expected_payload(index)`.
Small segments force rotations, and every few hundred entries a snapshot plus compaction
deletes old segments, so kills also land inside those steps. Bounded: it stops by itself after
MAX_WRITER_BATCHES batches or MAX_WRITER_SECONDS.
"""

from __future__ import annotations

import hashlib
import random
import sys
import time

from aspen.raft import segment_log
from aspen.raft.storage import DurableStorage
from aspen.raft.types import Entry, HardState, Snapshot, SnapshotMeta

# Enough batches that the parent always kills before the end; the time bound stops an orphan.
MAX_WRITER_BATCHES = 200_000
MAX_WRITER_SECONDS = 60
# Small segments so a few hundred entries rotate several times (the real size is 64 MiB).
WRITER_SEGMENT_SIZE = 16 * 1024
# Entries between snapshots, and how many entries before the snapshot the log keeps.
SNAPSHOT_EVERY_ENTRIES = 400
KEEP_BEFORE_SNAPSHOT_ENTRIES = 50


def expected_payload(index: int) -> bytes:
    """The bytes entry `index` carries (the parent recomputes them to check integrity)."""
    digest = hashlib.blake2b(str(index).encode(), digest_size=16).hexdigest().encode()
    return b"%d:" % index + digest * (1 + index % 5)


def main() -> None:
    directory, seed = sys.argv[1], int(sys.argv[2])
    segment_log.MAX_SEGMENT_SIZE = WRITER_SEGMENT_SIZE
    rng = random.Random(seed)
    store = DurableStorage(directory)
    deadline = time.monotonic() + MAX_WRITER_SECONDS
    last = store.last_index()
    last_snapshot = store.snapshot_meta().index
    for _ in range(MAX_WRITER_BATCHES):
        if time.monotonic() > deadline:
            break
        batch = [Entry(term=1, index=i, data=expected_payload(i))
                 for i in range(last + 1, last + 1 + rng.randrange(1, 40))]
        store.append(batch)
        store.set_hard_state(HardState(term=1, vote=1, commit=last))
        store.sync()
        last = batch[-1].index
        print(last, flush=True)
        if last - last_snapshot >= SNAPSHOT_EVERY_ENTRIES:
            commit = last - 1  # committed before this batch's hard state: <= last
            store.create_snapshot(Snapshot(meta=SnapshotMeta(index=commit, term=1),
                                           data=b"snapshot@%d" % commit))
            store.compact(commit - KEEP_BEFORE_SNAPSHOT_ENTRIES)
            last_snapshot = commit
    store.close()


if __name__ == "__main__":
    main()
