"""The Raft worker process: `python -m aspen.worker_process ...`, spawned by the I/O process.

It attaches the two rings the I/O process created (commands in, replies out), says `Ready`, and
serves messages until told to shut down. It must never outlive its parent: it asks the kernel
for SIGTERM when the parent dies (PR_SET_PDEATHSIG), checks that the parent did not die before
that request took effect, and polls `getppid()` as a fallback, so a SIGKILLed I/O process leaves
no orphan worker.

It answers Ping, Echo and StatusRequest itself and hands everything else to the Raft driver
(`aspen.raft.worker.RaftWorker`).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import random
import signal
import sys
import time

from aspen import worker_messages as wm
from aspen.errors import WireDecodeError
from aspen.clock import MonotonicClock
from aspen.raft.config import RaftConfig
from aspen.raft.memory_storage import MemoryStorage
from aspen.raft.storage import DurableStorage
from aspen.raft.types import RaftStorage
from aspen.raft.worker import RaftWorker
from aspen.ring import MAX_RING_BATCH_MESSAGES, Ring, RingPair

logger = logging.getLogger("aspen.worker")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_INTERVAL_MS = 200  # how often an idle worker wakes to check its parent (and tick Raft)
REPLY_PUT_TIMEOUT_MS = 5_000  # a reply that cannot be queued this long means the parent is stuck


def _ask_for_parent_death_signal(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:  # not Linux: the getppid() poll below still catches it
        pass
    if os.getppid() != parent_pid:
        # The parent died between fork and prctl: the signal will never come.
        sys.exit(0)


class Worker:
    """Serves the ring protocol. Single-threaded; `serve()` returns the process exit code.

    Each turn drains up to MAX_RING_BATCH_MESSAGES inbound messages, feeds them to the Raft
    driver, ticks it when due, pumps its Ready loop once (so every write drained in this turn
    shares one fsync: group commit), and puts all replies on the outbound ring in one batch.
    """

    def __init__(self, inbox: Ring, outbox: Ring, *, parent_pid: int, incarnation: int,
                 raft: RaftWorker | None = None, clock: MonotonicClock | None = None) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._parent_pid = parent_pid
        self._incarnation = incarnation
        self._started_unix_ms = time.time_ns() // 1_000_000
        self._handled = 0
        self._stopping = False
        self._raft = raft
        self._clock = clock or MonotonicClock()

    def _reply_all(self, messages: list[wm.FromWorker]) -> None:
        if not messages:
            return
        encoded = [wm.encode(m) for m in messages]
        written = self._outbox.put_many_blocking(encoded, timeout_ms=REPLY_PUT_TIMEOUT_MS)
        if written != len(encoded):
            # The I/O process stopped reading: nothing sensible is left to do here. Raft state
            # is on disk; the supervisor restarts us if our parent is still alive.
            raise SystemExit(f"outbound ring stuck for {REPLY_PUT_TIMEOUT_MS} ms; exiting")

    def reply_now(self, messages: list[wm.FromWorker]) -> None:
        """Put messages on the outbound ring at once (a leader's appends ahead of its fsync)."""
        self._reply_all(messages)

    def handle(self, message: wm.ToWorker, now_ms: int) -> list[wm.FromWorker]:
        match message:
            case wm.Ping(request_id=rid):
                return [wm.Pong(rid)]
            case wm.Echo(request_id=rid, payload=payload):
                return [wm.EchoReply(rid, payload)]
            case wm.StatusRequest(request_id=rid):
                return [wm.StatusReply(rid, os.getpid(), self._incarnation, self._started_unix_ms, self._handled)]
            case wm.Shutdown():
                self._stopping = True
                return []
            case _:
                if self._raft is None:
                    rid = getattr(message, "request_id", 0)
                    return [wm.ErrorReply(rid, "this worker runs no Raft node", 503)]
                return self._raft.handle(message, now_ms)

    def _wait_ms(self) -> int:
        if self._raft is None:
            return POLL_INTERVAL_MS
        until_deadline = self._raft.next_deadline_ms() - self._clock.now_ms()
        return max(0, min(POLL_INTERVAL_MS, until_deadline))

    def serve(self) -> int:
        self._reply_all([wm.Ready(os.getpid(), self._incarnation)])
        while not self._stopping:
            batch = self._inbox.get_many_blocking(MAX_RING_BATCH_MESSAGES, timeout_ms=self._wait_ms())
            now_ms = self._clock.now_ms()
            replies: list[wm.FromWorker] = []
            for data in batch:
                self._handled += 1
                try:
                    message = wm.decode_to_worker(data)
                except WireDecodeError as exc:
                    logger.error("dropping undecodable message: %s", exc)
                    continue
                replies.extend(self.handle(message, now_ms))
            if self._raft is not None:
                if self._raft.next_deadline_ms() <= now_ms:
                    self._raft.tick(now_ms)
                replies.extend(self._raft.pump(now_ms))
            self._reply_all(replies)
            if not batch and os.getppid() != self._parent_pid:
                logger.warning("parent %d is gone; exiting", self._parent_pid)
                return 0
        return 0


def build_raft(ns: argparse.Namespace) -> RaftWorker | None:
    """The Raft driver for this node, or None when started without a data dir (tests)."""
    if ns.data_dir is None:
        return None
    config = RaftConfig(node_id=ns.node_id, heartbeat_interval_ms=ns.heartbeat_interval_ms,
                        election_timeout_min_ms=ns.election_timeout_min_ms,
                        election_timeout_max_ms=ns.election_timeout_max_ms,
                        snapshot_interval_entries=ns.snapshot_every_entries,
                        snapshot_keep_entries=ns.snapshot_keep_entries)
    storage: RaftStorage
    if ns.storage_backend == "inmemory":
        storage = MemoryStorage()
    else:
        storage = DurableStorage(os.path.join(ns.data_dir, "raft"))
    return RaftWorker(config, storage, rng=random.Random())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aspen-worker")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--incarnation", type=int, required=True)
    parser.add_argument("--rings", required=True, help="ring pair spec from RingPair.spec_arg()")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--node-id", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=500)
    parser.add_argument("--election-timeout-min-ms", type=int, default=1500)
    parser.add_argument("--election-timeout-max-ms", type=int, default=3000)
    parser.add_argument("--snapshot-every-entries", type=int, default=10_000)
    parser.add_argument("--snapshot-keep-entries", type=int, default=1000)
    parser.add_argument("--storage-backend", default="disk", choices=("disk", "inmemory"))
    ns = parser.parse_args(argv)
    logging.basicConfig(level=ns.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s")
    _ask_for_parent_death_signal(ns.parent_pid)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the I/O process, which stops us
    pair = RingPair.attach_arg(ns.rings)
    inbox, outbox = pair.rx, pair.tx
    try:
        raft = build_raft(ns)
        worker = Worker(inbox, outbox, parent_pid=ns.parent_pid, incarnation=ns.incarnation, raft=raft)
        if raft is not None:
            raft.send_now = worker.reply_now
        return worker.serve()
    finally:
        pair.close()


if __name__ == "__main__":
    sys.exit(main())
