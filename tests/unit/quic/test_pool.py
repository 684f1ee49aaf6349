"""ConnectionPool: shared dials, re-dial after failure, the MAX_CONNECTIONS bound (no sockets:
the "connections" are stand-ins with the one property the pool reads)."""

from __future__ import annotations

import asyncio

import pytest

from aspen.errors import LimitExceeded
from aspen.identity import SecretKey
from aspen.quic.pool import ConnectionPool


class FakeConn:
    def __init__(self) -> None:
        self.is_usable = True


def test_concurrent_gets_share_one_dial_and_a_dead_connection_is_redialed() -> None:
    async def main() -> None:
        pool = ConnectionPool(max_connections=4)
        key = (SecretKey.generate().public(), "a/1")
        dials = 0

        async def dial() -> FakeConn:
            nonlocal dials
            dials += 1
            await asyncio.sleep(0.01)
            return FakeConn()

        got = await asyncio.gather(*(pool.get(key, dial, timeout_ms=1000) for _ in range(5)))  # type: ignore[arg-type]
        assert dials == 1 and len({id(c) for c, _ in got}) == 1
        assert [pooled for _, pooled in got] == [False] * 5
        conn, pooled = await pool.get(key, dial, timeout_ms=1000)  # type: ignore[arg-type]
        assert pooled and dials == 1
        conn.is_usable = False  # closed, idle timed out, reset...
        fresh, pooled = await pool.get(key, dial, timeout_ms=1000)  # type: ignore[arg-type]
        assert fresh is not conn and not pooled and dials == 2
        await pool.stop()
    asyncio.run(main())


def test_pool_is_bounded_and_failed_dials_are_not_kept() -> None:
    async def main() -> None:
        pool = ConnectionPool(max_connections=1)

        async def dial() -> FakeConn:
            return FakeConn()

        async def failing_dial() -> FakeConn:
            raise ConnectionRefusedError("no")

        key_a = (SecretKey.generate().public(), "a/1")
        key_b = (SecretKey.generate().public(), "a/1")
        with pytest.raises(ConnectionRefusedError):
            await pool.get(key_a, failing_dial, timeout_ms=1000)  # type: ignore[arg-type]
        assert len(pool) == 0
        await pool.get(key_a, dial, timeout_ms=1000)  # type: ignore[arg-type]
        with pytest.raises(LimitExceeded):
            await pool.get(key_b, dial, timeout_ms=1000)  # type: ignore[arg-type]
        await pool.stop()
    asyncio.run(main())
