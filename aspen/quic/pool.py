"""Connection reuse: one connection per (peer, ALPN), shared handshakes, re-dial after failure.

Rules: `get()` returns the pooled connection while it is usable; a dead one (closed, idle timed
out, stateless-reset) is dropped and dialed again. Concurrent `get()` calls for one key share a
single dial task, so N callers cause one handshake. The pool is bounded: dialed plus dialing
connections never exceed `max_connections` (LimitExceeded otherwise). The dial tasks are owned:
`stop()` cancels and awaits them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aspen.errors import LimitExceeded
from aspen.identity import EndpointId
from aspen.quic.errors import QuicTimeoutError
from aspen.quic.peer import QuicPeerConnection

PoolKey = tuple[EndpointId, str]
Dialer = Callable[[], Awaitable[QuicPeerConnection]]


class ConnectionPool:
    """Dialed connections by (EndpointId, ALPN); see the module docstring."""

    def __init__(self, *, max_connections: int) -> None:
        self._max_connections = max_connections
        self._conns: dict[PoolKey, QuicPeerConnection] = {}
        self._dials: dict[PoolKey, asyncio.Task[QuicPeerConnection]] = {}

    def __len__(self) -> int:
        return len(self._conns) + len(self._dials)

    def lookup(self, key: PoolKey) -> QuicPeerConnection | None:
        """The usable pooled connection for `key`, or None (never dials)."""
        conn = self._conns.get(key)
        if conn is not None and not conn.is_usable:
            del self._conns[key]
            return None
        return conn

    async def get(self, key: PoolKey, dial: Dialer, *, timeout_ms: int) -> tuple[QuicPeerConnection, bool]:
        """(connection, was_pooled). Dials (once, shared) when no usable connection exists.

        Raises whatever the dial raised (HandshakeError, ConnectionLostError, ...), LimitExceeded
        when the pool is full, QuicTimeoutError after `timeout_ms` (the shared dial goes on for
        the other waiters, bounded by its own handshake timeout).
        """
        conn = self.lookup(key)
        if conn is not None:
            return conn, True
        task = self._dials.get(key)
        if task is None:
            if len(self) >= self._max_connections:
                raise LimitExceeded("MAX_CONNECTIONS", len(self) + 1, self._max_connections)
            task = asyncio.get_running_loop().create_task(self._dial(key, dial))
            task.add_done_callback(_retrieve_exception)
            self._dials[key] = task
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout_ms / 1000), False
        except TimeoutError:
            if task.done() and task.exception() is not None:
                raise task.exception() from None  # type: ignore[misc]
            raise QuicTimeoutError(f"connect to {key[0].short()} ({key[1]})", timeout_ms) from None

    async def _dial(self, key: PoolKey, dial: Dialer) -> QuicPeerConnection:
        try:
            conn = await dial()
            self._conns[key] = conn
            return conn
        finally:
            self._dials.pop(key, None)

    def discard(self, conn: QuicPeerConnection) -> None:
        """Forget `conn` if it is pooled (called when it closes)."""
        for key, pooled in list(self._conns.items()):
            if pooled is conn:
                del self._conns[key]

    def connections(self) -> list[QuicPeerConnection]:
        return list(self._conns.values())

    async def stop(self) -> None:
        """Cancel dials in progress and forget every connection (the endpoint closes them)."""
        tasks = list(self._dials.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._dials.clear()
        self._conns.clear()


def _retrieve_exception(task: asyncio.Task[QuicPeerConnection]) -> None:
    # Every waiter may have timed out; fetching the exception keeps asyncio from logging
    # "exception was never retrieved" for a failure that was already reported to callers.
    if not task.cancelled():
        task.exception()


__all__ = ["ConnectionPool", "PoolKey"]
