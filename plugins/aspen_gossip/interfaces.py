"""Which addresses to announce for a wildcard bind: this host's interface addresses (Linux).

A socket bound to `::` or `0.0.0.0` listens on every interface, but peers cannot dial the
wildcard. Announcing loopback instead (what `Endpoint.endpoint_addr()` does without a host) makes
the node unreachable from any other machine, so announcements carry the interface addresses.
psutil is not a dependency; the standard library has no getifaddrs, so:

- IPv4: `socket.if_nameindex()` for the interface names, then the `SIOCGIFADDR` ioctl per name.
- IPv6: `/proc/net/if_inet6` (one line per address: hex address, index, prefix, scope, flags, name).

Chosen addresses: no link-local ones (they need a scope id a peer on another host cannot use) and
no multicast/unspecified; loopback only when nothing else exists (a lone laptop, a network
namespace with only `lo`). `::` is dual-stack here (aspen.quic.path clears IPV6_V6ONLY), so it
announces IPv4 and IPv6 addresses; `0.0.0.0` only IPv4. At most `MAX_ANNOUNCED_HOSTS`.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from pathlib import Path

from aspen.addr import MAX_DIRECT_ADDRS

WILDCARD_V4 = "0.0.0.0"
WILDCARD_V6 = "::"
# An EndpointAddr holds at most MAX_DIRECT_ADDRS direct addresses; hosts with more interfaces
# (containers, VPNs) announce the first ones in kernel order.
MAX_ANNOUNCED_HOSTS = MAX_DIRECT_ADDRS
# Interfaces looked at, so a host with thousands of veths cannot stall the event loop. guess.
MAX_INTERFACES = 256
SIOCGIFADDR = 0x8915  # linux/sockios.h
IF_INET6_PATH = Path("/proc/net/if_inet6")
_IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux
_IFNAMSIZ = 16


def ipv4_addresses() -> list[str]:
    """IPv4 address of every interface that has one (SIOCGIFADDR); [] off Linux."""
    found: list[str] = []
    try:
        names = [name for _, name in socket.if_nameindex()[:MAX_INTERFACES]]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return found
    with sock:
        for name in names:
            request = struct.pack(f"{_IFNAMSIZ}s{_IFREQ_SIZE - _IFNAMSIZ}x", name.encode()[:_IFNAMSIZ - 1])
            try:
                reply = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address on this interface (or it went away meanwhile)
            found.append(socket.inet_ntoa(reply[20:24]))  # ifr_addr: sockaddr_in, address at +4
    return found


def parse_if_inet6(text: str) -> list[str]:
    """The addresses listed in /proc/net/if_inet6 text (32 hex digits per address, first field)."""
    found: list[str] = []
    for line in text.splitlines()[:MAX_INTERFACES * 4]:
        fields = line.split()
        if not fields or len(fields[0]) != 32:
            continue
        try:
            found.append(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
        except ValueError:
            continue
    return found


def ipv6_addresses() -> list[str]:
    try:
        return parse_if_inet6(IF_INET6_PATH.read_text())
    except OSError:
        return []


def announce_hosts(bind_host: str, candidates: list[str]) -> list[str]:
    """The hosts to announce for a socket bound to `bind_host`, from this host's `candidates`.

    A specific bind address is announced as it is. For a wildcard: the usable candidates of the
    families the socket serves, loopback only if there is nothing else.
    """
    if bind_host not in (WILDCARD_V4, WILDCARD_V6):
        return [bind_host]
    usable: list[str] = []
    loopback: list[str] = []
    for text in candidates:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip.version == 6 and bind_host == WILDCARD_V4:
            continue
        if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            continue
        target = loopback if ip.is_loopback else usable
        if text not in target:
            target.append(text)
    chosen = usable or loopback or ["127.0.0.1"]
    return chosen[:MAX_ANNOUNCED_HOSTS]


def local_announce_hosts(bind_host: str) -> list[str]:
    """`announce_hosts` over this machine's interfaces (IPv4 first: the most widely routable)."""
    if bind_host not in (WILDCARD_V4, WILDCARD_V6):
        return [bind_host]
    return announce_hosts(bind_host, ipv4_addresses() + ipv6_addresses())


__all__ = ["announce_hosts", "local_announce_hosts", "parse_if_inet6", "ipv4_addresses", "ipv6_addresses",
           "MAX_ANNOUNCED_HOSTS"]
