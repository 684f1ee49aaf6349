"""The gossip adapter over real QUIC endpoints in one process (loopback only).

Each test builds a few `GossipService`s, each behind its own `aspen.quic.Endpoint`, and drives
them as the node does: join through a bootstrap address, broadcast, read subscriptions. Waits are
bounded polls on outcomes (neighbor counts, received events), never fixed sleeps that assert
timing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aspen.addr import EndpointAddr
from aspen.cluster_secret import ClusterSecret
from aspen.config import NodeConfig
from aspen.errors import LimitExceeded
from aspen.identity import SecretKey
from aspen.peers import PeerMap
from aspen.plugin_api import NodeContext, PeerConnection
from aspen.quic import Endpoint
from aspen.wire import frame as length_prefixed
from aspen_gossip import hooks
from aspen_gossip.config import GossipConfig
from aspen_gossip.events import Event, PeerFailed, Received
from aspen_gossip.messages import Disconnect, StreamHeader, encode_frame
from aspen_gossip.service import GOSSIP_ALPN, GossipService, Subscription

SECRET = ClusterSecret.from_cookie("service test cookie")
OTHER_SECRET = ClusterSecret.from_cookie("somebody else's cookie")
WAIT_S = 10.0  # bound on every wait for an outcome
POLL_S = 0.02


class GossipNode:
    """One endpoint + one gossip service, wired like aspen_gossip.hooks does it."""

    def __init__(self, seed: int, secret: ClusterSecret = SECRET, config: GossipConfig | None = None,
                 key: SecretKey | None = None) -> None:
        self.key = key or SecretKey.generate()
        self.registry = CollectorRegistry()
        self.secret = secret
        self.endpoint: Endpoint | None = None
        self.service = GossipService(me=self.key.public(), dial=self._dial, own_addr=self._own_addr,
                                     config=config, registry=self.registry, rng=random.Random(seed))

    async def _dial(self, addr: EndpointAddr) -> PeerConnection:
        assert self.endpoint is not None
        return await self.endpoint.connect(addr, GOSSIP_ALPN)

    def _own_addr(self) -> EndpointAddr | None:
        return self.endpoint.endpoint_addr() if self.endpoint is not None else None

    async def start(self) -> None:
        self.endpoint = Endpoint(self.key, handlers={GOSSIP_ALPN: self.service}, registry=self.registry,
                                 bind_host="127.0.0.1", handshake_timeout_ms=2_000)
        await self.endpoint.start()
        self.service.add_topic(self.secret)
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()
        assert self.endpoint is not None
        await self.endpoint.stop()

    @property
    def addr(self) -> EndpointAddr:
        assert self.endpoint is not None
        return self.endpoint.endpoint_addr()

    @property
    def topic_id(self) -> bytes:
        return self.secret.topic_id

    def metric(self, line_prefix: str) -> float:
        for line in generate_latest(self.registry).decode().splitlines():
            if line.startswith(line_prefix + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_S)


async def received(sub: Subscription, count: int) -> list[bytes]:
    """The contents of the next `count` Received events (other events skipped)."""
    contents: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while len(contents) < count:
        remaining_ms = int((deadline - loop.time()) * 1000)
        assert remaining_ms > 0, f"got {len(contents)} of {count} messages"
        event = await sub.next(timeout_ms=remaining_ms)
        if isinstance(event, Received):
            contents.append(event.content)
    return contents


def run(scenario: Callable[[list[GossipNode]], Awaitable[None]], nodes: list[GossipNode]) -> None:
    async def main() -> None:
        started: list[GossipNode] = []
        try:
            for node in nodes:
                await node.start()
                started.append(node)
            await scenario(nodes)
        finally:
            for node in reversed(started):
                await node.stop()
            for node in started:
                assert not node.service._tasks, "stop() left tasks behind"
    asyncio.run(asyncio.wait_for(main(), 60))


async def joined(nodes: list[GossipNode]) -> None:
    """Nodes 2.. join through node 1; returns once every node has a neighbor."""
    first = nodes[0]
    for node in nodes[1:]:
        node.service.join(node.topic_id, [first.addr])
    await wait_for(lambda: all(n.service.neighbor_count(n.topic_id) > 0 for n in nodes), "every node joined")


def test_join_then_broadcast_reaches_every_node() -> None:
    async def scenario(nodes: list[GossipNode]) -> None:
        subs = [n.service.subscribe(n.topic_id) for n in nodes]
        await joined(nodes)
        sender = nodes[2]
        sender.service.broadcast(sender.topic_id, b"hello swarm")
        for node, sub in zip(nodes, subs):
            if node is not sender:
                assert await received(sub, 1) == [b"hello swarm"]
        assert nodes[0].metric('aspen_gossip_frames_received_total{type="Join"}') >= 1
        assert sender.metric('aspen_gossip_frames_sent_total{type="Gossip"}') >= 1

    run(scenario, [GossipNode(i) for i in range(4)])


def test_publish_over_max_message_size_is_a_clear_error() -> None:
    async def scenario(nodes: list[GossipNode]) -> None:
        a, b = nodes
        sub = b.service.subscribe(b.topic_id)
        await joined(nodes)
        with pytest.raises(LimitExceeded) as info:
            a.service.broadcast(a.topic_id, b"x" * 600)
        assert info.value.limit == 512
        a.service.broadcast(a.topic_id, b"fits")
        assert await received(sub, 1) == [b"fits"]

    config = GossipConfig(max_message_size=512)
    run(scenario, [GossipNode(i, config=config) for i in range(2)])


def test_slow_subscriber_drops_the_oldest_events_and_counts_them() -> None:
    async def scenario(nodes: list[GossipNode]) -> None:
        a, b = nodes
        await joined(nodes)
        slow = b.service.subscribe(b.topic_id, max_queued=3)
        fast = b.service.subscribe(b.topic_id)
        for i in range(10):
            a.service.broadcast(a.topic_id, f"m{i}".encode())
        assert await received(fast, 10) == [f"m{i}".encode() for i in range(10)]
        assert len(slow) == 3 and slow.dropped == 7
        assert [e.content for e in (slow.get_nowait(), slow.get_nowait(), slow.get_nowait())
                if isinstance(e, Received)] == [b"m7", b"m8", b"m9"]
        assert b.metric('aspen_gossip_dropped_total{bound="subscriber_queue"}') == 7

    run(scenario, [GossipNode(i) for i in range(2)])


def test_garbage_on_one_stream_resets_only_that_stream() -> None:
    async def scenario(nodes: list[GossipNode]) -> None:
        a, b = nodes
        sub = b.service.subscribe(b.topic_id)
        await joined(nodes)
        rogue = Endpoint(SecretKey.generate(), registry=CollectorRegistry(), bind_host="127.0.0.1")
        await rogue.start()
        try:
            conn = await rogue.connect(b.addr, GOSSIP_ALPN)
            header = encode_frame(StreamHeader(b.topic_id))
            cases = [
                ([b"\xc1garbage"], "bad_header"),  # not a StreamHeader
                ([encode_frame(StreamHeader(OTHER_SECRET.topic_id))], "unknown_topic"),
                ([header, b"\xc1\xc1\xc1"], "malformed"),
                ([header, b"\x00" * 5_000], "oversized"),  # over max_message_size (4 KiB)
            ]
            for frames, reason in cases:
                stream = await conn.open_stream(unidirectional=True)
                for body in frames:
                    await stream.write_frame(body)
                await wait_for(lambda: b.metric(f'aspen_gossip_frames_rejected_total{{reason="{reason}"}}') == 1,
                               f"{reason} counted")
            # the rogue's connection itself is still served: a well-formed stream gets through
            stream = await conn.open_stream(unidirectional=True)
            await stream.write_frame(header)
            await stream.write_frame(encode_frame(Disconnect(True)))
            await wait_for(lambda: b.metric('aspen_gossip_frames_received_total{type="Disconnect"}') == 1,
                           "a good frame after the bad streams")
        finally:
            await rogue.stop()
        # and the neighbors' own link never noticed
        a.service.broadcast(a.topic_id, b"still here")
        assert await received(sub, 1) == [b"still here"]
        assert b.service.neighbor_count(b.topic_id) == 1

    run(scenario, [GossipNode(i) for i in range(2)])


def test_a_node_without_the_secret_cannot_join() -> None:
    async def scenario(nodes: list[GossipNode]) -> None:
        member, outsider = nodes
        outsider.service.join(outsider.topic_id, [member.addr])
        await wait_for(lambda: member.metric('aspen_gossip_core_events_total{reason="rejected_bad_membership_tag"}')
                       >= 1, "the join refused")
        assert member.service.neighbor_count(member.topic_id) == 0
        assert outsider.service.neighbor_count(outsider.topic_id) == 0

    outsider = GossipNode(1)
    outsider.secret = ClusterSecret(SECRET.topic_id, OTHER_SECRET.join_key)  # right topic, forged key
    run(scenario, [GossipNode(0), outsider])


def test_a_failed_dial_is_reported_not_silent() -> None:
    async def scenario(nodes: list[GossipNode]) -> None:
        (node,) = nodes
        sub = node.service.subscribe(node.topic_id)
        gone = Endpoint(SecretKey.generate(), registry=CollectorRegistry(), bind_host="127.0.0.1")
        await gone.start()
        addr = gone.endpoint_addr()
        await gone.stop()  # nobody answers at that address any more
        node.service.join(node.topic_id, [addr])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        event: Event | None = None
        while not isinstance(event, PeerFailed):
            assert loop.time() < deadline, "no PeerFailed event"
            event = await sub.next(timeout_ms=1_000)
        assert event.peer == addr.endpoint_id.raw
        assert node.metric("aspen_gossip_dial_failures_total") == 1

    run(scenario, [GossipNode(0)])


def test_hooks_do_nothing_when_gossip_is_disabled(tmp_path: Path) -> None:
    key = SecretKey.generate()

    def context(enabled: bool) -> NodeContext:
        return NodeContext(config=NodeConfig(enable_gossip=enabled), secret_key=key, node_id=1,
                           data_dir=tmp_path, peers=PeerMap(), metrics=CollectorRegistry())

    off = context(False)
    assert hooks.aspen_protocol_handlers(node=off) == []
    assert hooks.aspen_discovery_sources(node=off) == []
    assert "cluster_ticket" not in off.extensions
    on = context(True)
    (handler,) = hooks.aspen_protocol_handlers(node=on)
    assert handler.alpn == GOSSIP_ALPN
    service, discovery = hooks.aspen_discovery_sources(node=on)
    assert service is handler
    assert callable(on.extensions["cluster_ticket"])
    assert {o.key for o in hooks.aspen_config_options()} >= {"max_message_size", "announce_interval_ms"}


def test_raw_length_prefix_helper_matches_the_stream_framing() -> None:
    # The rogue above writes bodies through QuicPeerStream.write_frame; this pins the framing the
    # service expects on the wire (4-byte big-endian length, then the body).
    assert length_prefixed(b"abc") == b"\x00\x00\x00\x03abc"


def test_connections_close_soon_after_the_peer_leaves_not_at_the_idle_timeout() -> None:
    async def scenario(nodes: list[GossipNode]) -> None:
        a, b = nodes
        b.service.join(b.topic_id, [a.addr])
        await wait_for(lambda: a.service.neighbor_count(a.topic_id) == 1 == b.service.neighbor_count(b.topic_id),
                       "a and b are neighbors")
        assert a.endpoint is not None and b.endpoint is not None
        assert a.endpoint.connection_count() >= 1 and b.endpoint.connection_count() >= 1
        loop = asyncio.get_running_loop()
        left_at = loop.time()
        b.service.leave(b.topic_id)
        # QUIC's idle timeout (30 s) used to be what closed them; WAIT_S (10 s) is well below it
        await wait_for(lambda: a.endpoint.connection_count() == 0 == b.endpoint.connection_count(),  # type: ignore[union-attr]
                       "both sides closed the gossip connection")
        assert loop.time() - left_at < WAIT_S
        assert a.service.neighbor_count(a.topic_id) == 0
        assert a.metric("aspen_gossip_connections_closed_total") + b.metric("aspen_gossip_connections_closed_total") >= 1

    run(scenario, [GossipNode(1), GossipNode(2)])
