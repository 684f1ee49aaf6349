"""Gossip discovery pieces outside a real cluster: the newcomer reply timing (sans-IO), the
discovery source over two in-process endpoints, and bad tickets refused at config time."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

import blake3
import msgspec
import pytest

from aspen.addr import EndpointAddr, SocketAddr
from aspen.cli import main as aspen_main
from aspen.identity import SecretKey
from aspen.peers import PeerMap
from aspen.ticket import CHECKSUM_DOMAIN, MAX_TICKET_BOOTSTRAP_PEERS, TICKET_VERSION, ClusterTicket, TicketBodyV1
from aspen_gossip.announce import Announcer
from aspen_gossip.discovery import GossipDiscovery
from aspen_gossip.known_peers import (
    KNOWN_PEERS_FILE,
    MAX_KNOWN_PEERS,
    MAX_KNOWN_PEERS_FILE_BYTES,
    load_known_peers,
    save_known_peers,
)
from aspen_gossip.messages import SCOPE_SWARM

from tests.plugins.aspen_gossip.test_service import SECRET, GossipNode, wait_for


def test_hearing_a_new_node_moves_the_next_swarm_announcement_forward_rate_limited() -> None:
    announcer = Announcer(interval_ms=10_000, reply_min_interval_ms=500)
    announcer.on_new_peer(0)
    assert announcer.poll(0) is None  # no neighbor yet: nothing to do
    announcer.on_neighbor_up(100, 1)
    assert announcer.poll(100) == SCOPE_SWARM
    announcer.on_new_peer(200)  # too soon after our last swarm-wide one: wait for 600
    assert announcer.poll(599) is None and announcer.poll(600) == SCOPE_SWARM
    assert announcer.next_deadline_ms() == 10_600  # the periodic one restarts from there
    announcer.on_new_peer(5_000)
    assert announcer.poll(5_000) == SCOPE_SWARM


def test_two_discoveries_learn_each_other_and_mint_tickets() -> None:
    async def main() -> None:
        nodes = [GossipNode(1), GossipNode(2)]
        maps = [PeerMap(), PeerMap()]
        discoveries: list[GossipDiscovery] = []
        for n in nodes:
            await n.start()
        try:
            for i, (node, peers) in enumerate(zip(nodes, maps)):
                discovery = GossipDiscovery(
                    service=node.service, secret=SECRET, secret_key=node.key, node_id=i + 1,
                    own_addr=lambda node=node: node.addr, peers=peers,  # type: ignore[misc]
                    bootstrap=(nodes[0].addr,), registry=node.registry)
                await discovery.start()
                discoveries.append(discovery)
            await wait_for(lambda: maps[0].get(2) is not None and maps[1].get(1) is not None,
                           "both peer maps filled")
            entry = maps[0].get(2)
            assert entry is not None and entry.addr == nodes[1].addr and entry.source == "gossip"
            info = discoveries[1].ticket_info()
            assert info["cluster_id"] == info["topic_id"] == SECRET.topic_id.hex()
            ticket = ClusterTicket.decode(info["ticket"])
            assert ticket.secret() == SECRET
            assert ticket.bootstrap[0] == nodes[1].addr and nodes[0].addr in ticket.bootstrap
            assert nodes[0].metric("aspen_gossip_announcements_accepted_total") >= 1
        finally:
            for discovery in discoveries:
                await discovery.stop()
            for n in nodes:
                await n.stop()
    asyncio.run(asyncio.wait_for(main(), 30))


def _ticket(peers: int) -> str:
    addrs = [EndpointAddr(SecretKey.generate().public(), None, (SocketAddr("127.0.0.1", 1000 + i),))
             for i in range(peers)]
    if peers <= MAX_TICKET_BOOTSTRAP_PEERS:
        return ClusterTicket.from_secret(SECRET, addrs).encode()
    # build an over-full ticket by hand: the constructor refuses it, the decoder must too
    body = msgspec.msgpack.encode(TicketBodyV1(SECRET.topic_id, SECRET.join_key, [a.to_wire() for a in addrs]))
    head = bytes([TICKET_VERSION]) + body
    payload = head + blake3.blake3(CHECKSUM_DOMAIN + head).digest()[:4]
    return "aspen" + base64.b32encode(payload).decode().rstrip("=").lower()


@pytest.mark.parametrize(("mangle", "reason"), [
    (lambda t: "iroh" + t[5:], "prefix"),
    (lambda t: t[:20] + "0189" + t[24:], "base32"),
    (lambda t: t[:-3] + ("a" if t[-3] != "a" else "b") + t[-2:], "checksum"),
    (lambda t: _ticket(MAX_TICKET_BOOTSTRAP_PEERS + 1), "too_many_peers"),
])
def test_aspen_run_with_a_bad_ticket_exits_2_naming_the_check(mangle, reason, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = mangle(_ticket(1))
    status = aspen_main(["run", "--data-dir", str(tmp_path / "d"), "--ticket", bad])
    assert status == 2
    err = capsys.readouterr().err
    assert f"bad ticket ({reason})" in err, err
    assert not (tmp_path / "d").exists()  # refused before anything started


def test_aspen_ticket_check_names_the_problem() -> None:
    good = _ticket(2)
    ok = subprocess.run([sys.executable, "-m", "aspen", "ticket", "--check", good],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "2 bootstrap peer(s)" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "aspen", "ticket", "--check", "aspen" + good[6:]],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "reason:" in bad.stderr


def test_a_restarted_bootstrap_node_rejoins_through_the_peers_it_saved(tmp_path: Path) -> None:
    """Node A bootstraps the swarm (no ticket peers of its own), B joins through A's address, then
    A restarts on a new port with an empty peer map: only the known-peers file in its data dir
    can bring it back (B, cut off, keeps asking A's old address)."""
    known = tmp_path / KNOWN_PEERS_FILE

    async def main() -> None:
        a, b = GossipNode(1), GossipNode(2)
        maps = [PeerMap(), PeerMap()]
        running: list[tuple[GossipNode, GossipDiscovery]] = []

        async def start(node: GossipNode, node_id: int, peers: PeerMap, bootstrap: tuple[EndpointAddr, ...],
                        path: Path | None) -> GossipDiscovery:
            discovery = GossipDiscovery(service=node.service, secret=SECRET, secret_key=node.key, node_id=node_id,
                                        own_addr=lambda: node.addr, peers=peers, bootstrap=bootstrap,
                                        registry=node.registry, known_peers_path=path)
            running.append((node, discovery))  # before starting: a failure midway still gets cleaned up
            await node.start()
            await discovery.start()
            return discovery

        async def stop(node: GossipNode, discovery: GossipDiscovery) -> None:
            await discovery.stop()
            if node.endpoint is not None:
                await node.stop()

        try:
            await start(a, 1, maps[0], (), known)
            await start(b, 2, maps[1], (a.addr,), None)
            await wait_for(lambda: [addr.endpoint_id for addr in load_known_peers(known)] == [b.key.public()],
                           "A saved B as a known peer")
            old_a_addr = a.addr
            await stop(*running[0])
            running.pop(0)
            again = GossipNode(3, key=a.key)  # same identity, new endpoint (new port), empty peer map
            await start(again, 1, PeerMap(), (), known)
            assert again.addr != old_a_addr
            await wait_for(lambda: again.service.neighbor_count(again.topic_id) == 1, "restarted A rejoined B")
            await wait_for(lambda: (e := maps[1].get(1)) is not None and e.addr == again.addr,
                           "B learned A's new address from its announcement")
        finally:
            # Every node is stopped even if the test failed or one stop raises: a node left
            # running leaks its UDP socket into the next test.
            results = await asyncio.gather(*(stop(*pair) for pair in running), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
    # The outer bound leaves room for the three inner waits (WAIT_S each) to report first.
    asyncio.run(asyncio.wait_for(main(), 60))


def test_known_peers_file_is_bounded_and_garbage_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / KNOWN_PEERS_FILE
    addrs = [EndpointAddr(SecretKey.generate().public(), None, (SocketAddr("192.0.2.1", 1000 + i),))
             for i in range(MAX_KNOWN_PEERS + 5)]
    save_known_peers(path, addrs)
    assert load_known_peers(path) == addrs[:MAX_KNOWN_PEERS]
    path.write_bytes(b"not json")
    assert load_known_peers(path) == []
    path.write_bytes(b"[" + b" " * MAX_KNOWN_PEERS_FILE_BYTES + b"]")
    assert load_known_peers(path) == []
    assert load_known_peers(tmp_path / "missing.json") == []
