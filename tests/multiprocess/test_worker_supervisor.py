"""WorkerSupervisor against a real worker process (no Raft: Echo requests): how sends reach the
ring. Everything sent in one loop turn is one ring write; a full ring queues sends in order
until the worker drains it, and every call is answered."""

from __future__ import annotations

import asyncio
import os
import signal

import uvloop
from prometheus_client import CollectorRegistry

from aspen import worker_messages as wm
from aspen.ring import DEFAULT_RING_CAPACITY_SIZE
from aspen.worker_supervisor import WorkerSupervisor

TEST_TIMEOUT_S = 60.0


def _echo(payload: bytes) -> object:
    return lambda rid: wm.Echo(rid, payload)


async def _with_worker(scenario: object) -> None:
    sup = WorkerSupervisor(registry=CollectorRegistry(), log_level="warning")
    await sup.start()
    try:
        await asyncio.wait_for(scenario(sup), TEST_TIMEOUT_S)  # type: ignore[operator]
    finally:
        await sup.stop()


def test_requests_of_one_loop_turn_reach_the_worker_in_one_ring_write() -> None:
    async def scenario(sup: WorkerSupervisor) -> None:
        inbox = sup._inbox
        assert inbox is not None
        writes: list[int] = []
        real = inbox.try_put_many

        def counting(items: list[bytes]) -> int:
            writes.append(len(items))
            return real(items)

        inbox.try_put_many = counting  # type: ignore[method-assign]
        replies = await asyncio.gather(*(sup.call(_echo(b"%d" % i)) for i in range(200)))  # type: ignore[arg-type]
        assert [r.payload for r in replies] == [b"%d" % i for i in range(200)]  # type: ignore[union-attr]
        assert writes == [200]  # one write, one wake-up of the worker

    uvloop.run(_with_worker(scenario))


def test_a_full_ring_queues_sends_in_order_and_answers_every_call() -> None:
    """The worker is stopped (SIGSTOP) while more than a ring's worth of requests is sent; the
    excess waits in the I/O process, in order, and everything is answered once it resumes."""
    payload_size = 1024 * 1024
    count = DEFAULT_RING_CAPACITY_SIZE // payload_size + 8

    async def scenario(sup: WorkerSupervisor) -> None:
        pid = sup.pid
        assert pid is not None
        completed: list[int] = []

        async def one(i: int) -> None:
            reply = await sup.call(_echo(bytes([i % 256]) * payload_size))  # type: ignore[arg-type]
            assert isinstance(reply, wm.EchoReply) and reply.payload[:1] == bytes([i % 256])
            completed.append(i)

        os.kill(pid, signal.SIGSTOP)
        try:
            tasks = [asyncio.create_task(one(i)) for i in range(count)]
            for _ in range(50):  # bounded: until the ring is full and the rest is queued
                await asyncio.sleep(0.01)
                if sup._backlog:
                    break
            assert sup._backlog, "the ring should be full with the worker stopped"
            assert not completed
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.gather(*tasks)
        assert completed == list(range(count))  # FIFO through the backlog
        assert sup._backlog is None

    uvloop.run(_with_worker(scenario))
