"""The clock aioquic sees must advance within a uvloop turn (its pacer refills only then)."""

from __future__ import annotations

import asyncio
import time

import uvloop
from prometheus_client import CollectorRegistry

from aspen.identity import SecretKey
from aspen.quic import Endpoint

BUSY_S = 0.0003  # well under uvloop's 1 ms tick


def test_quic_time_advances_inside_one_loop_callback_on_uvloop() -> None:
    async def main() -> tuple[float, float]:
        endpoint = Endpoint(SecretKey.generate(), registry=CollectorRegistry(), bind_host="127.0.0.1")
        await endpoint.start()
        try:
            first = endpoint._now_s()
            start = time.perf_counter()
            while time.perf_counter() - start < BUSY_S:
                pass
            # and it is the loop's time base: timers armed with call_at fire on time
            assert abs(endpoint._now_s() - asyncio.get_running_loop().time()) < 0.005
            return first, endpoint._now_s()
        finally:
            await endpoint.stop()

    first, second = uvloop.run(main())
    assert second - first >= BUSY_S * 0.9
