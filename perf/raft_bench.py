"""Raft throughput: proposals/s through a 3-node cluster of sans-IO cores, no I/O.

Figures (one function each, so other figures can be added beside them):

- `core_single`: one proposal at a time, each carried to commit on the leader before the next
  (one full replication round trip per proposal; the core's latency-bound floor).
- `core_batched`: proposals in batches of BATCH (what a busy worker sees: many client commands
  between two Ready cycles); the core's own ceiling. Baseline: `core_single` in the same run.
- `core_batched_calls`: as batched, but one `propose()` call per command (no propose_batch).
- `core_batched_wire`: as batched, but every message goes through the msgpack codec
  (encode + decode), as between two processes.

Everything is in one process: MemoryStorage (its fsync is a list copy), messages moved by hand,
the state machine is a counter. Run: `python perf/raft_bench.py [--json out.json]`.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aspen.raft.config import RaftConfig  # noqa: E402
from aspen.raft.core import RaftCore  # noqa: E402
from aspen.raft.memory_storage import MemoryStorage  # noqa: E402
from aspen.raft.messages import RaftMessage, decode_message, encode_message  # noqa: E402
from aspen.raft.ready import write_ready  # noqa: E402
from aspen.raft.types import Membership  # noqa: E402
from perf._report import Row, add_json_argument, emit  # noqa: E402

BATCH = 1000
PAYLOAD = b"x" * 64  # a small KV Set command


class Cluster:
    """Three cores wired by hand; `pump()` moves every output until quiet."""

    def __init__(self, *, wire: bool = False, max_entries_per_append: int = 300) -> None:
        m = Membership(frozenset({1, 2, 3}), frozenset(), {1: "a", 2: "b", 3: "c"})
        self.wire = wire
        self.now_ms = 0
        self.cores: dict[int, RaftCore] = {}
        self.storages: dict[int, MemoryStorage] = {}
        for i in (1, 2, 3):
            st = MemoryStorage(m)
            cfg = RaftConfig(node_id=i, heartbeat_interval_ms=50, election_timeout_min_ms=1000,
                             election_timeout_max_ms=2000, snapshot_interval_entries=0,
                             max_entries_per_append=max_entries_per_append)
            self.cores[i] = RaftCore(cfg, st, rng=random.Random(i))
            self.storages[i] = st
        self.queue: list[RaftMessage] = []
        self.applied = 0
        self.cores[1].campaign(0)
        self.pump()
        assert self.cores[1].is_leader

    def drain(self, node_id: int) -> None:
        core, st = self.cores[node_id], self.storages[node_id]
        while (rd := core.ready()) is not None:
            write_ready(st, rd)
            if rd.must_sync:
                st.sync()
            self.queue.extend(rd.messages)
            if node_id == 1:
                self.applied += len(rd.committed_entries)
            core.advance(rd)

    def pump(self) -> None:
        for i in self.cores:
            self.drain(i)
        while self.queue:
            batch, self.queue = self.queue, []
            for msg in batch:
                if self.wire:
                    msg = decode_message(encode_message(msg))
                self.cores[msg.to_id].step(msg, self.now_ms)
                self.drain(msg.to_id)


def core_single(n: int) -> float:
    """Proposals/s, one at a time to commit."""
    c = Cluster()
    leader = c.cores[1]
    start = time.perf_counter()
    for _ in range(n):
        leader.propose(PAYLOAD, 0)
        c.pump()
    elapsed = time.perf_counter() - start
    assert leader.commit_index >= n
    return n / elapsed


def core_batched(n: int, *, wire: bool = False, one_call_each: bool = False) -> float:
    """Proposals/s in batches of BATCH per Ready cycle (propose_batch, or BATCH propose calls)."""
    c = Cluster(wire=wire)
    leader = c.cores[1]
    commands = [PAYLOAD] * BATCH
    rounds = max(1, n // BATCH)
    start = time.perf_counter()
    for _ in range(rounds):
        if one_call_each:
            for cmd in commands:
                leader.propose(cmd, 0)
        else:
            leader.propose_batch(commands, 0)
        c.pump()
    elapsed = time.perf_counter() - start
    assert leader.commit_index >= rounds * BATCH
    return rounds * BATCH / elapsed


DURABLE_PER_ENTRY = 2_000  # per-entry syncs measured (about a second on this disk)
DURABLE_GROUP_ENTRIES = 100_000  # entries per group-commit figure
DURABLE_GROUP_BATCHES = (64, 1024)


def durable_rows() -> list[Row]:
    """Durable appends/s of 100-byte entries on this disk: one sync per entry vs group commit
    (the same functions as perf/storage_bench.py, which has the full sweep)."""
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from storage_bench import bench_storage  # noqa: E402  (perf/ is not a package on purpose)

    directory = tempfile.mkdtemp(prefix="aspen-raft-bench-")
    try:
        per_entry, _ = bench_storage(directory, 1, DURABLE_PER_ENTRY)
        rows = [Row("durable append, sync per entry (100 B)", "entries/s", per_entry)]
        for batch in DURABLE_GROUP_BATCHES:
            rate, _ = bench_storage(directory, batch, DURABLE_GROUP_ENTRIES)
            rows.append(Row(f"durable append, group commit {batch}/sync", "entries/s", rate, per_entry,
                            "sync per entry"))
        return rows
    finally:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--proposals", type=int, default=200_000, help="batched proposals per figure")
    parser.add_argument("--single", type=int, default=5_000, help="single proposals for the baseline")
    parser.add_argument("--no-disk", action="store_true", help="skip the durable-append figures")
    add_json_argument(parser)
    args = parser.parse_args()
    single = core_single(args.single)
    batched = core_batched(args.proposals)
    calls = core_batched(args.proposals, one_call_each=True)
    wire = core_batched(args.proposals, wire=True)
    rows = [
        Row("core_single (3 nodes, no I/O)", "proposals/s", single),
        Row(f"core_batched x{BATCH} (3 nodes, no I/O)", "proposals/s", batched, single, "core_single"),
        Row(f"core_batched_calls x{BATCH} (propose() each)", "proposals/s", calls, single, "core_single"),
        Row(f"core_batched_wire x{BATCH} (msgpack codec)", "proposals/s", wire, batched, "core_batched"),
    ]
    if not args.no_disk:
        rows += durable_rows()
    emit("Raft: core throughput (sans-IO, in-process 3-node cluster) and durable appends", rows, args.json)


if __name__ == "__main__":
    main()
