"""Shared-memory SPSC rings between the I/O process and the Raft worker process.

A `Ring` carries variable-size messages (bytes-like in, `bytes` out) in one direction, from
exactly one producer to exactly one consumer, through a POSIX shared-memory segment
(`/dev/shm/<name>`, see ext/ring.c for the layout and the memory-ordering argument). A node uses
two, one per direction: `RingPair`.

Contract
--------
- Order is FIFO; nothing is ever dropped or overwritten. A full ring applies backpressure:
  `try_put` returns False, `put`/`put_blocking` wait for the consumer to free space.
- A message may be 0 bytes. One larger than the ring's `max_message_size` is refused with
  `LimitExceeded` and the ring is unchanged.
- One producer and one consumer at a time. Within a process a second concurrent producer (or
  consumer) call raises `UsageError`; across processes that discipline is the caller's.
- Zero-copy receive: `try_peek()` / `peek_blocking()` / `await peek()` return a read-only
  memoryview of the oldest message *in* shared memory (the data area is mapped twice back to
  back, so even a record split at the end is contiguous); decode from it, release it, then
  `consume()`. While a view is held `consume()` refuses, so the producer can never overwrite
  what a view shows; `close()` keeps the mapping until the last view is released.
- Wake-ups: two eventfds per ring. `data_fd` becomes readable when the consumer may have
  messages, `space_fd` when the producer may have space. A side signals the other only when the
  other announced that it may sleep, so a busy stream costs no system call per message.
  Wake-ups may be spurious; every waiter re-checks.

Sharing with a child process (the worker is started by the I/O process)
----------------------------------------------------------------------
The eventfds cannot be opened by name, so they are inherited: `subprocess.Popen(...,
pass_fds=pair.inheritable_fds())` keeps their numbers in the child, and `RingSpec` (a short text
for argv) tells the child which numbers they are. The shm fd is passed the same way, so the
creator can `unlink()` the name *before* the child even starts: from then on no /dev/shm entry
exists, and a SIGKILL of either process cannot leave one behind (the kernel frees the segment
when the last mapping and fd go away)::

    pair = RingPair.create("aspen-n1")             # in the I/O process
    pair.unlink()                                  # nothing left in /dev/shm from here on
    proc = subprocess.Popen([sys.executable, "-m", "aspen.worker", "--rings", pair.spec_arg()],
                            pass_fds=pair.inheritable_fds())
    pair.close_shm_fds()                           # the child has its own copies now

    pair = RingPair.attach_arg(args.rings)         # in the worker: tx/rx are swapped for it

Attaching by name (`Ring.attach(name, data_fd=..., space_fd=...)`) also works, for a peer that
got the eventfds another way; then unlink right after the peer attached (`attach_count`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Union

from aspen import _ring
from aspen.errors import LimitExceeded, UsageError
from aspen.units import GiB, KiB, MiB
from aspen.wire import MAX_RPC_MESSAGE_SIZE

# Room for the msgspec envelope (message type, term, indexes, ...) around a 10 MiB payload such as
# an AppendEntries batch or a snapshot chunk. guess: an envelope is < 1 KiB; 64 KiB leaves margin.
RING_ENVELOPE_SIZE: Final = 64 * KiB
# The largest message a default ring carries: one RPC message (DESIGN.md, 10 MiB) plus envelope.
MAX_RING_MESSAGE_SIZE: Final = MAX_RPC_MESSAGE_SIZE + RING_ENVELOPE_SIZE
# 32 MiB holds three maximal messages: the producer can write one while the consumer copies
# another out, with one more in slack, so 10 MiB transfers pipeline instead of alternating.
# Cost: 32 MiB of /dev/shm per direction, 64 MiB per node, touched only as it fills.
DEFAULT_RING_CAPACITY_SIZE: Final = 32 * MiB
# Small rings are for tests that want wrap-around after a few messages; below this nothing useful
# fits (one 8-byte record header + 56 bytes).
MIN_RING_CAPACITY_SIZE: Final = 64
# Bounded everything: no ring needs more than 1 GiB of shared memory (tmpfs is RAM).
MAX_RING_CAPACITY_SIZE: Final = 1 * GiB
# Records are 8-byte aligned (ext/ring.c), so capacities are multiples of 8.
RING_CAPACITY_ALIGN_SIZE: Final = _ring.RECORD_ALIGN
RECORD_HEADER_SIZE: Final = _ring.RECORD_HEADER_SIZE
# Bound of one try_get_many/get_many call. guess: 4096 64-byte messages is ~256 KiB of bytes
# objects, enough to amortise the call (measured in perf/ring_bench.py) and small enough to keep
# the consumer's latency for other work low.
MAX_RING_BATCH_MESSAGES: Final = 4096
# A persistent reader (`Ring.start_reader`) takes at most this many batches per loop callback
# before yielding the loop a turn. guess: 16 full batches is ~64k messages, tens of ms of work.
MAX_READER_BATCHES_PER_WAKE: Final = 16
# Linux NAME_MAX for the /dev/shm file name; we keep the portable characters only.
MAX_RING_NAME_SIZE: Final = 255
_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]+")
# An eventfd read returns its 8-byte counter (eventfd(2)).
_EVENTFD_READ_SIZE: Final = 8

logger = logging.getLogger(__name__)

RingCorrupted = _ring.RingCorrupted
BytesLike = Union[bytes, bytearray, memoryview]


def _check_name(name: str) -> str:
    """The C-level shm name ('/' + name) after checking `name` is a plain /dev/shm file name."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise UsageError(f"ring name must match [A-Za-z0-9._-]+, got {name!r}")
    if len(name) > MAX_RING_NAME_SIZE:
        raise LimitExceeded("MAX_RING_NAME_SIZE", len(name), MAX_RING_NAME_SIZE)
    return "/" + name


def _check_timeout_ms(timeout_ms: int | None) -> float | None:
    """The absolute monotonic deadline in seconds for `timeout_ms` (None = wait forever)."""
    if timeout_ms is None:
        return None
    if not isinstance(timeout_ms, int) or timeout_ms < 0:
        raise UsageError(f"timeout_ms must be an int >= 0 or None, got {timeout_ms!r}")
    return time.monotonic() + timeout_ms / 1000


def _check_batch(max_count: int) -> None:
    if not isinstance(max_count, int) or not 1 <= max_count <= MAX_RING_BATCH_MESSAGES:
        raise UsageError(f"max_count must be an int in [1, {MAX_RING_BATCH_MESSAGES}], "
                         f"got {max_count!r}")


def _drain_eventfd(fd: int) -> None:
    """Reset an eventfd's counter; a zero counter (EAGAIN) is fine: the wake-up was spurious."""
    try:
        os.read(fd, _EVENTFD_READ_SIZE)
    except BlockingIOError:
        pass


def _new_eventfd() -> int:
    # Non-blocking so a drain never blocks; CLOEXEC so only children given pass_fds inherit it.
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(frozen=True)
class RingSpec:
    """What a child process needs to attach to a ring: its name and the inherited fd numbers.

    `shm_fd` is -1 when the child should attach by name instead of by fd.
    """

    name: str
    shm_fd: int
    data_fd: int
    space_fd: int

    def to_arg(self) -> str:
        """A compact text for argv: `name,shm_fd,data_fd,space_fd`."""
        return f"{self.name},{self.shm_fd},{self.data_fd},{self.space_fd}"

    @classmethod
    def from_arg(cls, text: str) -> RingSpec:
        """Parse `to_arg()` output; raises UsageError on anything else."""
        parts = text.split(",")
        if len(parts) != 4:
            raise UsageError(f"ring spec must be 'name,shm_fd,data_fd,space_fd', got {text!r}")
        try:
            shm_fd, data_fd, space_fd = (int(p) for p in parts[1:])
        except ValueError:
            raise UsageError(f"ring spec fds must be integers, got {text!r}") from None
        _check_name(parts[0])
        if shm_fd < -1 or data_fd < 0 or space_fd < 0:
            raise UsageError(f"ring spec fds out of range: {text!r}")
        return cls(parts[0], shm_fd, data_fd, space_fd)


class Ring:
    """One direction of the shared-memory channel. Build with `create`, `attach` or `attach_spec`.

    The object owns its eventfds (and the shm fd while it keeps one) and closes them in `close()`.
    """

    def __init__(self, segment: _ring.Segment, name: str, data_fd: int, space_fd: int) -> None:
        """Private: use the class methods. Takes ownership of `segment`, `data_fd`, `space_fd`."""
        self._segment = segment
        self._name = name
        self._data_fd = data_fd
        self._space_fd = space_fd
        self._getter_waiting = False
        self._putter_waiting = False
        self._fds_closed = False
        # fd -> the loop watching it and the future a waiter sleeps on, so close() can unregister
        # the fd before closing it (epoll would keep watching the eventfd, which the peer still
        # holds open) and fail the waiter instead of leaving it asleep forever.
        self._async_waits: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = {}
        # The loop of a persistent reader (`start_reader`), if one is installed.
        self._reader_loop: asyncio.AbstractEventLoop | None = None
        try:
            segment.set_wake_fds(data_fd, space_fd)
        except BaseException:
            self.close()
            raise

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, capacity_bytes: int = DEFAULT_RING_CAPACITY_SIZE, *,
               max_message_size: int | None = None) -> Ring:
        """Create the ring `/dev/shm/<name>` and its two eventfds.

        `capacity_bytes`: multiple of 8 in [MIN_RING_CAPACITY_SIZE, MAX_RING_CAPACITY_SIZE].
        `max_message_size`: largest payload; defaults to min(MAX_RING_MESSAGE_SIZE, capacity - 8)
        and may be at most capacity - 8 (one record header). Raises UsageError on bad arguments,
        FileExistsError if the name is taken. The caller must `unlink()` the name (as soon as the
        peer has the shm fd or has attached) and `close()` the ring.
        """
        shm_name = _check_name(name)
        if (not isinstance(capacity_bytes, int) or capacity_bytes % RING_CAPACITY_ALIGN_SIZE
                or not MIN_RING_CAPACITY_SIZE <= capacity_bytes <= MAX_RING_CAPACITY_SIZE):
            raise UsageError(
                f"capacity_bytes must be a multiple of {RING_CAPACITY_ALIGN_SIZE} in "
                f"[{MIN_RING_CAPACITY_SIZE}, {MAX_RING_CAPACITY_SIZE}], got {capacity_bytes!r}")
        limit = capacity_bytes - RECORD_HEADER_SIZE
        if max_message_size is None:
            max_message_size = min(MAX_RING_MESSAGE_SIZE, limit)
        if not isinstance(max_message_size, int) or not 0 <= max_message_size <= limit:
            raise UsageError(f"max_message_size must be an int in [0, {limit}] for a ring of "
                             f"{capacity_bytes} bytes, got {max_message_size!r}")
        segment = _ring.create(shm_name, capacity_bytes, max_message_size)
        try:
            data_fd = _new_eventfd()
            try:
                space_fd = _new_eventfd()
            except BaseException:
                os.close(data_fd)
                raise
        except BaseException:
            segment.close()
            _ring.unlink(shm_name)
            raise
        return cls(segment, name, data_fd, space_fd)

    @classmethod
    def attach(cls, name: str, *, data_fd: int, space_fd: int) -> Ring:
        """Attach to the existing ring `/dev/shm/<name>`, taking ownership of the two eventfds.

        Raises FileNotFoundError if there is no such ring, UsageError if it is not an Aspen ring
        (bad magic, version or header) or the fds are not open.
        """
        shm_name = _check_name(name)
        for fd in (data_fd, space_fd):
            if not isinstance(fd, int) or fd < 0:
                raise UsageError(f"eventfds must be ints >= 0, got {fd!r}")
        return cls(_ring.attach(shm_name), name, data_fd, space_fd)

    @classmethod
    def attach_spec(cls, spec: RingSpec) -> Ring:
        """Attach a ring described by `spec` (fds inherited via pass_fds), taking ownership of them.

        The inherited shm fd is closed once mapped. Falls back to attach by name if shm_fd is -1.
        """
        if spec.shm_fd < 0:
            return cls.attach(spec.name, data_fd=spec.data_fd, space_fd=spec.space_fd)
        _check_name(spec.name)
        try:
            segment = _ring.attach_fd(spec.shm_fd)
        finally:
            os.close(spec.shm_fd)
        return cls(segment, spec.name, spec.data_fd, spec.space_fd)

    def spec(self) -> RingSpec:
        """What a child needs to attach (pass `inheritable_fds()` to it with Popen's pass_fds)."""
        return RingSpec(self._name, self._segment.shm_fd, self._data_fd, self._space_fd)

    def inheritable_fds(self) -> tuple[int, ...]:
        """The fds a child must inherit to attach with `spec()`."""
        shm_fd = self._segment.shm_fd
        fds = (self._data_fd, self._space_fd)
        return (shm_fd, *fds) if shm_fd >= 0 else fds

    def close_shm_fd(self) -> None:
        """Close the shm fd kept for a child, once the child has it; the mapping stays valid."""
        self._segment.close_shm_fd()

    # ---- properties ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def capacity_bytes(self) -> int:
        return self._segment.capacity_bytes

    @property
    def max_message_size(self) -> int:
        """Largest payload in bytes; larger messages raise LimitExceeded."""
        return self._segment.max_message_size

    @property
    def depth_bytes(self) -> int:
        """Bytes in the ring now, record headers and padding included (a metric, racy by nature)."""
        return self._segment.depth_bytes

    @property
    def pending(self) -> int:
        """Messages put and not yet taken (a metric, racy by nature)."""
        return self._segment.pending

    @property
    def attach_count(self) -> int:
        """How many times a peer attached; the creator may unlink once it is >= 1."""
        return self._segment.attach_count

    @property
    def wake_error_count(self) -> int:
        """eventfd writes that failed (other than a saturated counter); should stay 0."""
        return self._segment.wake_error_count

    @property
    def closed(self) -> bool:
        return self._segment.closed

    @property
    def is_zero_copy(self) -> bool:
        """True if `try_peek` never copies (capacity is a multiple of the page size)."""
        return self._segment.mirrored

    @property
    def shm_fd(self) -> int:
        """The segment's fd kept for passing to a child (-1 once `close_shm_fd()` or attached)."""
        return self._segment.shm_fd

    @property
    def data_fd(self) -> int:
        """eventfd that becomes readable when the consumer may have messages."""
        return self._data_fd

    @property
    def space_fd(self) -> int:
        """eventfd that becomes readable when a waiting producer may have space."""
        return self._space_fd

    def fileno(self) -> int:
        """The consumer's wake-up fd (`data_fd`), for select/poll/epoll or `loop.add_reader`.

        Readiness is a hint: call `arm_get_wait()` before sleeping on it, drain it after.
        """
        return self._data_fd

    # ---- non-blocking -------------------------------------------------------------------------

    def try_put(self, data: BytesLike) -> bool:
        """Copy `data` into the ring; False (nothing written) if it does not fit right now.

        Raises LimitExceeded if len(data) > max_message_size, UsageError if closed.
        """
        return self._segment.try_put(data)

    def try_put_many(self, items: Sequence[BytesLike]) -> int:
        """Copy a list/tuple of messages in order, as many as fit; return how many were written.

        The consumer is woken at most once per call. All sizes are checked first: one message over
        max_message_size raises LimitExceeded and nothing is written.
        """
        return self._segment.try_put_many(items)

    def try_get(self) -> bytes | None:
        """The oldest message, or None if the ring is empty (b"" is a valid 0-byte message)."""
        return self._segment.try_get()

    def try_get_many(self, max_count: int = MAX_RING_BATCH_MESSAGES) -> list[bytes]:
        """Up to `max_count` oldest messages (maybe none); the producer is woken at most once."""
        _check_batch(max_count)
        return self._segment.try_get_many(max_count)

    def try_peek(self) -> memoryview | None:
        """A read-only view of the oldest message without taking it; None if the ring is empty.

        Zero-copy: on a ring whose capacity is a multiple of the page size (the default), the
        view points into shared memory (the data area is mapped twice, so even a record split at
        the end is contiguous); otherwise a split record is copied. Decode from the view, release
        it (`with view:` or `view.release()`), then `consume()`. Holding it blocks `consume()`.
        """
        return self._segment.peek()

    def consume(self) -> None:
        """Take the message `try_peek` showed (frees its space for the producer).

        Raises UsageError if the ring is empty or a view from `try_peek` is still held.
        """
        self._segment.consume()

    def arm_get_wait(self) -> bool:
        """Announce the consumer may sleep on `fileno()`; True = data already there, don't sleep."""
        return self._segment.arm_get_wait()

    def arm_put_wait(self, size_bytes: int) -> bool:
        """Announce the producer may sleep on `space_fd`; True = `size_bytes` fits now."""
        return self._segment.arm_put_wait(size_bytes)

    # ---- blocking (for the worker's plain loop) -----------------------------------------------

    def _wait_fd_blocking(self, fd: int, deadline_s: float | None) -> bool:
        """Sleep until `fd` is readable or the deadline passes; False on timeout."""
        if deadline_s is None:
            poll_ms = -1
        else:
            poll_ms = max(0, int((deadline_s - time.monotonic()) * 1000 + 0.999))
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ready = poller.poll(poll_ms)
        if ready:
            _drain_eventfd(fd)
        return bool(ready)

    def get_blocking(self, timeout_ms: int | None = None) -> bytes | None:
        """The oldest message, waiting up to `timeout_ms` (None = forever); None on timeout."""
        batch = self.get_many_blocking(1, timeout_ms)
        return batch[0] if batch else None

    def get_many_blocking(self, max_count: int = MAX_RING_BATCH_MESSAGES,
                          timeout_ms: int | None = None) -> list[bytes]:
        """At least one and up to `max_count` messages, waiting up to `timeout_ms`; [] on timeout."""
        _check_batch(max_count)
        deadline_s = _check_timeout_ms(timeout_ms)
        while True:
            batch = self._segment.try_get_many(max_count)
            if batch:
                return batch
            if self._segment.arm_get_wait():
                continue
            if deadline_s is not None and time.monotonic() >= deadline_s:
                return []
            self._wait_fd_blocking(self._data_fd, deadline_s)

    def peek_blocking(self, timeout_ms: int | None = None) -> memoryview | None:
        """`try_peek`, waiting up to `timeout_ms` (None = forever) for a message; None on timeout."""
        deadline_s = _check_timeout_ms(timeout_ms)
        while True:
            view = self._segment.peek()
            if view is not None:
                return view
            if self._segment.arm_get_wait():
                continue
            if deadline_s is not None and time.monotonic() >= deadline_s:
                return None
            self._wait_fd_blocking(self._data_fd, deadline_s)

    def put_blocking(self, data: BytesLike, timeout_ms: int | None = None) -> bool:
        """Copy `data` in, waiting up to `timeout_ms` (None = forever) for space; False on timeout.

        Raises LimitExceeded at once for an oversized message, even when the ring is full.
        """
        deadline_s = _check_timeout_ms(timeout_ms)
        size_bytes = memoryview(data).nbytes
        while True:
            if self._segment.try_put(data):
                return True
            if self._segment.arm_put_wait(size_bytes):
                continue
            if deadline_s is not None and time.monotonic() >= deadline_s:
                return False
            self._wait_fd_blocking(self._space_fd, deadline_s)

    def put_many_blocking(self, items: Sequence[BytesLike], timeout_ms: int | None = None) -> int:
        """Copy all `items` (list/tuple) in order, waiting for space as needed, up to `timeout_ms`.

        Returns how many were written: len(items) unless the time ran out (then a prefix was
        written; retry the rest). Sizes are all checked first (LimitExceeded, nothing written).
        """
        deadline_s = _check_timeout_ms(timeout_ms)
        written = self._segment.try_put_many(items)
        while written < len(items):
            if not self._segment.arm_put_wait(memoryview(items[written]).nbytes):
                if deadline_s is not None and time.monotonic() >= deadline_s:
                    return written
                self._wait_fd_blocking(self._space_fd, deadline_s)
            written += self._segment.try_put_many(items[written:])
        return written

    # ---- asyncio ------------------------------------------------------------------------------

    async def _wait_fd(self, fd: int, deadline_s: float | None) -> None:
        """Wait until `fd` is readable (TimeoutError after the deadline), then drain it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _set_result, future)
        self._async_waits[fd] = (loop, future)
        try:
            if deadline_s is None:
                await future
            else:
                async with asyncio.timeout(max(0.0, deadline_s - time.monotonic())):
                    await future
        finally:
            if self._async_waits.pop(fd, None) is not None:
                loop.remove_reader(fd)
        _drain_eventfd(fd)

    async def get(self, timeout_ms: int | None = None) -> bytes:
        """The oldest message, waiting (without blocking the loop) up to `timeout_ms`.

        Raises TimeoutError when the time is up, UsageError if another coroutine already waits.
        """
        message = self._segment.try_get()
        if message is not None:
            return message
        return (await self.get_many(1, timeout_ms))[0]

    async def get_many(self, max_count: int = MAX_RING_BATCH_MESSAGES,
                       timeout_ms: int | None = None) -> list[bytes]:
        """At least one and up to `max_count` messages; TimeoutError after `timeout_ms`."""
        _check_batch(max_count)
        deadline_s = _check_timeout_ms(timeout_ms)
        self._check_single_consumer()
        self._getter_waiting = True
        try:
            while True:
                batch = self._segment.try_get_many(max_count)
                if batch:
                    return batch
                if not self._segment.arm_get_wait():
                    await self._wait_fd(self._data_fd, deadline_s)
        finally:
            self._getter_waiting = False

    async def peek(self, timeout_ms: int | None = None) -> memoryview:
        """`try_peek`, waiting up to `timeout_ms` for a message (TimeoutError after)."""
        view = self._segment.peek()
        if view is not None:
            return view
        deadline_s = _check_timeout_ms(timeout_ms)
        self._check_single_consumer()
        self._getter_waiting = True
        try:
            while True:
                view = self._segment.peek()
                if view is not None:
                    return view
                if not self._segment.arm_get_wait():
                    await self._wait_fd(self._data_fd, deadline_s)
        finally:
            self._getter_waiting = False

    def _check_single_consumer(self) -> None:
        if self._getter_waiting:
            raise UsageError("ring is single-consumer: another coroutine is already waiting in get")
        if self._reader_loop is not None:
            raise UsageError("ring is single-consumer: a persistent reader is installed")

    def start_reader(self, on_batch: Callable[[list[bytes]], None],
                     max_count: int = MAX_RING_BATCH_MESSAGES) -> None:
        """Hand every message to `on_batch` (in order, in batches) from the running loop, until
        `stop_reader()` or `close()`.

        Cheaper than awaiting `get_many` in a task: the eventfd stays registered with the loop
        (no add/remove of the reader per wait: that was 6 epoll_ctl calls per wake-up under
        uvloop) and the batch is handled in the reader callback itself, without waking a task.
        At most `MAX_READER_BATCHES_PER_WAKE` batches per callback, then the rest is taken in a
        later loop turn, so a busy producer cannot starve the loop. `on_batch` must not block;
        an exception from it is logged and the reader carries on with the next batch.
        """
        _check_batch(max_count)
        self._check_single_consumer()
        loop = asyncio.get_running_loop()
        self._reader_loop = loop
        fd = self._data_fd

        def on_readable() -> None:
            if self._reader_loop is not loop:
                return  # stopped while a follow-up turn was scheduled
            _drain_eventfd(fd)
            for _ in range(MAX_READER_BATCHES_PER_WAKE):
                batch = self._segment.try_get_many(max_count)
                if batch:
                    try:
                        on_batch(batch)
                    except Exception:  # one bad batch must not stop the channel
                        logger.exception("ring %s: reader callback failed", self._name)
                    if self._reader_loop is not loop:
                        return  # the callback stopped the reader (or closed the ring)
                    continue
                if not self._segment.arm_get_wait():
                    return  # empty and armed: the producer's next put signals the eventfd
            loop.call_soon(on_readable)

        loop.add_reader(fd, on_readable)
        loop.call_soon(on_readable)  # messages put before the reader existed

    def stop_reader(self) -> None:
        """Remove the reader installed by `start_reader` (idempotent)."""
        loop, self._reader_loop = self._reader_loop, None
        if loop is not None and not self._fds_closed and not loop.is_closed():
            loop.remove_reader(self._data_fd)

    async def put(self, data: BytesLike, timeout_ms: int | None = None) -> None:
        """Copy `data` in, waiting for space (backpressure) up to `timeout_ms`.

        Raises LimitExceeded at once if oversized, TimeoutError when the time is up (nothing was
        written then), UsageError if another coroutine already waits in put.
        """
        if self._segment.try_put(data):
            return
        await self.put_many([data], timeout_ms)

    async def put_many(self, items: Sequence[BytesLike], timeout_ms: int | None = None) -> None:
        """Copy all `items` in order, waiting for space as needed, up to `timeout_ms` in total.

        On TimeoutError a prefix of `items` may have been written (FIFO order is kept); the
        number written is in the exception's `written_count` attribute.
        """
        deadline_s = _check_timeout_ms(timeout_ms)
        if self._putter_waiting:
            raise UsageError("ring is single-producer: another coroutine is already waiting in put")
        self._putter_waiting = True
        written = 0
        pending = items if isinstance(items, (list, tuple)) else list(items)
        try:
            while True:
                written += self._segment.try_put_many(pending[written:] if written else pending)
                if written >= len(pending):
                    return
                if self._segment.arm_put_wait(memoryview(pending[written]).nbytes):
                    continue
                try:
                    await self._wait_fd(self._space_fd, deadline_s)
                except TimeoutError as exc:
                    exc.written_count = written  # type: ignore[attr-defined]
                    raise
        finally:
            self._putter_waiting = False

    # ---- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap the ring and close its fds. Idempotent. Does not unlink the name.

        A coroutine waiting in get/put (on this thread's loop) gets UsageError("ring closed").
        """
        self.stop_reader()
        for fd, (loop, future) in list(self._async_waits.items()):
            del self._async_waits[fd]
            loop.remove_reader(fd)
            if not future.done():
                future.set_exception(UsageError("ring closed while waiting"))
        self._segment.close()
        if not self._fds_closed:
            self._fds_closed = True
            for fd in (self._data_fd, self._space_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass  # already closed by its owner; close() must stay idempotent

    def unlink(self) -> bool:
        """Remove `/dev/shm/<name>`; mappings and fds stay valid. Idempotent: False if already gone."""
        return _ring.unlink("/" + self._name)

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        # A forgotten close() must not leak fds; the segment unmaps itself when collected.
        if not getattr(self, "_fds_closed", True):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"pending={self.pending} depth_bytes={self.depth_bytes}"
        return f"<Ring {self._name} capacity_bytes={self.capacity_bytes} {state}>"


class RingPair:
    """The two rings of a duplex channel, seen from one side: send on `tx`, receive on `rx`.

    The creator's `tx` is the ring named `<prefix>.down`, its `rx` is `<prefix>.up`; the attaching
    side gets them swapped, so both sides just use `tx` and `rx`.
    """

    def __init__(self, tx: Ring, rx: Ring) -> None:
        self.tx = tx
        self.rx = rx

    @classmethod
    def create(cls, name_prefix: str, capacity_bytes: int = DEFAULT_RING_CAPACITY_SIZE, *,
               max_message_size: int | None = None) -> RingPair:
        """Create `<name_prefix>.down` (tx) and `<name_prefix>.up` (rx); see `Ring.create`."""
        tx = Ring.create(f"{name_prefix}.down", capacity_bytes, max_message_size=max_message_size)
        try:
            rx = Ring.create(f"{name_prefix}.up", capacity_bytes, max_message_size=max_message_size)
        except BaseException:
            tx.unlink()
            tx.close()
            raise
        return cls(tx, rx)

    def spec_arg(self) -> str:
        """One argv word describing both rings for the peer (`attach_arg` parses it)."""
        return f"{self.tx.spec().to_arg()};{self.rx.spec().to_arg()}"

    @classmethod
    def attach_arg(cls, text: str) -> RingPair:
        """The peer's side of a pair from `spec_arg()`: tx and rx swapped. Owns the fds after."""
        parts = text.split(";")
        if len(parts) != 2:
            raise UsageError(f"ring pair spec must be 'down_spec;up_spec', got {text!r}")
        down_spec, up_spec = (RingSpec.from_arg(p) for p in parts)
        down = Ring.attach_spec(down_spec)
        try:
            up = Ring.attach_spec(up_spec)
        except BaseException:
            down.close()
            raise
        return cls(tx=up, rx=down)

    def inheritable_fds(self) -> tuple[int, ...]:
        """All fds the peer must inherit (Popen pass_fds)."""
        return self.tx.inheritable_fds() + self.rx.inheritable_fds()

    def close_shm_fds(self) -> None:
        """Close the shm fds kept for the peer once it has its copies."""
        self.tx.close_shm_fd()
        self.rx.close_shm_fd()

    def unlink(self) -> None:
        """Remove both names (idempotent); the rings keep working."""
        self.tx.unlink()
        self.rx.unlink()

    def close(self) -> None:
        """Close both rings (idempotent)."""
        self.tx.close()
        self.rx.close()

    def __enter__(self) -> RingPair:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def create_duplex(name_prefix: str, capacity_bytes: int = DEFAULT_RING_CAPACITY_SIZE) -> RingPair:
    """Shorthand for `RingPair.create(name_prefix, capacity_bytes)`."""
    return RingPair.create(name_prefix, capacity_bytes)


__all__ = [
    "DEFAULT_RING_CAPACITY_SIZE",
    "MAX_RING_MESSAGE_SIZE",
    "MIN_RING_CAPACITY_SIZE",
    "MAX_RING_CAPACITY_SIZE",
    "MAX_RING_BATCH_MESSAGES",
    "MAX_RING_NAME_SIZE",
    "RING_ENVELOPE_SIZE",
    "RECORD_HEADER_SIZE",
    "RingCorrupted",
    "Ring",
    "RingPair",
    "RingSpec",
    "create_duplex",
]
