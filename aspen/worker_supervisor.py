"""Spawns the Raft worker process, talks to it over two rings, and restarts it when it dies.

Each worker incarnation gets two fresh rings (commands in, replies out). Their shared-memory
names are unlinked as soon as they are created and the segments reach the child as inherited
file descriptors, so nothing is ever left in /dev/shm — not even if this process is SIGKILLed.
The child's exit is seen at once through a pidfd registered in the event loop. A dead worker is
restarted with exponential backoff (bounded by `WORKER_RESTART_BACKOFF_MAX_MS`); requests that
were in flight fail with `WorkerUnavailable`, and callers retry — the worker recovers its state
from disk.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from aspen.child_process import python_module_command
from aspen import worker_messages as wm
from aspen.errors import AspenError, LimitExceeded
from aspen.ring import Ring, RingPair

logger = logging.getLogger(__name__)

WORKER_READY_TIMEOUT_MS = 30_000  # Python start-up + imports on a loaded 2-core machine
WORKER_REQUEST_TIMEOUT_MS = 10_000
WORKER_STOP_TIMEOUT_MS = 5_000  # after Shutdown, before SIGTERM; then as long again before SIGKILL
WORKER_RESTART_BACKOFF_INITIAL_MS = 100
WORKER_RESTART_BACKOFF_MAX_MS = 10_000  # the bound on the exponential backoff
WORKER_STABLE_AFTER_MS = 30_000  # a worker that lived this long resets the backoff
MAX_PENDING_WORKER_REQUESTS = 10_000  # guess: revisit; bounds the reply-future map
WORKER_MODULE = "aspen.worker_process"


class WorkerUnavailable(AspenError):
    """The worker is down (restarting) or did not answer in time; retry later."""


class WorkerSupervisor:
    """Owns the worker process and the two rings. Lives in the I/O process's event loop."""

    def __init__(self, *, registry: CollectorRegistry, log_level: str = "info",
                 extra_args: list[str] | None = None,
                 on_unsolicited: Callable[[wm.FromWorker], None] | None = None) -> None:
        self._log_level = log_level
        self._extra_args = extra_args or []
        # Messages that answer no request (StateUpdate, RaftSendBatch) go here.
        self.on_unsolicited = on_unsolicited
        self._incarnation = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._inbox: Ring | None = None  # we put, worker gets
        self._outbox: Ring | None = None  # worker puts, we get
        self._restart_task: asyncio.Task[None] | None = None
        self._pidfd: int | None = None
        self._ready: asyncio.Future[wm.Ready] | None = None
        self._pending: dict[int, asyncio.Future[wm.FromWorker]] = {}
        self._request_ids = itertools.count(1)
        # Everything sent to the worker during one loop turn goes into the ring as one write at
        # the end of the turn: one wake-up of the worker (and so one pump, one fsync) for all
        # the HTTP requests, forwarded batches and Raft messages the turn brought, instead of
        # one per sender. If the ring is full, the rest waits in `_backlog` (FIFO: later sends
        # queue behind it) until a drain task has written it; senders then wait for that.
        self._turn: list[bytes] = []
        self._turn_scheduled = False
        self._backlog: list[bytes] | None = None
        self._backlog_done: asyncio.Future[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._stopping = False
        self._started_monotonic = 0.0
        self._backoff_ms = WORKER_RESTART_BACKOFF_INITIAL_MS
        self.restarts = 0
        self._m_restarts = Counter("aspen_worker_restarts", "Raft worker process restarts",
                                   registry=registry)
        self._m_up = Gauge("aspen_worker_up", "1 while the Raft worker process is serving", registry=registry)
        self._m_ring_depth = Gauge("aspen_ring_depth_bytes", "bytes queued in a worker ring",
                                   ["direction"], registry=registry)
        self._m_ring_depth.labels("to_worker").set_function(lambda: self._inbox.depth_bytes if self._inbox else 0)
        self._m_ring_depth.labels("from_worker").set_function(lambda: self._outbox.depth_bytes if self._outbox else 0)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def incarnation(self) -> int:
        return self._incarnation

    @property
    def is_up(self) -> bool:
        return self._ready is not None and self._ready.done() and not self._ready.cancelled() \
            and self._ready.exception() is None and self.pid is not None

    async def start(self) -> None:
        """Spawn the first worker and wait until it is serving (raises WorkerUnavailable if not)."""
        await self._spawn()

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        self._incarnation += 1
        pair = RingPair.create(f"aspen-{os.getpid()}-{self._incarnation}")
        # Unlink now: the child inherits the segments as fds, so no name needs to survive us.
        pair.unlink()
        args = [*python_module_command(WORKER_MODULE), "--parent-pid", str(os.getpid()),
                "--incarnation", str(self._incarnation), "--rings", pair.spec_arg(),
                "--log-level", self._log_level, *self._extra_args]
        try:
            self._proc = subprocess.Popen(args, pass_fds=pair.inheritable_fds(), stdin=subprocess.DEVNULL)
        finally:
            pair.close_shm_fds()
        self._inbox, self._outbox = pair.tx, pair.rx
        self._started_monotonic = time.monotonic()
        self._ready = loop.create_future()
        self._pidfd = os.pidfd_open(self._proc.pid)
        loop.add_reader(self._pidfd, self._on_exit)
        pair.rx.start_reader(self._dispatch_batch)
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), WORKER_READY_TIMEOUT_MS / 1000)
        except (TimeoutError, asyncio.CancelledError, WorkerUnavailable) as exc:
            raise WorkerUnavailable(f"worker incarnation {self._incarnation} did not become ready: {exc!r}") from None
        self._m_up.set(1)
        logger.info("worker ready pid=%d incarnation=%d", ready.pid, ready.incarnation)

    def _dispatch_batch(self, batch: list[bytes]) -> None:
        # Called from the ring's loop reader: one wake-up per burst (a pump answers many
        # requests at once), and no task hop between the worker's reply and its waiter.
        for data in batch:
            self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        """Decode one message from the worker and hand it to its waiter or consumer."""
        try:
            message = wm.decode_from_worker(data)
        except AspenError as exc:
            logger.error("undecodable message from worker: %s", exc)
            return
        if isinstance(message, wm.Ready):
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(message)
            return
        request_id = getattr(message, "request_id", None)
        if request_id is None:
            if self.on_unsolicited is not None:
                try:
                    self.on_unsolicited(message)
                except Exception:  # one bad consumer must not stop the reply stream
                    logger.exception("handling %s from the worker failed", type(message).__name__)
            return
        future = self._pending.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(message)


    def _on_exit(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._pidfd is not None and self._proc is not None
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        returncode = self._proc.wait()
        self._m_up.set(0)
        self._teardown_channel(WorkerUnavailable(f"worker exited with status {returncode}"))
        if self._stopping:
            return
        lived_ms = (time.monotonic() - self._started_monotonic) * 1000
        if lived_ms >= WORKER_STABLE_AFTER_MS:
            self._backoff_ms = WORKER_RESTART_BACKOFF_INITIAL_MS
        delay_ms = self._backoff_ms
        self._backoff_ms = min(self._backoff_ms * 2, WORKER_RESTART_BACKOFF_MAX_MS)
        logger.warning("worker died status=%s incarnation=%d; restarting in %d ms",
                       returncode, self._incarnation, delay_ms)
        self._restart_task = asyncio.create_task(self._restart_after(delay_ms), name="worker-restart")

    async def _restart_after(self, delay_ms: int) -> None:
        await asyncio.sleep(delay_ms / 1000)
        if self._stopping:
            return
        self.restarts += 1
        self._m_restarts.inc()
        try:
            await self._spawn()
        except WorkerUnavailable as exc:
            logger.error("worker restart failed: %s", exc)
            # _on_exit schedules the next attempt when that process dies; if it is alive but
            # never became ready, kill it so the loop continues.
            if self._proc is not None and self._proc.returncode is None:
                self._proc.kill()

    def _teardown_channel(self, error: Exception) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # mark retrieved: start() reports it, a restart logs it
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        self._turn = []
        if self._drainer is not None:
            self._drainer.cancel()  # its finally clears the backlog and releases the waiters
        for ring in (self._inbox, self._outbox):
            if ring is not None:
                ring.close()
        self._inbox = self._outbox = None

    def _register(self, count: int) -> list[tuple[int, asyncio.Future[wm.FromWorker]]]:
        """New request ids with the futures their replies will resolve (bounded, counted)."""
        if not self.is_up or self._inbox is None:
            raise WorkerUnavailable("worker is not running")
        if len(self._pending) + count > MAX_PENDING_WORKER_REQUESTS:
            raise LimitExceeded("MAX_PENDING_WORKER_REQUESTS", len(self._pending) + count,
                                MAX_PENDING_WORKER_REQUESTS)
        loop = asyncio.get_running_loop()
        out = [(next(self._request_ids), loop.create_future()) for _ in range(count)]
        self._pending.update(out)
        return out

    async def call(self, make: Callable[[int], wm.ToWorker], *,
                   timeout_ms: int = WORKER_REQUEST_TIMEOUT_MS) -> wm.FromWorker:
        """Send `make(request_id)` and wait for the reply with that id."""
        [(request_id, future)] = self._register(1)
        try:
            await self._put([wm.encode(make(request_id))], timeout_ms)
            return await asyncio.wait_for(future, timeout_ms / 1000)
        except TimeoutError:
            raise WorkerUnavailable(f"worker did not answer within {timeout_ms} ms") from None
        finally:
            self._pending.pop(request_id, None)

    async def call_many(self, makes: list[Callable[[int], wm.ToWorker]], *,
                        timeout_ms: int = WORKER_REQUEST_TIMEOUT_MS) -> list[wm.FromWorker]:
        """`call` for several requests at once, without a task per request; replies in order.
        A dead worker fails them all."""
        registered = self._register(len(makes))
        try:
            await self._put([wm.encode(make(rid)) for make, (rid, _) in zip(makes, registered)], timeout_ms)
            return list(await asyncio.wait_for(asyncio.gather(*(f for _, f in registered)), timeout_ms / 1000))
        except TimeoutError:
            raise WorkerUnavailable(f"worker did not answer within {timeout_ms} ms") from None
        finally:
            for request_id, _ in registered:
                self._pending.pop(request_id, None)

    async def send(self, message: wm.ToWorker) -> None:
        """Fire-and-forget message (Raft traffic, Shutdown); waits for ring space."""
        await self.send_many([message])

    async def send_many(self, messages: list[wm.ToWorker]) -> None:
        """Several fire-and-forget messages, in order, with at most one wake-up of the worker."""
        if self._inbox is None or not self.is_up:
            raise WorkerUnavailable("worker is not running")
        await self._put([wm.encode(m) for m in messages], WORKER_REQUEST_TIMEOUT_MS)

    async def _put(self, items: list[bytes], timeout_ms: int) -> None:
        """Queue `items` for the worker: written at the end of this loop turn, or, while the
        ring is full, after what is already waiting (then this waits until they are written)."""
        if self._inbox is None:
            raise WorkerUnavailable("worker is not running")
        if self._backlog is None:
            self._turn.extend(items)
            if not self._turn_scheduled:
                self._turn_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_turn)
            return
        self._backlog.extend(items)
        done = self._backlog_done
        assert done is not None
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout_ms / 1000)
        except TimeoutError:
            raise WorkerUnavailable(f"worker ring full for {timeout_ms} ms") from None

    def _flush_turn(self) -> None:
        self._turn_scheduled = False
        items, self._turn = self._turn, []
        inbox = self._inbox
        if inbox is None or not items:
            return  # the worker died this turn: teardown failed the waiting calls
        if self._backlog is not None:
            self._backlog.extend(items)
            return
        written = inbox.try_put_many(items)
        if written == len(items):
            return
        self._backlog = items[written:]
        self._backlog_done = asyncio.get_running_loop().create_future()
        self._drainer = asyncio.create_task(self._drain_backlog(inbox), name="worker-ring-backlog")

    async def _drain_backlog(self, inbox: Ring) -> None:
        done = self._backlog_done
        try:
            while self._backlog:
                batch, self._backlog = self._backlog, []
                await inbox.put_many(batch, timeout_ms=WORKER_REQUEST_TIMEOUT_MS)
        except TimeoutError as exc:
            written = getattr(exc, "written_count", 0)
            logger.error("worker ring full for %d ms: dropping %d queued messages (their calls time out)",
                         WORKER_REQUEST_TIMEOUT_MS, len(batch) - written + len(self._backlog or []))
        except AspenError:
            pass  # the ring was closed under us (worker died): teardown fails the waiters
        finally:
            self._backlog = None
            self._backlog_done = None
            self._drainer = None
            if done is not None and not done.done():
                done.set_result(None)

    async def stop(self) -> None:
        """Stop the worker: Shutdown, then SIGTERM, then SIGKILL, each bounded. Idempotent."""
        self._stopping = True
        if self._restart_task is not None:
            self._restart_task.cancel()
        proc = self._proc
        if proc is None or proc.returncode is not None:
            self._teardown_channel(WorkerUnavailable("stopped"))
            return
        if self._inbox is not None:
            try:
                self._inbox.try_put(wm.encode(wm.Shutdown()))
            except AspenError:
                pass
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and proc.returncode is None:
                proc.send_signal(sig)
            if await self._wait_exit(proc, WORKER_STOP_TIMEOUT_MS):
                break
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._m_up.set(0)
        self._teardown_channel(WorkerUnavailable("stopped"))

    @staticmethod
    async def _wait_exit(proc: subprocess.Popen[bytes], timeout_ms: int) -> bool:
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return True
            await asyncio.sleep(0.02)
        return proc.poll() is not None
