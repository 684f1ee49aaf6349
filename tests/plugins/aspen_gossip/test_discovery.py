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
