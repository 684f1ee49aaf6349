"""Announced addresses for a wildcard bind (aspen_gossip.interfaces, aspen_gossip.hooks)."""

from __future__ import annotations

from aspen.addr import EndpointAddr, SocketAddr
from aspen.identity import SecretKey
from aspen_gossip.hooks import addr_for_bound
from aspen_gossip.interfaces import announce_hosts, ipv4_addresses, local_announce_hosts, parse_if_inet6

IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 02 40 00 80     eth0
fe8000000000000000fc00fffe000001 02 40 20 80     eth0
"""


def test_if_inet6_lines_are_parsed_and_garbage_skipped() -> None:
    assert parse_if_inet6(IF_INET6 + "nonsense\n\n") == ["::1", "fd00::2", "fe80::fc:ff:fe00:1"]


def test_wildcard_bind_announces_interfaces_not_loopback() -> None:
    hosts = ["127.0.0.1", "192.0.2.2", "::1", "fd00::2", "fe80::fc:ff:fe00:1"]
    assert announce_hosts("::", hosts) == ["192.0.2.2", "fd00::2"]  # dual-stack: both families
    assert announce_hosts("0.0.0.0", hosts) == ["192.0.2.2"]  # an IPv4 socket: IPv4 only
    assert announce_hosts("10.1.2.3", hosts) == ["10.1.2.3"]  # a specific bind stays as it is
    # nothing but loopback (a namespace with only lo): loopback is better than nothing
    assert announce_hosts("::", ["127.0.0.1", "::1", "fe80::1"]) == ["127.0.0.1", "::1"]
    assert announce_hosts("0.0.0.0", []) == ["127.0.0.1"]


def test_this_host_is_enumerated() -> None:
    assert "127.0.0.1" in ipv4_addresses()  # lo always has it on Linux
    hosts = local_announce_hosts("0.0.0.0")
    others = [h for h in ipv4_addresses() if h != "127.0.0.1"]
    assert hosts == (others or ["127.0.0.1"])


def test_announced_endpoint_addr_keeps_ports_and_expands_the_wildcard() -> None:
    key = SecretKey.generate().public()
    shown = EndpointAddr(key, None, (SocketAddr("127.0.0.1", 4242),))
    addr = addr_for_bound(shown, [SocketAddr("0.0.0.0", 4242)])
    assert addr.endpoint_id == key
    assert [a.host for a in addr.direct_addrs] == local_announce_hosts("0.0.0.0")
    assert all(a.port == 4242 for a in addr.direct_addrs)
    assert addr_for_bound(shown, [SocketAddr("127.0.0.1", 4242)]) == shown
