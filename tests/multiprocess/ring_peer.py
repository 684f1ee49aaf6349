"""The child side of the ring stress test (run as a script: `python ring_peer.py MODE SPEC ...`).

Modes
  send SPEC SMALL_COUNT BIG_COUNT      send the messages below on the pair's tx, then exit 0
  echo SPEC SMALL_COUNT BIG_COUNT      receive and verify them on rx, reply b"ok <count>" on tx
  spawn PREFIX                          create a pair, unlink it, start `send` as a grandchild,
                                        print the grandchild's pid, then wait (to be SIGKILLed)

A message is `seq (u64) | checksum | body`: crc32 (u32) over the body for small messages, blake3
(32 bytes) for big ones. Shared by the parent test, which imports the builders from here.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator

import blake3

from aspen.ring import RingPair
from aspen.wire import MAX_RPC_MESSAGE_SIZE

SMALL_HEADER = struct.Struct("<QI")
BIG_HEADER = struct.Struct("<Q32s")
# One put/get call carries this many small messages (the node batches too).
BATCH_MESSAGES = 1024
# Every wait is bounded: far beyond what a healthy run needs on a loaded 2-core machine.
PEER_TIMEOUT_MS = 60_000
# 10 MiB bodies, the largest RPC message (DESIGN.md), rotated per sequence number.
BIG_BODY_SIZE = MAX_RPC_MESSAGE_SIZE
# A fixed multiplier (2^64 / golden ratio) spreads sequence numbers into varied body bytes.
_MIX = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def small_message(seq: int) -> bytes:
    """8..48-byte body derived from seq, under its sequence number and crc32."""
    body = ((seq * _MIX) & _MASK64).to_bytes(8, "little") * (1 + seq % 6)
    return SMALL_HEADER.pack(seq, zlib.crc32(body)) + body


def check_small(message: bytes, expected_seq: int) -> None:
    seq, crc = SMALL_HEADER.unpack_from(message)
    if seq != expected_seq:
        raise AssertionError(f"small message out of order: got seq {seq}, expected {expected_seq}")
    if zlib.crc32(memoryview(message)[SMALL_HEADER.size:]) != crc:
        raise AssertionError(f"small message {seq} corrupted")
    if message != small_message(seq):
        raise AssertionError(f"small message {seq} differs from what was sent")


def big_base() -> bytes:
    """One pseudo-random 10 MiB buffer (deterministic, so both sides agree without sending it)."""
    import random
    return random.Random(20261122).randbytes(BIG_BODY_SIZE)


def big_message(base: bytes, seq: int) -> bytes:
    shift = (seq * 4099) % len(base)
    body = base[shift:] + base[:shift]
    return BIG_HEADER.pack(seq, blake3.blake3(body).digest()) + body


def check_big(message: bytes, expected_seq: int) -> None:
    seq, digest = BIG_HEADER.unpack_from(message)
    if seq != expected_seq:
        raise AssertionError(f"big message out of order: got seq {seq}, expected {expected_seq}")
    body = memoryview(message)[BIG_HEADER.size:]
    if len(body) != BIG_BODY_SIZE or blake3.blake3(body).digest() != digest:
        raise AssertionError(f"big message {seq} corrupted")


def small_batches(count: int) -> Iterator[list[bytes]]:
    for start in range(0, count, BATCH_MESSAGES):
        yield [small_message(seq) for seq in range(start, min(count, start + BATCH_MESSAGES))]


def send(pair: RingPair, small_count: int, big_count: int) -> None:
    for batch in small_batches(small_count):
        if pair.tx.put_many_blocking(batch, timeout_ms=PEER_TIMEOUT_MS) != len(batch):
            raise TimeoutError("consumer stopped taking small messages")
    base = big_base()
    for seq in range(big_count):
        if not pair.tx.put_blocking(big_message(base, seq), timeout_ms=PEER_TIMEOUT_MS):
            raise TimeoutError("consumer stopped taking big messages")


def receive(pair: RingPair, small_count: int, big_count: int) -> int:
    """Receive and verify everything `send` sends; returns how many messages were checked."""
    seq = 0
    while seq < small_count:
        # Never take more than the small messages left: the big ones follow in the same ring.
        batch = pair.rx.get_many_blocking(min(BATCH_MESSAGES, small_count - seq),
                                          timeout_ms=PEER_TIMEOUT_MS)
        if not batch:
            raise TimeoutError(f"no small message after seq {seq}")
        for message in batch:
            check_small(message, seq)
            seq += 1
    for big_seq in range(big_count):
        big = pair.rx.get_blocking(timeout_ms=PEER_TIMEOUT_MS)
        if big is None:
            raise TimeoutError(f"no big message {big_seq}")
        check_big(big, big_seq)
    if pair.rx.try_get() is not None:
        raise AssertionError("more messages than sent")
    return small_count + big_count


def main(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "spawn":
        pair = RingPair.create(argv[1], 1024 * 1024)
        pair.unlink()
        child = subprocess.Popen([sys.executable, __file__, "send", pair.spec_arg(), "100000000", "0"],
                                 pass_fds=pair.inheritable_fds())
        pair.close_shm_fds()
        print(child.pid, flush=True)
        time.sleep(PEER_TIMEOUT_MS / 1000)  # the test SIGKILLs us long before this
        return 1
    pair = RingPair.attach_arg(argv[1])
    small_count, big_count = int(argv[2]), int(argv[3])
    try:
        if mode == "send":
            send(pair, small_count, big_count)
        elif mode == "echo":
            checked = receive(pair, small_count, big_count)
            pair.tx.put_blocking(f"ok {checked}".encode(), timeout_ms=PEER_TIMEOUT_MS)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        pair.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
