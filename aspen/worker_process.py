"""The Raft worker process: `python -m aspen.worker_process ...`, spawned by the I/O process.

It attaches the two rings the I/O process created (commands in, replies out), says `Ready`, and
serves messages until told to shut down. It must never outlive its parent: it asks the kernel
for SIGTERM when the parent dies (PR_SET_PDEATHSIG), checks that the parent did not die before
that request took effect, and polls `getppid()` as a fallback, so a SIGKILLed I/O process leaves
no orphan worker.

Until the Raft core is wired in, the worker answers Ping, Echo and StatusRequest; the Raft
driver plugs in through `MessageHandler`.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from aspen import worker_messages as wm
from aspen.errors import WireDecodeError
from aspen.ring import Ring, RingPair

logger = logging.getLogger("aspen.worker")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_INTERVAL_MS = 200  # how often an idle worker wakes to check its parent (and tick Raft)
REPLY_PUT_TIMEOUT_MS = 5_000  # a reply that cannot be queued this long means the parent is stuck

MessageHandler = Callable[[wm.ToWorker], "wm.FromWorker | None"]


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
    """Serves the ring protocol. Single-threaded; `serve()` returns the process exit code."""

    def __init__(self, inbox: Ring, outbox: Ring, *, parent_pid: int, incarnation: int) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._parent_pid = parent_pid
        self._incarnation = incarnation
        self._started_unix_ms = time.time_ns() // 1_000_000
        self._handled = 0
        self._stopping = False

    def _reply(self, message: wm.FromWorker) -> None:
        self._outbox.put_blocking(wm.encode(message), timeout_ms=REPLY_PUT_TIMEOUT_MS)

    def handle(self, message: wm.ToWorker) -> wm.FromWorker | None:
        match message:
            case wm.Ping(request_id=rid):
                return wm.Pong(rid)
            case wm.Echo(request_id=rid, payload=payload):
                return wm.EchoReply(rid, payload)
            case wm.StatusRequest(request_id=rid):
                return wm.StatusReply(rid, os.getpid(), self._incarnation, self._started_unix_ms, self._handled)
            case wm.Shutdown():
                self._stopping = True
                return None
            case wm.Crash(exit_code=code):
                os._exit(code)  # on purpose: no cleanup, like a real crash
            case _:
                raise AssertionError(f"unhandled {message!r}")

    def serve(self) -> int:
        self._reply(wm.Ready(os.getpid(), self._incarnation))
        while not self._stopping:
            data = self._inbox.get_blocking(timeout_ms=POLL_INTERVAL_MS)
            if data is None:
                if os.getppid() != self._parent_pid:
                    logger.warning("parent %d is gone; exiting", self._parent_pid)
                    return 0
                continue
            self._handled += 1
            try:
                message = wm.decode_to_worker(data)
            except WireDecodeError as exc:
                logger.error("dropping undecodable message: %s", exc)
                continue
            reply = self.handle(message)
            if reply is not None:
                self._reply(reply)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aspen-worker")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--incarnation", type=int, required=True)
    parser.add_argument("--rings", required=True, help="ring pair spec from RingPair.spec_arg()")
    parser.add_argument("--log-level", default="info")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=ns.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _ask_for_parent_death_signal(ns.parent_pid)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the I/O process, which stops us
    pair = RingPair.attach_arg(ns.rings)
    inbox, outbox = pair.rx, pair.tx
    worker = Worker(inbox, outbox, parent_pid=ns.parent_pid, incarnation=ns.incarnation)
    try:
        return worker.serve()
    finally:
        pair.close()


if __name__ == "__main__":
    sys.exit(main())
