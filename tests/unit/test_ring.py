"""Unit and property tests of the shared-memory SPSC ring (aspen/ring.py over ext/ring.c).

The differential test drives random operation sequences against a `collections.deque` model that
also accounts bytes exactly (8-byte header + payload padded to 8), so "full" must agree too.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import random
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aspen import _ring
from aspen.errors import LimitExceeded, UsageError
from aspen.ring import (
    MAX_READER_BATCHES_PER_WAKE,
    DEFAULT_RING_CAPACITY_SIZE,
    MAX_RING_BATCH_MESSAGES,
    MAX_RING_MESSAGE_SIZE,
    RECORD_HEADER_SIZE,
    Ring,
    RingCorrupted,
    RingPair,
    RingSpec,
)
from aspen.units import MiB
from aspen.wire import MAX_RPC_MESSAGE_SIZE

SHM_DIR = Path("/dev/shm")
# Bound for every wait in these tests: generous for a loaded 2-core machine, never reached when
# the code is right.
WAIT_TIMEOUT_MS = 10_000
PROPERTY_EXAMPLES = 25


def record_size(payload_size: int) -> int:
    """Bytes one message occupies in the ring (ext/ring.c: 8-byte header, payload padded to 8)."""
    return RECORD_HEADER_SIZE + (payload_size + 7) // 8 * 8


def unique_name() -> str:
    return f"aspen-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def leftovers(prefix: str) -> list[str]:
    return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


def pattern(seed: int, size_bytes: int) -> bytes:
    return random.Random(seed).randbytes(size_bytes)


@pytest.fixture
def name() -> Iterator[str]:
    """A fresh ring name; after the test, nothing under it may remain in /dev/shm."""
    value = unique_name()
    yield value
    left = leftovers(value)
    for entry in left:
        (SHM_DIR / entry).unlink()
    assert left == [], "test left shared memory behind"


def make_ring(name: str, capacity_bytes: int, **kwargs: int) -> Ring:
    ring = Ring.create(name, capacity_bytes, **kwargs)
    ring.unlink()  # the product's pattern: no name left behind, the mapping stays valid
    return ring


# ---- basics ---------------------------------------------------------------------------------

def test_roundtrip_preserves_order_and_types(name: str) -> None:
    with make_ring(name, 4096) as ring:
        assert ring.try_put(b"one")
        assert ring.try_put(bytearray(b"two"))
        assert ring.try_put(memoryview(b"xthreex")[1:-1])
        assert ring.try_put(b"")
        assert ring.pending == 4
        assert ring.depth_bytes == 3 * record_size(3) + record_size(0)
        assert [ring.try_get() for _ in range(5)] == [b"one", b"two", b"three", b"", None]
        assert ring.pending == 0 and ring.depth_bytes == 0


def test_default_ring_carries_a_maximal_rpc_message_with_envelope(name: str) -> None:
    with make_ring(name, DEFAULT_RING_CAPACITY_SIZE) as ring:
        assert ring.max_message_size == MAX_RING_MESSAGE_SIZE > MAX_RPC_MESSAGE_SIZE
        big = pattern(1, MAX_RING_MESSAGE_SIZE)
        # Three fit at once, so a producer and a consumer can overlap on 10 MiB messages.
        assert ring.try_put_many([big, big, big]) == 3
        assert ring.try_put(b"") is True and ring.try_put(big) is False
        assert ring.try_get_many(4) == [big, big, big, b""]


def test_try_put_many_writes_the_prefix_that_fits(name: str) -> None:
    with make_ring(name, 128) as ring:
        items = [bytes([i]) * 20 for i in range(10)]  # 32-byte records: 4 fit in 128
        assert ring.try_put_many(items) == 4
        assert ring.try_put_many(items[4:]) == 0
        assert ring.try_get_many(2) == items[:2]
        assert ring.try_put_many(items[4:]) == 2
        assert ring.try_get_many(MAX_RING_BATCH_MESSAGES) == items[2:6]
        assert ring.try_get_many(1) == []


def test_wrap_around_many_messages_on_a_small_ring(name: str) -> None:
    """Positions wrap hundreds of times; payloads are split across the end of the buffer."""
    rng = random.Random(7)
    capacity_bytes = 200  # not a power of two, and not a multiple of typical record sizes
    with make_ring(name, capacity_bytes) as ring:
        expected: deque[bytes] = deque()
        total_bytes = 0
        for seq in range(5000):
            payload = pattern(seq, rng.randrange(0, ring.max_message_size + 1))
            while not ring.try_put(payload):
                assert ring.try_get() == expected.popleft()
            expected.append(payload)
            total_bytes += record_size(len(payload))
        while expected:
            assert ring.try_get() == expected.popleft()
        assert ring.try_get() is None
        # Record sizes are random multiples of 8, so over hundreds of laps both the header and
        # the payload land on every offset, and many payloads are split at the end.
        assert total_bytes > 500 * capacity_bytes


def test_max_message_equal_to_capacity_minus_header_fits_at_any_offset(name: str) -> None:
    """Split copy (not a wrap marker) means a whole-ring message fits wherever head is."""
    with make_ring(name, 64) as ring:
        assert ring.max_message_size == 56
        for offset_payload in range(0, 56, 8):
            assert ring.try_put(b"x" * offset_payload)
            assert ring.try_get() == b"x" * offset_payload
            full = pattern(offset_payload, 56)
            assert ring.try_put(full)
            assert ring.try_put(b"") is False  # exactly full: even a header does not fit
            assert ring.try_get() == full


# ---- limits and backpressure ------------------------------------------------------------------

def test_oversized_message_is_refused_and_nothing_changes(name: str) -> None:
    with make_ring(name, 4096, max_message_size=100) as ring:
        assert ring.try_put(b"keep")
        before = (ring.pending, ring.depth_bytes)
        with pytest.raises(LimitExceeded) as info:
            ring.try_put(b"x" * 101)
        assert (info.value.value, info.value.limit) == (101, 100)
        assert "101 > 100" in str(info.value)
        with pytest.raises(LimitExceeded):
            ring.try_put_many([b"ok", b"x" * 101])  # validated first: "ok" is not written
        with pytest.raises(LimitExceeded):
            ring.put_blocking(b"x" * 101, timeout_ms=0)
        assert (ring.pending, ring.depth_bytes) == before
        assert ring.try_get() == b"keep" and ring.try_get() is None


def test_oversized_is_refused_even_when_full(name: str) -> None:
    with make_ring(name, 64) as ring:
        assert ring.try_put(b"x" * 56)
        with pytest.raises(LimitExceeded):
            asyncio.run(ring.put(b"x" * 57, timeout_ms=0))


def test_full_ring_applies_backpressure_never_drops(name: str) -> None:
    with make_ring(name, 256) as ring:
        sent = 0
        while ring.try_put(struct.pack("<Q", sent) * 3):
            sent += 1
        assert sent == 256 // record_size(24)
        assert ring.try_put(b"x") is False and ring.try_put(b"") is False
        assert ring.put_blocking(b"x", timeout_ms=1) is False
        got = [struct.unpack("<Q", m[:8])[0] for m in ring.try_get_many(MAX_RING_BATCH_MESSAGES)]
        assert got == list(range(sent))


def test_async_put_completes_only_after_a_get_frees_space(name: str) -> None:
    async def scenario(ring: Ring) -> None:
        assert ring.try_put(b"a" * 56)
        task = asyncio.create_task(ring.put(b"b" * 40))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not task.done()  # parked on space_fd, nothing overwritten
        assert ring.try_get() == b"a" * 56  # frees space and signals the waiting producer
        await asyncio.wait_for(task, WAIT_TIMEOUT_MS / 1000)
        assert ring.try_get() == b"b" * 40

    with make_ring(name, 64) as ring:
        asyncio.run(scenario(ring))


def test_async_put_times_out_on_a_full_ring(name: str) -> None:
    with make_ring(name, 64) as ring:
        assert ring.try_put(b"a" * 56)
        with pytest.raises(TimeoutError):
            asyncio.run(ring.put(b"b", timeout_ms=20))
        assert ring.try_get() == b"a" * 56 and ring.try_get() is None


def test_put_many_waits_for_space_and_keeps_order(name: str) -> None:
    items = [pattern(i, 30) for i in range(50)]

    async def scenario(ring: Ring) -> list[bytes]:
        got: list[bytes] = []
        producer = asyncio.create_task(ring.put_many(items, timeout_ms=WAIT_TIMEOUT_MS))
        while len(got) < len(items):
            got.extend(await ring.get_many(3, timeout_ms=WAIT_TIMEOUT_MS))
        await producer
        return got

    with make_ring(name, 128) as ring:
        assert uvloop.run(scenario(ring)) == items


# ---- zero-copy peek/consume -------------------------------------------------------------------

@pytest.mark.parametrize("capacity_bytes", [4096, 4000], ids=["mirrored", "copying"])
def test_peek_shows_a_split_record_whole_then_consume_takes_it(name: str, capacity_bytes: int) -> None:
    with make_ring(name, capacity_bytes) as ring:
        assert ring.is_zero_copy is (capacity_bytes == 4096)
        lead = b"a" * (capacity_bytes - RECORD_HEADER_SIZE - 24)  # next payload starts 16 B before the end
        assert ring.try_put(lead) and ring.try_get() == lead
        message = pattern(3, 500)  # split: 16 bytes at the end, 484 at the start
        assert ring.try_put(message) and ring.try_put(b"next")
        view = ring.try_peek()
        assert view is not None and view.readonly and view == message
        if ring.is_zero_copy:
            with pytest.raises(UsageError, match="release the view"):
                ring.consume()  # the producer could overwrite what the view shows
        view.release()
        ring.consume()
        assert ring.try_get() == b"next"
        assert ring.try_peek() is None
        with pytest.raises(UsageError, match="empty"):
            ring.consume()


def test_close_while_a_view_is_held_unmaps_only_after_release(name: str) -> None:
    ring = make_ring(name, 4096)
    ring.try_put(b"still here")
    view = ring.try_peek()
    assert view is not None
    ring.close()
    assert ring.closed and bytes(view) == b"still here"  # mapping kept alive by the view
    view.release()
    with pytest.raises(UsageError, match="closed"):
        ring.try_peek()


def test_peek_blocking_and_async_peek_wait_for_a_message(name: str) -> None:
    async def scenario(ring: Ring) -> bytes:
        task = asyncio.create_task(ring.peek(timeout_ms=WAIT_TIMEOUT_MS))
        while not ring._getter_waiting:
            await asyncio.sleep(0)
        ring.try_put(b"async")
        view = await task
        with view:
            data = bytes(view)
        ring.consume()
        return data

    with make_ring(name, 4096) as ring:
        assert ring.peek_blocking(timeout_ms=1) is None
        with pytest.raises(TimeoutError):
            asyncio.run(ring.peek(timeout_ms=1))
        assert uvloop.run(scenario(ring)) == b"async"
        ring.try_put(b"blocking")
        view = ring.peek_blocking(timeout_ms=WAIT_TIMEOUT_MS)
        assert view is not None and bytes(view) == b"blocking"
        view.release()
        ring.consume()


# ---- waking -------------------------------------------------------------------------------------

@pytest.mark.parametrize("runner", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_async_get_wakes_on_put_from_another_thread(name: str, runner: object) -> None:
    async def scenario(ring: Ring) -> bytes:
        task = asyncio.create_task(ring.get(timeout_ms=WAIT_TIMEOUT_MS))
        while not ring._getter_waiting:  # the consumer has armed its flag and sleeps
            await asyncio.sleep(0)
        for _ in range(5):
            await asyncio.sleep(0)
        thread = threading.Thread(target=ring.try_put, args=(b"wake",))
        thread.start()
        result = await task
        thread.join()
        return result

    with make_ring(name, 4096) as ring:
        assert runner(scenario(ring)) == b"wake"  # type: ignore[operator]


def test_producer_signals_only_when_the_consumer_announced_sleep(name: str) -> None:
    """A busy stream costs no eventfd write per message: only an armed waiter is signalled."""
    def signalled(fd: int) -> bool:
        try:
            os.read(fd, 8)
        except BlockingIOError:
            return False
        return True

    with make_ring(name, 4096) as ring:
        ring.try_put(b"1")
        assert not signalled(ring.data_fd)
        assert ring.try_get() == b"1" and ring.arm_get_wait() is False  # empty: may sleep now
        ring.try_put(b"2")
        ring.try_put(b"3")
        assert signalled(ring.data_fd) and not signalled(ring.data_fd)  # once, then disarmed
        assert ring.arm_get_wait() is True  # data present: do not sleep, no signal pending
        ring.try_put(b"4")
        assert not signalled(ring.data_fd)
        assert ring.try_get_many(8) == [b"2", b"3", b"4"]
        assert not signalled(ring.space_fd)  # the producer never announced it was waiting
        ring.try_put(b"x" * (4096 - 8))
        assert ring.arm_put_wait(0) is False  # full: the producer may sleep
        ring.try_get()
        assert signalled(ring.space_fd)


def test_async_get_times_out_and_leaves_the_ring_usable(name: str) -> None:
    with make_ring(name, 4096) as ring:
        with pytest.raises(TimeoutError):
            asyncio.run(ring.get(timeout_ms=10))
        assert ring.try_put(b"later")
        assert asyncio.run(ring.get(timeout_ms=WAIT_TIMEOUT_MS)) == b"later"


def test_second_concurrent_async_getter_is_refused(name: str) -> None:
    async def scenario(ring: Ring) -> None:
        first = asyncio.create_task(ring.get(timeout_ms=WAIT_TIMEOUT_MS))
        await asyncio.sleep(0)
        with pytest.raises(UsageError, match="single-consumer"):
            await ring.get(timeout_ms=0)
        ring.try_put(b"x")
        assert await first == b"x"

    with make_ring(name, 4096) as ring:
        asyncio.run(scenario(ring))


def test_blocking_get_times_out_then_wakes_on_thread_put(name: str) -> None:
    with make_ring(name, 4096) as ring:
        assert ring.get_blocking(timeout_ms=5) is None
        assert ring.get_many_blocking(4, timeout_ms=0) == []
        timer = threading.Timer(0.05, ring.try_put, args=(b"late",))
        timer.start()
        assert ring.get_blocking(timeout_ms=WAIT_TIMEOUT_MS) == b"late"
        timer.join()


def test_blocking_put_waits_for_a_consumer_thread(name: str) -> None:
    with make_ring(name, 64) as ring:
        assert ring.try_put(b"a" * 56)
        got: list[bytes | None] = []
        timer = threading.Timer(0.05, lambda: got.append(ring.try_get()))
        timer.start()
        assert ring.put_blocking(b"b" * 56, timeout_ms=WAIT_TIMEOUT_MS)
        timer.join()
        assert got == [b"a" * 56] and ring.try_get() == b"b" * 56


def test_put_many_blocking_waits_for_a_consumer_thread(name: str) -> None:
    items = [pattern(i, 24) for i in range(40)]  # 32-byte records: 4 fit in 128
    got: list[bytes] = []

    def consume() -> None:
        while len(got) < len(items):
            got.extend(ring.get_many_blocking(8, timeout_ms=WAIT_TIMEOUT_MS))

    with make_ring(name, 128) as ring:
        consumer = threading.Thread(target=consume)
        consumer.start()
        assert ring.put_many_blocking(items, timeout_ms=WAIT_TIMEOUT_MS) == len(items)
        consumer.join(WAIT_TIMEOUT_MS / 1000)
        assert got == items
        assert ring.put_many_blocking(items, timeout_ms=1) == 4  # nobody consumes: a prefix


# ---- persistent reader ----------------------------------------------------------------------------

@pytest.mark.parametrize("runner", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_persistent_reader_delivers_everything_in_order_from_another_thread(name: str, runner: object) -> None:
    """Messages put before the reader exists, and a producer thread racing it, all arrive once
    and in order: the reader never misses a wake-up (arm, re-check, sleep)."""
    total = 20_000

    async def scenario(ring: Ring) -> list[bytes]:
        got: list[bytes] = []
        done = asyncio.Event()

        def on_batch(batch: list[bytes]) -> None:
            got.extend(batch)
            if len(got) >= total:
                done.set()

        ring.start_reader(on_batch, max_count=64)

        def produce() -> None:
            deadline = time.monotonic() + WAIT_TIMEOUT_MS / 1000
            for i in range(3, total):
                while not ring.try_put(b"%d" % i):  # backpressure: the loop is draining
                    if time.monotonic() > deadline:
                        return
                    threading.Event().wait(0.0005)

        thread = threading.Thread(target=produce)
        thread.start()
        try:
            await asyncio.wait_for(done.wait(), WAIT_TIMEOUT_MS / 1000)
        finally:
            thread.join()
        ring.stop_reader()
        return got

    with make_ring(name, 4096) as ring:
        for i in range(3):
            ring.try_put(b"%d" % i)
        got = runner(scenario(ring))  # type: ignore[operator]
        assert got == [b"%d" % i for i in range(total)]


def test_persistent_reader_yields_the_loop_under_a_burst(name: str) -> None:
    """A burst larger than MAX_READER_BATCHES_PER_WAKE batches is taken over several loop turns,
    so other callbacks run in between; nothing is lost."""
    async def scenario(ring: Ring) -> tuple[int, int]:
        calls: list[int] = []
        ticks = 0
        ring.start_reader(lambda batch: calls.append(len(batch)), max_count=1)
        burst = MAX_READER_BATCHES_PER_WAKE * 3
        for _ in range(burst):
            assert ring.try_put(b"m")
        for _ in range(10):  # bounded: each turn takes at most MAX_READER_BATCHES_PER_WAKE
            await asyncio.sleep(0)
            ticks += 1
            if sum(calls) == burst:
                break
        ring.stop_reader()
        return sum(calls), ticks

    with make_ring(name, 64 * 1024) as ring:
        taken, ticks = asyncio.run(scenario(ring))
        assert taken == MAX_READER_BATCHES_PER_WAKE * 3
        assert ticks >= 3


def test_persistent_reader_survives_a_failing_callback_and_excludes_other_consumers(
        name: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(ring: Ring) -> list[bytes]:
        got: list[bytes] = []

        def on_batch(batch: list[bytes]) -> None:
            if batch == [b"bad"]:
                raise ValueError("consumer bug")
            got.extend(batch)

        ring.start_reader(on_batch, max_count=1)
        with pytest.raises(UsageError, match="single-consumer"):
            await ring.get(timeout_ms=0)
        with pytest.raises(UsageError, match="single-consumer"):
            ring.start_reader(on_batch)
        for item in (b"a", b"bad", b"b"):
            ring.try_put(item)
        for _ in range(100):
            await asyncio.sleep(0.001)
            if len(got) == 2:
                break
        ring.stop_reader()
        ring.try_put(b"after-stop")
        await asyncio.sleep(0.01)
        assert got == [b"a", b"b"]
        assert await ring.get(timeout_ms=WAIT_TIMEOUT_MS) == b"after-stop"  # usable again
        return got

    with make_ring(name, 4096) as ring:
        asyncio.run(scenario(ring))
    assert "reader callback failed" in caplog.text


def test_close_removes_the_persistent_reader(name: str) -> None:
    async def scenario(ring: Ring) -> None:
        ring.start_reader(lambda batch: None)
        ring.close()
        await asyncio.sleep(0)  # the initial reader turn must not touch the closed ring
        ring.stop_reader()  # idempotent after close

    ring = make_ring(name, 4096)
    asyncio.run(scenario(ring))
    assert ring.closed


def test_close_fails_a_waiting_coroutine_instead_of_stranding_it(name: str) -> None:
    async def scenario(ring: Ring) -> None:
        task = asyncio.create_task(ring.get())
        while not ring._getter_waiting:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        ring.close()
        with pytest.raises(UsageError, match="closed"):
            await task

    ring = make_ring(name, 4096)
    asyncio.run(scenario(ring))
    assert ring.closed


CHILD_PRODUCER = """
import sys
from aspen.ring import RingPair
pair = RingPair.attach_arg(sys.argv[1])
request = pair.rx.get_blocking(timeout_ms=10_000)
assert pair.tx.put_blocking(b"echo:" + request, timeout_ms=10_000)
pair.close()
"""


def test_pair_across_processes_with_inherited_fds_wakes_async_get(name: str) -> None:
    """The product's pattern: create, unlink at once, pass fds, the child attaches by fd."""
    async def scenario(pair: RingPair, proc: subprocess.Popen[bytes]) -> bytes:
        await pair.tx.put(b"ping")
        reply = await pair.rx.get(timeout_ms=WAIT_TIMEOUT_MS)
        await asyncio.to_thread(proc.wait, WAIT_TIMEOUT_MS / 1000)
        return reply

    with RingPair.create(name, 64 * 1024) as pair:
        pair.unlink()
        assert leftovers(name) == []
        proc = subprocess.Popen([sys.executable, "-c", CHILD_PRODUCER, pair.spec_arg()],
                                pass_fds=pair.inheritable_fds())
        pair.close_shm_fds()
        try:
            assert uvloop.run(scenario(pair, proc)) == b"echo:ping"
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0
        assert pair.tx.attach_count == 1 and pair.rx.attach_count == 1


# ---- lifetime and bad arguments ----------------------------------------------------------------

def test_close_and_unlink_are_idempotent(name: str) -> None:
    ring = Ring.create(name, 4096)
    assert leftovers(name) == [name]
    assert ring.unlink() is True
    assert ring.unlink() is False
    assert leftovers(name) == []
    assert ring.try_put(b"still mapped")
    ring.close()
    ring.close()
    assert ring.closed
    for call in (lambda: ring.try_put(b"x"), ring.try_get, lambda: ring.pending):
        with pytest.raises(UsageError, match="closed"):
            call()


def test_attach_by_name_shares_the_ring(name: str) -> None:
    creator = Ring.create(name, 4096)
    peer = Ring.attach(name, data_fd=os.dup(creator.data_fd), space_fd=os.dup(creator.space_fd))
    try:
        assert creator.attach_count == 1
        creator.unlink()  # right after the peer attached
        creator.try_put(b"hello")
        assert peer.try_get() == b"hello"
        assert peer.max_message_size == creator.max_message_size
    finally:
        peer.close()
        creator.close()


def test_attach_spec_by_fd_and_by_name(name: str) -> None:
    creator = Ring.create(name, 4096)
    try:
        by_fd = Ring.attach_spec(RingSpec(name, os.dup(creator.shm_fd), os.dup(creator.data_fd),
                                          os.dup(creator.space_fd)))
        by_name = Ring.attach_spec(RingSpec(name, -1, os.dup(creator.data_fd),
                                            os.dup(creator.space_fd)))
        creator.unlink()
        creator.close_shm_fd()
        assert creator.spec().shm_fd == -1 and creator.inheritable_fds() == (
            creator.data_fd, creator.space_fd)
        creator.try_put_many([b"a", b"b"])
        assert by_fd.try_get() == b"a" and by_name.try_get() == b"b"
        assert creator.attach_count == 2
        by_fd.close()
        by_name.close()
    finally:
        creator.unlink()
        creator.close()


@pytest.mark.parametrize("capacity_bytes", [-8, 0, 8, 60, 65, 2**31 + 8, 1.5])
def test_bad_capacity_is_refused(name: str, capacity_bytes: int) -> None:
    with pytest.raises(UsageError, match="capacity_bytes"):
        Ring.create(name, capacity_bytes)
    assert leftovers(name) == []


def test_bad_max_message_size_is_refused(name: str) -> None:
    for bad in (-1, 4096 - RECORD_HEADER_SIZE + 1):
        with pytest.raises(UsageError, match="max_message_size"):
            Ring.create(name, 4096, max_message_size=bad)
    with pytest.raises(UsageError):  # the C layer checks again
        _ring.create("/" + name, 4096, 4096)
    assert leftovers(name) == []


@pytest.mark.parametrize("bad_name", ["", "a/b", "/abc", "..", "sp ace", "x" * 256, "é"])
def test_bad_names_are_refused(bad_name: str) -> None:
    with pytest.raises((UsageError, LimitExceeded)):
        Ring.create(bad_name, 4096)
    with pytest.raises((UsageError, LimitExceeded)):
        Ring.attach(bad_name, data_fd=0, space_fd=0)


def test_c_layer_validates_its_own_arguments() -> None:
    with pytest.raises(UsageError):
        _ring.create("no-slash", 4096, 100)
    with pytest.raises(UsageError):
        _ring.create("/x", 4100, 100)
    with pytest.raises(UsageError, match=">= 0"):
        _ring.create("/x", -64, 0)
    with pytest.raises(UsageError, match=">= 0"):
        _ring.create("/x", 4096, -1)
    with pytest.raises(UsageError):
        _ring.attach_fd(-3)
    with pytest.raises(TypeError):
        _ring.unlink(b"/bytes")  # type: ignore[arg-type]


def test_attach_to_a_missing_name_raises(name: str) -> None:
    with pytest.raises(FileNotFoundError):
        Ring.attach(name, data_fd=0, space_fd=1)


def test_attach_to_wrong_magic_or_size_raises(name: str) -> None:
    path = SHM_DIR / name
    try:
        path.write_bytes(b"\0" * (_ring.DATA_OFFSET + 4096))
        with pytest.raises(UsageError, match="bad magic"):
            Ring.attach(name, data_fd=0, space_fd=1)
        path.write_bytes(b"tiny")
        with pytest.raises(UsageError, match="not an Aspen ring"):
            Ring.attach(name, data_fd=0, space_fd=1)
    finally:
        path.unlink()


def test_attach_refuses_another_layout_version(name: str) -> None:
    ring = Ring.create(name, 4096)
    try:
        with open(SHM_DIR / name, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as view:
            view[8:12] = struct.pack("<I", 99)  # header: magic (8 bytes), then version (u32)
        with pytest.raises(UsageError, match="version 99"):
            Ring.attach(name, data_fd=0, space_fd=1)
    finally:
        ring.unlink()
        ring.close()


def test_create_refuses_an_existing_name(name: str) -> None:
    with Ring.create(name, 4096) as ring:
        try:
            with pytest.raises(FileExistsError):
                Ring.create(name, 4096)
        finally:
            ring.unlink()


def test_bad_batch_timeout_and_fd_arguments(name: str) -> None:
    with make_ring(name, 4096) as ring:
        for bad in (0, -1, MAX_RING_BATCH_MESSAGES + 1):
            with pytest.raises(UsageError, match="max_count"):
                ring.try_get_many(bad)
        with pytest.raises(UsageError, match="timeout_ms"):
            ring.get_blocking(timeout_ms=-5)
        with pytest.raises(TypeError):
            ring.try_put("text is not bytes")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            ring.try_put_many(iter([b"x"]))  # type: ignore[arg-type]
        with pytest.raises(UsageError):
            Ring.attach(name, data_fd=-1, space_fd=0)


def test_ring_spec_round_trip_and_errors() -> None:
    spec = RingSpec("aspen-n1.down", 7, 8, 9)
    assert RingSpec.from_arg(spec.to_arg()) == spec
    for bad in ("", "a,1,2", "a,x,2,3", "a/b,1,2,3", "a,-5,2,3"):
        with pytest.raises(UsageError):
            RingSpec.from_arg(bad)
    with pytest.raises(UsageError):
        RingPair.attach_arg("only-one,1,2,3")


def test_corrupted_record_header_raises_instead_of_misreading(name: str) -> None:
    ring = Ring.create(name, 4096)
    try:
        assert ring.try_put(b"abc")
        with open(SHM_DIR / name, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as view:
            view[_ring.DATA_OFFSET + 4] ^= 0xFF  # the tag word of the first record
        with pytest.raises(RingCorrupted, match="tag"):
            ring.try_get()
    finally:
        ring.unlink()
        ring.close()


# ---- properties -----------------------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 300)),
        st.tuples(st.just("put_many"), st.lists(st.integers(0, 120), max_size=6)),
        st.tuples(st.just("get"), st.just(0)),
        st.tuples(st.just("get_many"), st.integers(1, 5)),
        st.tuples(st.just("peek_consume"), st.just(0)),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, capacity_bytes=st.sampled_from([64, 200, 512, 1000, 4096]))  # 4096: mirrored
def test_ring_agrees_with_a_deque_model(ops: list[tuple[str, object]], capacity_bytes: int) -> None:
    name = unique_name()
    ring = make_ring(name, capacity_bytes)
    model: deque[bytes] = deque()
    used_bytes = 0
    limit = capacity_bytes - RECORD_HEADER_SIZE
    counter = 0

    def next_payload(size_bytes: int) -> bytes:
        nonlocal counter
        counter += 1
        return pattern(counter, size_bytes)

    try:
        for op, arg in ops:
            if op == "put":
                assert isinstance(arg, int)
                payload = next_payload(arg)
                if arg > limit:
                    with pytest.raises(LimitExceeded):
                        ring.try_put(payload)
                    continue
                fits = capacity_bytes - used_bytes >= record_size(arg)
                assert ring.try_put(payload) is fits
                if fits:
                    model.append(payload)
                    used_bytes += record_size(arg)
            elif op == "put_many":
                assert isinstance(arg, list)
                payloads = [next_payload(size) for size in arg]
                if any(size > limit for size in arg):
                    with pytest.raises(LimitExceeded):
                        ring.try_put_many(payloads)
                    continue
                expected_count = 0
                for payload in payloads:
                    if capacity_bytes - used_bytes < record_size(len(payload)):
                        break
                    model.append(payload)
                    used_bytes += record_size(len(payload))
                    expected_count += 1
                assert ring.try_put_many(payloads) == expected_count
            elif op == "get":
                expected = model.popleft() if model else None
                if expected is not None:
                    used_bytes -= record_size(len(expected))
                assert ring.try_get() == expected
            elif op == "peek_consume":
                view = ring.try_peek()
                if not model:
                    assert view is None
                    with pytest.raises(UsageError, match="empty"):
                        ring.consume()
                else:
                    assert view is not None
                    with view:
                        assert view == model[0]
                    ring.consume()
                    used_bytes -= record_size(len(model.popleft()))
            else:
                assert isinstance(arg, int)
                taken = [model.popleft() for _ in range(min(arg, len(model)))]
                used_bytes -= sum(record_size(len(m)) for m in taken)
                assert ring.try_get_many(arg) == taken
            assert ring.pending == len(model)
            assert ring.depth_bytes == used_bytes
        assert ring.try_get_many(MAX_RING_BATCH_MESSAGES) == list(model)
    finally:
        ring.close()


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sizes=st.lists(st.one_of(st.integers(0, 4096),
                                st.integers(0, MAX_RPC_MESSAGE_SIZE),
                                st.just(MAX_RPC_MESSAGE_SIZE)), min_size=1, max_size=4),
       seed=st.integers(0, 2**32))
def test_any_size_up_to_10_mib_round_trips_intact(sizes: list[int], seed: int) -> None:
    """Sizes 0..10 MiB through a default ring, several in flight, offsets wrapping."""
    name = unique_name()
    ring = make_ring(name, 24 * MiB)  # smaller than default so wrap-around happens often
    try:
        base = pattern(seed, MAX_RPC_MESSAGE_SIZE + 64)  # slices of one buffer keep memory sane
        # A filler moves head to a seed-dependent offset, so records split at varied points.
        filler = (seed % MAX_RPC_MESSAGE_SIZE) // 8 * 8
        assert ring.try_put(base[:filler]) and ring.try_get() == base[:filler]
        for round_ in range(2):
            payloads = [base[(i + round_) % 64:(i + round_) % 64 + size]
                        for i, size in enumerate(sizes)]
            queued: deque[bytes] = deque()
            for payload in payloads:
                while not ring.try_put(payload):
                    assert ring.try_get() == queued.popleft()
                queued.append(payload)
            while queued:
                assert ring.try_get() == queued.popleft()
        assert ring.try_get() is None and ring.depth_bytes == 0
    finally:
        ring.close()
