"""Keep glibc's heap from shrinking and regrowing under every burst of large datagrams.

Measured (10 MiB one-way at 65,000-byte datagrams, tmp profile of both processes): every
datagram allocates and frees several ~65 KB objects (the packet builder's buffer, the datagram,
the ciphertext, the received payload). They sit below glibc's mmap threshold, so they come from
the heap top, and glibc gives the top back to the kernel (brk) as soon as more than 128 KiB is
free there — so the next datagram faults the same pages in again, zeroed. That cost 19-56 ms of
system time per 10 MiB, more than the whole QUIC work of the receiver. With `M_TOP_PAD` at
`HEAP_TOP_PAD_BYTES` the heap grows and shrinks in steps that large and keeps that much spare:
system time fell to ~3 ms per 10 MiB on both sides.

The price is memory: up to HEAP_TOP_PAD_BYTES of freed heap stays mapped (only pages that were
touched count against RSS), the size of a few 10 MiB messages in flight. Process-wide and
idempotent; a no-op where the C library is not glibc (`mallopt` missing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

from aspen.units import MiB

logger = logging.getLogger(__name__)

# glibc malloc.h: M_TOP_PAD = -2 (bytes of extra heap to get from, and keep back from, the OS).
M_TOP_PAD = -2
# Above one MAX_RPC_MESSAGE_SIZE message being sent and one being received at once; measured:
# 1-16 MiB still faulted 11-23 ms per 10 MiB transfer, 32 MiB 3-8 ms, 64 MiB ~3 ms.
HEAP_TOP_PAD_BYTES = 64 * MiB

_tuned = False


def keep_heap_top() -> bool:
    """Set glibc's M_TOP_PAD to HEAP_TOP_PAD_BYTES once per process; True if it took effect."""
    global _tuned
    if _tuned:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:
        logger.debug("no mallopt in this C library; heap top padding not set")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _tuned = bool(mallopt(M_TOP_PAD, HEAP_TOP_PAD_BYTES))
    return _tuned


__all__ = ["HEAP_TOP_PAD_BYTES", "keep_heap_top"]
