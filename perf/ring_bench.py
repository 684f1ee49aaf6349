"""Cross-process throughput of the shared-memory ring vs multiprocessing.Queue vs os.pipe.

The parent process is the producer, a child process the consumer, for every transport alike: the
child signals "ready", the parent starts the clock, sends COUNT messages of SIZE bytes, and stops
the clock when the child reports it has received them all. Figures are the best of --repeat runs
(the machine is shared, the best run is the least disturbed one).

Transports
  ring         aspen.ring, one try_put / get per message (put_blocking when full)
  ring-batch   aspen.ring, try_put_many / get_many_blocking with BATCH_MESSAGES per call
  ring-view    aspen.ring, consumer reads in place (peek_blocking / consume): one copy, not two
  queue        multiprocessing.Queue (pickle + pipe + feeder thread), put / get per message
  pipe         os.pipe with 4-byte big-endian length prefixes (aspen.wire framing), one write
               per frame; the reader uses a BufferedReader; pipe buffer raised to 1 MiB
  pipe-batch   the same, BATCH_MESSAGES frames joined into one write

Goals (the issue): ring >= 10x multiprocessing.Queue on 64-byte messages, >= 2 GB/s on 10 MiB.

    .venv/bin/python perf/ring_bench.py [--repeat 3] [--json perf/results/ring.json]
"""

from __future__ import annotations

import argparse
import fcntl
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from multiprocessing.queues import Queue as MpQueue
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import Row, add_json_argument, emit  # noqa: E402

from aspen.ring import MAX_RING_BATCH_MESSAGES, Ring, RingPair  # noqa: E402
from aspen.units import MiB  # noqa: E402
from aspen.wire import FRAME_HEADER_SIZE, MAX_RPC_MESSAGE_SIZE, decode_frame_header, frame  # noqa: E402

SMALL_SIZE = 64  # the small message
BIG_SIZE = MAX_RPC_MESSAGE_SIZE  # the 10 MiB message
# Message counts per run: enough for ~0.1-1 s per transport on this machine.
SMALL_COUNTS = {"ring": 300_000, "ring-batch": 1_000_000, "queue": 50_000, "pipe": 200_000,
                "pipe-batch": 1_000_000}
BIG_COUNTS = {"ring": 60, "queue": 10, "pipe": 30}
# Messages per batched call; the node batches Raft messages similarly.
BATCH_MESSAGES = 1024
assert BATCH_MESSAGES <= MAX_RING_BATCH_MESSAGES
# Linux default /proc/sys/fs/pipe-max-size: the largest pipe buffer an unprivileged process gets.
PIPE_BUFFER_SIZE = 1 * MiB
CHILD_TIMEOUT_S = 120
DEFAULT_REPEAT = 3


# ---- children (consumers) -----------------------------------------------------------------------

def _ring_child(spec: str, count: int, batched: bool, zero_copy: bool = False) -> None:
    pair = RingPair.attach_arg(spec)
    rx = pair.rx
    print("ready", flush=True)
    received = 0
    if zero_copy:
        # What the worker can do with a 10 MiB message: decode straight from shared memory.
        while received < count:
            view = rx.peek_blocking()
            if view is not None:
                view.release()
                rx.consume()
                received += 1
    elif batched:
        while received < count:
            received += len(rx.get_many_blocking(BATCH_MESSAGES))
    else:
        try_get, get_blocking = rx.try_get, rx.get_blocking
        while received < count:
            if try_get() is None and get_blocking() is None:
                continue
            received += 1
    print("done", flush=True)
    pair.close()


def _pipe_child(read_fd: int, count: int) -> None:
    reader = open(read_fd, "rb", buffering=PIPE_BUFFER_SIZE)
    print("ready", flush=True)
    read = reader.read
    for _ in range(count):
        size = decode_frame_header(read(FRAME_HEADER_SIZE))
        body = read(size)
        if len(body) != size:
            raise EOFError("pipe closed early")
    print("done", flush=True)


def _queue_child(queue: MpQueue[bytes], control: MpQueue[str], count: int) -> None:
    control.put("ready")
    get = queue.get
    for _ in range(count):
        get()
    control.put("done")


# ---- producers (the parent) ---------------------------------------------------------------------

def _spawn(args: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], pass_fds=pass_fds,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"child {args[0]} did not start")
    return proc


def _finish(proc: subprocess.Popen[str], start_s: float) -> float:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    elapsed_s = time.perf_counter() - start_s
    proc.stdout.close()
    if proc.wait(CHILD_TIMEOUT_S) != 0 or line != "done":
        raise RuntimeError("child failed")
    return elapsed_s


def run_ring(size: int, count: int, batched: bool, zero_copy: bool = False) -> float:
    """Seconds to move `count` messages of `size` bytes through a ring to a child process."""
    pair = RingPair.create(f"aspen-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    pair.unlink()
    try:
        mode = "ring-view" if zero_copy else "ring-batch" if batched else "ring"
        proc = _spawn([mode, pair.spec_arg(), str(count)],
                      pair.inheritable_fds())
        pair.close_shm_fds()
        message = os.urandom(size)
        tx: Ring = pair.tx
        start_s = time.perf_counter()
        if batched:
            batch = [message] * BATCH_MESSAGES
            sent = 0
            while sent < count:
                chunk = batch if count - sent >= BATCH_MESSAGES else batch[:count - sent]
                sent += tx.put_many_blocking(chunk)
        else:
            try_put, put_blocking = tx.try_put, tx.put_blocking
            for _ in range(count):
                if not try_put(message):
                    put_blocking(message)
        return _finish(proc, start_s)
    finally:
        pair.close()


def run_pipe(size: int, count: int, batched: bool) -> float:
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BUFFER_SIZE)
    try:
        proc = _spawn(["pipe", str(read_fd), str(count)], (read_fd,))
        os.close(read_fd)
        framed = frame(os.urandom(size))
        writer = open(write_fd, "wb", buffering=0)
        write_fd = -1
        start_s = time.perf_counter()
        if batched:
            joined = framed * BATCH_MESSAGES
            for start in range(0, count, BATCH_MESSAGES):
                n = min(BATCH_MESSAGES, count - start)
                writer.write(joined if n == BATCH_MESSAGES else framed * n)  # raw write: loops
        else:
            write = writer.write
            for _ in range(count):
                view = memoryview(framed)
                while view:  # a raw write may be partial for a 10 MiB frame
                    view = view[write(view):]
        elapsed_s = _finish(proc, start_s)
        writer.close()
        return elapsed_s
    finally:
        if write_fd >= 0:
            os.close(write_fd)


def run_queue(size: int, count: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    queue: MpQueue[bytes] = ctx.Queue()
    control: MpQueue[str] = ctx.Queue()
    proc = ctx.Process(target=_queue_child, args=(queue, control, count))
    proc.start()
    try:
        if control.get(timeout=CHILD_TIMEOUT_S) != "ready":
            raise RuntimeError("queue child did not start")
        message = os.urandom(size)
        put = queue.put
        start_s = time.perf_counter()
        for _ in range(count):
            put(message)
        if control.get(timeout=CHILD_TIMEOUT_S) != "done":
            raise RuntimeError("queue child failed")
        return time.perf_counter() - start_s
    finally:
        proc.join(CHILD_TIMEOUT_S)
        if proc.is_alive():
            proc.kill()
        queue.close()
        control.close()


def best_rate(repeat: int, run: Callable[[], float], count: int) -> float:
    """Messages per second of the fastest of `repeat` runs of `count` messages."""
    return max(count / run() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs per figure")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    add_json_argument(parser)
    ns = parser.parse_args()
    if ns.child:
        mode, *rest = ns.child
        if mode in ("ring", "ring-batch", "ring-view"):
            _ring_child(rest[0], int(rest[1]), batched=mode == "ring-batch",
                        zero_copy=mode == "ring-view")
        elif mode == "pipe":
            _pipe_child(int(rest[0]), int(rest[1]))
        return

    def n(counts: dict[str, int], key: str) -> int:
        return max(1, int(counts[key] * ns.scale))

    r = ns.repeat
    small: dict[str, float] = {
        "ring": best_rate(r, lambda: run_ring(SMALL_SIZE, n(SMALL_COUNTS, "ring"), False),
                          n(SMALL_COUNTS, "ring")),
        "ring-batch": best_rate(r, lambda: run_ring(SMALL_SIZE, n(SMALL_COUNTS, "ring-batch"), True),
                                n(SMALL_COUNTS, "ring-batch")),
        "queue": best_rate(r, lambda: run_queue(SMALL_SIZE, n(SMALL_COUNTS, "queue")),
                           n(SMALL_COUNTS, "queue")),
        "pipe": best_rate(r, lambda: run_pipe(SMALL_SIZE, n(SMALL_COUNTS, "pipe"), False),
                          n(SMALL_COUNTS, "pipe")),
        "pipe-batch": best_rate(r, lambda: run_pipe(SMALL_SIZE, n(SMALL_COUNTS, "pipe-batch"), True),
                                n(SMALL_COUNTS, "pipe-batch")),
    }
    big_mb_s: dict[str, float] = {
        "ring": best_rate(r, lambda: run_ring(BIG_SIZE, n(BIG_COUNTS, "ring"), False),
                          n(BIG_COUNTS, "ring")) * BIG_SIZE / 1e6,
        "ring-view": best_rate(r, lambda: run_ring(BIG_SIZE, n(BIG_COUNTS, "ring"), False, True),
                               n(BIG_COUNTS, "ring")) * BIG_SIZE / 1e6,
        "queue": best_rate(r, lambda: run_queue(BIG_SIZE, n(BIG_COUNTS, "queue")),
                           n(BIG_COUNTS, "queue")) * BIG_SIZE / 1e6,
        "pipe": best_rate(r, lambda: run_pipe(BIG_SIZE, n(BIG_COUNTS, "pipe"), False),
                          n(BIG_COUNTS, "pipe")) * BIG_SIZE / 1e6,
    }
    rows = [
        Row("64 B, one message per call", "msg/s", small["ring"], small["queue"], "mp.Queue"),
        Row("64 B, one message per call", "msg/s", small["ring"], small["pipe"], "os.pipe"),
        Row(f"64 B, batches of {BATCH_MESSAGES}", "msg/s", small["ring-batch"], small["queue"],
            "mp.Queue"),
        Row(f"64 B, batches of {BATCH_MESSAGES}", "msg/s", small["ring-batch"],
            small["pipe-batch"], "os.pipe batched"),
        Row("10 MiB messages", "MB/s", big_mb_s["ring"], big_mb_s["queue"], "mp.Queue"),
        Row("10 MiB messages", "MB/s", big_mb_s["ring"], big_mb_s["pipe"], "os.pipe"),
        Row("10 MiB messages vs goal", "MB/s", big_mb_s["ring"], 2000.0, "goal 2 GB/s"),
        Row("10 MiB, zero-copy peek/consume", "MB/s", big_mb_s["ring-view"], big_mb_s["pipe"],
            "os.pipe"),
        Row("10 MiB, zero-copy vs goal", "MB/s", big_mb_s["ring-view"], 2000.0, "goal 2 GB/s"),
    ]
    emit("aspen.ring cross-process throughput (value = ring; best of "
         f"{r} runs; 1 MB = 10^6 bytes)", rows, ns.json)


if __name__ == "__main__":
    main()
