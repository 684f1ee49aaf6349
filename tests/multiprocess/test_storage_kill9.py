"""kill -9 of a process that is writing the durable log: nothing acknowledged is lost.

The writer (storage_writer.py) prints an index only after sync() returned. The parent reads a
random number of acknowledgements, waits a random few milliseconds, sends SIGKILL, reads every
line that was printed before the kill, then reopens the store and checks that every
acknowledged index is present with intact bytes (or covered by the snapshot), and that the
store can be reopened and written again by the next round.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aspen.raft.storage import DurableStorage
from tests.multiprocess.storage_writer import expected_payload

ROUNDS = 5
# Per round: how long we wait for the writer's acknowledgements before failing the test.
ROUND_TIMEOUT_SECONDS = 30
WRITER = Path(__file__).parent / "storage_writer.py"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.multiprocess


def read_acks(proc: subprocess.Popen[bytes], wanted: int) -> list[int]:
    """Read acknowledged indexes until `wanted` arrived (bounded by ROUND_TIMEOUT_SECONDS)."""
    assert proc.stdout is not None
    acks: list[int] = []
    deadline = time.monotonic() + ROUND_TIMEOUT_SECONDS
    buf = b""
    fd = proc.stdout.fileno()
    while len(acks) < wanted:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"writer too slow: {len(acks)} acks"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        assert chunk, f"writer exited early (rc={proc.poll()})"
        buf += chunk
        *lines, buf = buf.split(b"\n")
        acks += [int(line) for line in lines]
    return acks


def test_kill9_never_loses_an_acknowledged_entry(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("ASPEN_KILL9_SEED", "20261122")))
    directory = str(tmp_path / "raft")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins")]))
    acked: list[int] = []
    snapshot_index = 0
    for round_number in range(ROUNDS):
        proc = subprocess.Popen([sys.executable, str(WRITER), directory, str(round_number)],
                                stdout=subprocess.PIPE, env=env)
        try:
            acked += read_acks(proc, rng.randrange(5, 120))
            time.sleep(rng.random() * 0.01)  # land the kill anywhere in the next batch
            os.kill(proc.pid, signal.SIGKILL)
            rest, _ = proc.communicate(timeout=ROUND_TIMEOUT_SECONDS)
            acked += [int(line) for line in rest.split()]  # printed before the kill: acked too
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        store = DurableStorage(directory)
        try:
            last, first = store.last_index(), store.first_index()
            assert last >= max(acked), f"round {round_number}: acked {max(acked)}, store has {last}"
            snapshot_index = store.snapshot_meta().index
            assert first - 1 <= snapshot_index  # everything below the log is in the snapshot
            for entry in store.entries(first, last + 1, 1 << 40):
                assert entry.data == expected_payload(entry.index), entry.index
            assert store.snapshot().data in (b"", b"snapshot@%d" % snapshot_index)
        finally:
            store.close()
    # The rounds did cross snapshots and compactions (the writer snapshots every 400 entries).
    assert snapshot_index > 0 and max(acked) > 400
