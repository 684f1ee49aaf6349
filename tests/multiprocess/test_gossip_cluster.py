"""A cluster that forms itself from one ticket: 5 real `aspen run` processes on loopback (issue 6).

Nodes 2-5 get only node 1's ticket (no --peers, no add-peer). Every peer map must hold all five
nodes within 2 s of the last node's start (the issue's bound; the Rust Aspen tells its users to
wait 12 s); then the cluster is initialised and grown by node ids alone. Nodes with a wrong cookie
or a forged ticket are refused by the swarm and by Raft; forged and replayed announcements
change nothing.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from aspen.addr import EndpointAddr
from aspen.cluster_secret import PURPOSE_RAFT_RPC, ClusterSecret
from aspen.identity import SecretKey
from aspen.localcluster import FAST_TIMING_ARGS, LocalCluster
from aspen.plugin_api import PeerConnection
from aspen.quic import ConnectionLostError, Endpoint
from aspen.ticket import ClusterTicket
from aspen_gossip.announce import AnnouncementBody, SignedAnnouncement, sign_announcement
from aspen_gossip.events import Received
from aspen_gossip.messages import SCOPE_NEIGHBORS
from aspen_gossip.service import GOSSIP_ALPN, GossipService
from aspen_raft.frames import RAFT_ALPN, RaftAuth, RaftFrame, encode_auth, encode_frame

pytestmark = pytest.mark.multiprocess

MEMBERS = [1, 2, 3, 4, 5]
PEER_MAP_FULL_BOUND_S = 2.0  # issue 6, "What it must show" 2
ROGUE_WAIT_S = 3.0  # > 2 join retries (REJOIN_INTERVAL_MS = 1 s) of a refused node
WAIT_S = 30.0  # bound on every other wait


def peer_ids(c: LocalCluster, node: int) -> dict[int, str]:
    status, body = c.nodes[node].call("GET", "/peers", timeout_s=2)
    assert status == 200, body
    return {p["node_id"]: p["endpoint_addr"]["id"] for p in body["peers"]}


def endpoint_id(c: LocalCluster, node: int) -> str:
    return str(c.nodes[node].ready["endpoint_id"])


@pytest.fixture(scope="module")
def ticket_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, str, float]]:
    """Node 1 alone, its ticket from `aspen ticket`, then nodes 2-5 with only that ticket.

    Yields (cluster, ticket, seconds from the last node's ready line to all peer maps full).
    """
    with LocalCluster(tmp_path_factory.mktemp("gossip"), 1, gossip=True) as c:
        c.start()
        cli = subprocess.run([sys.executable, "-m", "aspen", "ticket", "--node", c.nodes[1].url],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        ticket = cli.stdout.strip()
        assert ticket.startswith("aspen")
        for i in MEMBERS[1:]:
            c.add_node(i, FAST_TIMING_ARGS + ("--ticket", ticket))
        c.start(MEMBERS[1:])
        last_start = time.monotonic()  # every node printed its ready line
        expected = {i: endpoint_id(c, i) for i in MEMBERS}
        deadline = last_start + WAIT_S
        while True:
            full = all({k: v for k, v in peer_ids(c, i).items() if k in expected} ==
                       {k: v for k, v in expected.items() if k != i} for i in MEMBERS)
            if full:
                break
            assert time.monotonic() < deadline, {i: sorted(peer_ids(c, i)) for i in MEMBERS}
            time.sleep(0.05)
        yield c, ticket, time.monotonic() - last_start


def test_every_peer_map_holds_all_five_within_two_seconds(ticket_cluster: tuple[LocalCluster, str, float]) -> None:
    c, ticket, elapsed_s = ticket_cluster
    print(f"all 5 peer maps full {elapsed_s:.3f} s after the last node was ready")
    assert elapsed_s <= PEER_MAP_FULL_BOUND_S
    for i in MEMBERS:
        assert all(source == "gossip" for source in
                   [p["source"] for p in c.nodes[i].call("GET", "/peers")[1]["peers"]])
    # the ticket carries the join key, never the cookie, and names node 1 as bootstrap peer
    decoded = ClusterTicket.decode(ticket)
    assert [a.endpoint_id.hex() for a in decoded.bootstrap] == [endpoint_id(c, 1)]
    assert b"aspen-cookie" not in decoded.to_bytes()


def test_raft_rpc_without_the_secret_is_refused_before_any_frame(
        ticket_cluster: tuple[LocalCluster, str, float]) -> None:
    """Before /init a node accepts raft-rpc from any key; the cluster-secret proof still stops a
    stranger: a wrong tag closes the connection and counts bad_secret, the worker sees nothing."""
    c, ticket, _ = ticket_cluster
    target = 2
    _, before = c.nodes[target].call("GET", "/raft-metrics")
    addr = EndpointAddr.from_json(c.nodes[target].ready["endpoint_addr"])
    wrong = ClusterSecret.from_cookie("not the cluster's cookie")

    async def attack() -> None:
        stranger = Endpoint(SecretKey.generate(), registry=CollectorRegistry(), bind_host="127.0.0.1")
        await stranger.start()
        try:
            conn = await stranger.connect(addr, RAFT_ALPN)
            stream = await conn.open_stream()
            tag = wrong.membership_tag(stranger.endpoint_id.raw, addr.endpoint_id.raw, PURPOSE_RAFT_RPC)
            try:
                await stream.write_frame(encode_auth(RaftAuth(tag)))
                await stream.write_frame(encode_frame(RaftFrame(7, [b"\x00"])))
            except ConnectionLostError:
                pass  # closed on us already: what we want
            await asyncio.wait_for(conn.wait_closed(), 10)
        finally:
            await stranger.stop()

    asyncio.run(asyncio.wait_for(attack(), WAIT_S))
    assert c.metric(target, "aspen_raft_rpc_refused_total", 'reason="bad_secret"') >= 1
    _, after = c.nodes[target].call("GET", "/raft-metrics")
    assert after["current_term"] == before["current_term"] and not after["voters"]


def test_cluster_is_initialised_and_grown_by_node_ids_alone(ticket_cluster: tuple[LocalCluster, str, float]) -> None:
    c, _, _ = ticket_cluster
    status, body = c.nodes[1].call("POST", "/init", {"initial_members": [{"id": i} for i in (1, 2, 3)]})
    assert status == 200, body
    leader = c.wait_leader([1, 2, 3])
    for learner in (4, 5):
        status, body = c.nodes[leader].call("POST", "/add-learner", {"learner": {"id": learner}})
        assert status == 200, body
    status, body = c.nodes[leader].call("POST", "/change-membership", {"members": MEMBERS})
    assert status == 200, body
    assert sorted(body["members"]) == MEMBERS
    assert c.write(5, "formed", "from-a-ticket")[0] == 200
    deadline = time.monotonic() + WAIT_S
    for reader in MEMBERS:
        while c.read(reader, "formed", "stale") != (200, {"key": "formed", "value": "from-a-ticket"}):
            assert time.monotonic() < deadline, f"node {reader} never applied the write"
            time.sleep(0.05)


def test_wrong_cookie_and_forged_ticket_are_refused_by_swarm_and_raft(
        ticket_cluster: tuple[LocalCluster, str, float]) -> None:
    c, ticket, _ = ticket_cluster
    real = ClusterTicket.decode(ticket)
    forged = ClusterTicket(real.topic_id, bytes(random.Random(6).randbytes(32)), real.bootstrap)
    node1_json = json.dumps(c.nodes[1].ready["endpoint_addr"])
    unknown_before = c.metric(1, "aspen_gossip_frames_rejected_total", 'reason="unknown_topic"')
    bad_tag_before = sum(c.metric(i, "aspen_gossip_core_events_total", 'reason="rejected_bad_membership_tag"')
                         for i in MEMBERS)
    # 6: another cookie (so another topic), pointed at node 1; 7: the right topic, a forged key
    c.add_node(6, FAST_TIMING_ARGS + ("--cookie", "a wrong cookie", "--peers", f"1@{node1_json}"))
    c.add_node(7, FAST_TIMING_ARGS + ("--ticket", forged.encode()))
    c.start([6, 7])
    rogues = {endpoint_id(c, 6), endpoint_id(c, 7)}
    deadline = time.monotonic() + ROGUE_WAIT_S
    while time.monotonic() < deadline:
        for i in MEMBERS:
            assert not rogues & set(peer_ids(c, i).values()), f"a rogue reached node {i}'s peer map"
        time.sleep(0.2)
    assert c.metric(1, "aspen_gossip_frames_rejected_total", 'reason="unknown_topic"') > unknown_before
    assert sum(c.metric(i, "aspen_gossip_core_events_total", 'reason="rejected_bad_membership_tag"')
               for i in MEMBERS) > bad_tag_before
    # Raft: even added as a learner by an operator, the forged-ticket node cannot take part: the
    # leader's streams to it fail its secret check (and it never proves the secret back).
    leader = c.wait_leader(MEMBERS)
    status, body = c.nodes[leader].call("POST", "/add-learner", {"learner": {
        "id": 7, "endpoint_addr": c.nodes[7].ready["endpoint_addr"]}}, timeout_s=5)
    deadline = time.monotonic() + WAIT_S
    while c.metric(7, "aspen_raft_rpc_refused_total", 'reason="bad_secret"') < 1:
        assert time.monotonic() < deadline, "node 7 never refused the leader's raft-rpc"
        time.sleep(0.1)
    _, raft7 = c.nodes[7].call("GET", "/raft-metrics")
    assert raft7["last_log_index"] == 0 and not raft7["voters"]
    assert c.write(leader, "after-rogues", "ok")[0] == 200


def test_forged_and_replayed_announcements_change_nothing(ticket_cluster: tuple[LocalCluster, str, float]) -> None:
    """An insider (holds a ticket, so it may gossip) sends a hijack of node 3's id, an announcement
    whose signature is not the announced key's, and a replay of node 2's genuine announcement;
    every member's peer map stays as it was and each is counted by reason."""
    c, ticket, _ = ticket_cluster
    real = ClusterTicket.decode(ticket)
    maps_before = {i: peer_ids(c, i) for i in MEMBERS}
    reasons = ("hijack", "bad_signature", "replayed")
    before = {r: sum(c.metric(i, "aspen_gossip_announcements_rejected_total", f'reason="{r}"')
                     for i in MEMBERS) for r in reasons}
    node2 = EndpointAddr.from_json(c.nodes[2].ready["endpoint_addr"])

    async def insider() -> None:
        key = SecretKey.generate()
        endpoint: Endpoint | None = None

        async def dial(addr: EndpointAddr) -> PeerConnection:
            assert endpoint is not None
            return await endpoint.connect(addr, GOSSIP_ALPN)

        registry = CollectorRegistry()
        service = GossipService(me=key.public(), dial=dial, own_addr=lambda: endpoint.endpoint_addr()
                                if endpoint is not None else None, registry=registry)
        endpoint = Endpoint(key, handlers={GOSSIP_ALPN: service}, registry=registry, bind_host="127.0.0.1")
        await endpoint.start()
        try:
            topic = service.add_topic(real.secret())
            await service.start()
            sub = service.subscribe(topic)
            service.join(topic, real.bootstrap)
            # capture a genuine announcement of node 2 (every node announces every 10 s)
            genuine: bytes | None = None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT_S
            while genuine is None:
                assert loop.time() < deadline, "no announcement from node 2 heard"
                event = await sub.next(timeout_ms=1_000)
                if isinstance(event, Received):
                    signed = announced(event.content)
                    if signed is not None and signed[1] == 2:
                        genuine = event.content
            now_ms = int(time.time() * 1000)
            hijack = sign_announcement(key, topic, 3, endpoint.endpoint_addr(), now_ms)
            body = AnnouncementBody(9, node2.to_wire(), now_ms)
            unsigned = msgspec.msgpack.encode(body)
            forged_sig = msgspec.msgpack.encode(SignedAnnouncement(unsigned, key.sign(unsigned)))
            service.broadcast(topic, hijack)
            service.broadcast(topic, forged_sig)
            await asyncio.sleep(0.5)  # a newer announcement of node 2 may land first; either way
            service.broadcast(topic, genuine, SCOPE_NEIGHBORS)  # neighbor scope: no dedup by id
            await asyncio.sleep(1.0)
        finally:
            await service.stop()
            await endpoint.stop()

    asyncio.run(asyncio.wait_for(insider(), WAIT_S * 2))
    deadline = time.monotonic() + WAIT_S
    after: dict[str, float] = {}
    while True:
        after = {r: sum(c.metric(i, "aspen_gossip_announcements_rejected_total", f'reason="{r}"')
                        for i in MEMBERS) for r in reasons}
        if all(after[r] > before[r] for r in reasons):
            break
        assert time.monotonic() < deadline, (before, after)
        time.sleep(0.1)
    for i in MEMBERS:
        now_map = peer_ids(c, i)
        assert {k: v for k, v in now_map.items() if k in maps_before[i]} == maps_before[i]
        assert 9 not in now_map


def announced(content: bytes) -> tuple[bytes, int] | None:
    """(endpoint id, node id) of an announcement, unverified (test helper)."""
    try:
        signed = msgspec.msgpack.decode(content, type=SignedAnnouncement)
        body = msgspec.msgpack.decode(signed.body, type=AnnouncementBody)
    except msgspec.DecodeError:
        return None
    return body.addr.endpoint_id, body.node_id
