"""raft-rpc transport between two real QUIC endpoints in one process (loopback)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from aspen import worker_messages as wm
from aspen.cluster_secret import ClusterSecret
from aspen.cluster_view import ClusterView, member_addr_text
from aspen.identity import SecretKey
from aspen.peers import PeerMap
from aspen.plugin_api import PeerConnection
from aspen.quic import Endpoint
from aspen.units import MiB
from aspen_raft.transport import RaftTransport

DELIVERY_TIMEOUT_S = 30.0


class Side:
    def __init__(self, node_id: int, cookie: str = "test cluster") -> None:
        self.node_id = node_id
        self.key = SecretKey.generate()
        self.view = ClusterView(PeerMap())
        self.inbox: asyncio.Queue[tuple[float, wm.RaftReceive]] = asyncio.Queue()
        self.registry = CollectorRegistry()

        async def deliver(messages: list[wm.ToWorker]) -> None:
            now = asyncio.get_running_loop().time()
            for m in messages:
                assert isinstance(m, wm.RaftReceive)
                self.inbox.put_nowait((now, m))

        async def connect(node: int) -> PeerConnection:
            addr = self.view.addr_of(node)
            assert addr is not None
            return await self.endpoint.connect(addr, "raft-rpc")

        self.transport = RaftTransport(node_id=node_id, view=self.view, deliver=deliver, connect=connect,
                                       registry=self.registry, secret=ClusterSecret.from_cookie(cookie),
                                       me=self.key.public())
        self.endpoint = Endpoint(self.key, handlers={"raft-rpc": self.transport}, registry=self.registry,
                                 bind_host="127.0.0.1")


async def pair() -> tuple[Side, Side]:
    a, b = Side(1), Side(2)
    for side in (a, b):
        await side.endpoint.start()
        await side.transport.start()
    addrs = {1: member_addr_text(a.endpoint.endpoint_addr()), 2: member_addr_text(b.endpoint.endpoint_addr())}
    for side in (a, b):
        side.view.apply(wm.StateUpdate(1, 1, "Follower", [1, 2], [], addrs))
    return a, b


async def close(*sides: Side) -> None:
    for side in sides:
        await side.transport.stop()
        await side.endpoint.stop()


def test_messages_flow_both_ways_in_order() -> None:
    async def main() -> None:
        a, b = await pair()
        try:
            a.transport.send_batch(wm.RaftSendBatch([wm.RaftSend(2, f"m{i}".encode()) for i in range(50)]))
            got = [await asyncio.wait_for(b.inbox.get(), DELIVERY_TIMEOUT_S) for _ in range(50)]
            assert [m.payload for _, m in got] == [f"m{i}".encode() for i in range(50)]
            assert all(m.from_node == 1 for _, m in got)
            b.transport.send_batch(wm.RaftSendBatch([wm.RaftSend(1, b"reply")]))
            _, back = await asyncio.wait_for(a.inbox.get(), DELIVERY_TIMEOUT_S)
            assert back == wm.RaftReceive(2, b"reply")
            sent = a.registry.get_sample_value("aspen_raft_peer_bytes_sent_total", {"peer": "2"})
            received = b.registry.get_sample_value("aspen_raft_peer_bytes_received_total", {"peer": "1"})
            assert sent is not None and sent >= 50 * 2 and sent == received  # per-peer bytes, both ends
            assert a.registry.get_sample_value("aspen_raft_peer_connected", {"peer": "2"}) == 1.0
        finally:
            await close(a, b)

    asyncio.run(main())


def test_small_messages_do_not_wait_behind_a_large_one() -> None:
    async def main() -> None:
        a, b = await pair()
        try:
            a.transport.send_batch(wm.RaftSendBatch([wm.RaftSend(2, b"warm-up")]))
            await asyncio.wait_for(b.inbox.get(), DELIVERY_TIMEOUT_S)
            big = b"s" * (9 * MiB)  # a snapshot chunk
            a.transport.send_batch(wm.RaftSendBatch([wm.RaftSend(2, big, large=True)]))
            await asyncio.sleep(0)  # the large frame is being written
            a.transport.send_batch(wm.RaftSendBatch([wm.RaftSend(2, b"heartbeat")]))
            order = []
            for _ in range(2):
                _, m = await asyncio.wait_for(b.inbox.get(), DELIVERY_TIMEOUT_S)
                order.append(m.payload[:9])
            assert order == [b"heartbeat", b"sssssssss"], "the heartbeat waited behind the snapshot chunk"
        finally:
            await close(a, b)

    asyncio.run(main())


def test_a_non_member_connection_is_refused_and_counted() -> None:
    async def main() -> None:
        a, b = await pair()
        stranger = Side(9)
        await stranger.endpoint.start()
        try:
            addr = b.endpoint.endpoint_addr()
            conn = await stranger.endpoint.connect(addr, "raft-rpc")
            await asyncio.wait_for(conn.wait_closed(), DELIVERY_TIMEOUT_S)
            refused = b.registry.get_sample_value("aspen_raft_rpc_refused_total", {"reason": "not_member"})
            assert refused == 1.0
            assert b.inbox.empty()
        finally:
            await close(a, b)
            await stranger.endpoint.stop()

    asyncio.run(main())
