"""Cross-process stress of the shared-memory ring: a child process is the producer (and, in the
reverse phase, the consumer); every message carries its sequence number and a checksum, so the
parent proves none was lost, reordered or corrupted. Also: no /dev/shm entry survives, not even
when the creating process is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aspen.ring import RingPair

sys.path.insert(0, str(Path(__file__).parent))
import ring_peer  # type: ignore[import-not-found]  # noqa: E402  (the child's code, reused here)

pytestmark = pytest.mark.multiprocess

PEER_SCRIPT = Path(ring_peer.__file__)
SHM_DIR = Path("/dev/shm")
# The figures: at least a million small and fifty 10 MiB messages, one direction.
SMALL_COUNT = 1_000_000
BIG_COUNT = 50
# The reverse direction proves the same code path the other way round; fewer is enough.
REVERSE_SMALL_COUNT = 200_000
REVERSE_BIG_COUNT = 5
# Bound of a child's life in this test; a healthy run needs a few seconds.
CHILD_TIMEOUT_S = 60


def leftovers(prefix: str) -> list[str]:
    return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


@pytest.fixture
def prefix() -> Iterator[str]:
    value = f"aspen-stress-{os.getpid()}-{uuid.uuid4().hex[:10]}"
    yield value
    left = leftovers(value)
    for entry in left:
        (SHM_DIR / entry).unlink()
    assert left == [], "shared memory left behind"


def start_peer(pair: RingPair, mode: str, small_count: int, big_count: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(PEER_SCRIPT), mode, pair.spec_arg(), str(small_count), str(big_count)],
        pass_fds=pair.inheritable_fds())
    pair.close_shm_fds()
    return proc


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """On success wait for `proc` to exit by itself (bounded); on failure kill it at once."""
    try:
        yield
        proc.wait(CHILD_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_child_to_parent_a_million_small_and_fifty_10_mib_messages(prefix: str) -> None:
    with RingPair.create(prefix) as pair:
        pair.unlink()  # before the child exists: nothing named can outlive us
        assert leftovers(prefix) == []
        proc = start_peer(pair, "send", SMALL_COUNT, BIG_COUNT)
        with reaped(proc):
            assert ring_peer.receive(pair, SMALL_COUNT, BIG_COUNT) == SMALL_COUNT + BIG_COUNT
        assert proc.returncode == 0
        assert pair.rx.pending == 0 and pair.rx.depth_bytes == 0
        assert pair.rx.wake_error_count == 0
    assert leftovers(prefix) == []


def test_parent_to_child_reverse_direction(prefix: str) -> None:
    with RingPair.create(prefix) as pair:
        pair.unlink()
        proc = start_peer(pair, "echo", REVERSE_SMALL_COUNT, REVERSE_BIG_COUNT)
        with reaped(proc):
            ring_peer.send(pair, REVERSE_SMALL_COUNT, REVERSE_BIG_COUNT)
            reply = pair.rx.get_blocking(timeout_ms=CHILD_TIMEOUT_S * 1000)
        assert proc.returncode == 0
        assert reply == f"ok {REVERSE_SMALL_COUNT + REVERSE_BIG_COUNT}".encode()
    assert leftovers(prefix) == []


def test_sigkilled_creator_leaves_no_shared_memory(prefix: str) -> None:
    """The I/O process's pattern (create, unlink, spawn with pass_fds), then kill -9 of it."""
    creator = subprocess.Popen([sys.executable, str(PEER_SCRIPT), "spawn", prefix],
                               stdout=subprocess.PIPE)
    grandchild_pid = 0
    try:
        assert creator.stdout is not None
        grandchild_pid = int(creator.stdout.readline())  # printed after create+unlink+spawn
        assert leftovers(prefix) == []
        creator.send_signal(signal.SIGKILL)
        assert creator.wait(CHILD_TIMEOUT_S) == -signal.SIGKILL
        assert leftovers(prefix) == []
    finally:
        if creator.poll() is None:
            creator.kill()
            creator.wait()
        if creator.stdout is not None:
            creator.stdout.close()
        if grandchild_pid:
            try:  # the sender blocks on a full ring; it is not ours to wait for, so kill it
                os.kill(grandchild_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_sigkilled_consumer_does_not_disturb_the_producer(prefix: str) -> None:
    """A peer dying mid-stream leaves our side usable and nothing in /dev/shm."""
    with RingPair.create(prefix, 1024 * 1024) as pair:
        pair.unlink()
        proc = start_peer(pair, "echo", SMALL_COUNT, 0)
        try:
            batch = next(ring_peer.small_batches(100))
            assert pair.tx.put_many_blocking(batch, timeout_ms=CHILD_TIMEOUT_S * 1000) == 100
        finally:
            proc.kill()
            proc.wait()
        # Nobody consumes any more: the ring fills and refuses, it never overwrites.
        filler = [b"x" * 1000] * 2000
        written = pair.tx.try_put_many(filler)
        assert 0 < written < len(filler)
        assert pair.tx.try_put(b"x" * 1000) is False
    assert leftovers(prefix) == []
