"""Datagram paths under the QUIC endpoint: the seam where a path manager will plug in.

The endpoint never touches a socket. It sends each datagram through a `DatagramPath` and is
fed by one; today that is `UdpPath` (one UDP socket, dual-stack when bound to "::"). A later
path manager implements the same small interface and chooses, per datagram, the direct UDP
socket or a relay connection. Addresses are aioquic's `NetworkAddress` tuples (what the socket
reports), so the hot path converts nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any, Protocol, cast

from aspen.addr import SocketAddr
from aspen.errors import ConfigError

logger = logging.getLogger(__name__)

NetworkAddress = Any  # aioquic's alias: a socket address tuple, (host, port[, flow, scope])
DatagramHandler = Callable[[bytes, NetworkAddress], None]

# Linux caps these at net.core.{r,w}mem_max unless privileged; 4 MiB holds a 10 MiB transfer's
# bursts on loopback where the default ~208 KiB overflowed (measured: drops at ~150 packets).
SOCKET_BUFFER_SIZE = 4 * 1024 * 1024
# Linux socket option numbers (linux/in.h IP_MTU = 14, linux/in6.h IPV6_MTU = 24); Python's
# socket module does not export IP_MTU.
IP_MTU = getattr(socket, "IP_MTU", 14)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)
IPV4_UDP_HEADERS_SIZE = 20 + 8  # RFC 791 minimum IPv4 header + RFC 768 UDP header
IPV6_UDP_HEADERS_SIZE = 40 + 8  # RFC 8200 IPv6 header + UDP header


class DatagramPath(Protocol):
    """Where the endpoint's datagrams go and come from."""

    def send(self, data: bytes, addr: NetworkAddress) -> None:
        """Send one datagram; never blocks, never raises for a full buffer (the packet is lost,
        QUIC recovers)."""
        ...

    def to_network_address(self, addr: SocketAddr) -> NetworkAddress:
        """The tuple this path uses (and reports on receive) for `addr`."""
        ...

    def local_addrs(self) -> list[SocketAddr]: ...

    def max_payload_size(self, addr: NetworkAddress) -> int | None:
        """The largest UDP payload the local route to `addr` carries unfragmented (from the
        interface MTU), or None if unknown. An upper bound for PMTU probing, not a promise."""
        ...

    def close(self) -> None: ...


class UdpPath(asyncio.DatagramProtocol):
    """One UDP socket. Bound to "::" it is dual-stack (IPv4 peers appear as ::ffff:a.b.c.d)."""

    def __init__(self, on_datagram: DatagramHandler) -> None:
        self._on_datagram = on_datagram
        self._transport: asyncio.DatagramTransport | None = None
        self._family = socket.AF_INET6
        self._sendto: Callable[[bytes, NetworkAddress], None] | None = None

    @classmethod
    async def bind(cls, host: str, port: int, on_datagram: DatagramHandler) -> UdpPath:
        """Bind `host:port` (port 0 = OS-assigned). Raises ConfigError if the bind fails."""
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        except ValueError:
            raise ConfigError(f"bind host {host!r} is not an IP address", key="bind_host",
                              value=host) from None
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER_SIZE)
                except OSError:  # pragma: no cover - best effort
                    pass
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot bind UDP {host}:{port}: {exc.strerror}", key="bind",
                              value=f"{host}:{port}") from exc
        sock.setblocking(False)
        path = cls(on_datagram)
        path._family = family
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: path, sock=sock)
        path.connection_made(transport)  # asyncio calls it later, via call_soon; be ready now
        return path

    # asyncio.DatagramProtocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: the selector loop's datagram transport is not a subclass.
        self._transport = cast(asyncio.DatagramTransport, transport)
        self._sendto = self._transport.sendto

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) on an unconnected socket: QUIC's timers handle loss.
        logger.debug("udp error: %s", exc)

    # DatagramPath -----------------------------------------------------------------------------

    def send(self, data: bytes, addr: NetworkAddress) -> None:
        sendto = self._sendto
        if sendto is not None:
            sendto(data, addr)

    def to_network_address(self, addr: SocketAddr) -> NetworkAddress:
        ip = ipaddress.ip_address(addr.host)
        if self._family == socket.AF_INET6:
            if ip.version == 4:
                return (f"::ffff:{ip}", addr.port, 0, 0)
            return (str(ip), addr.port, 0, 0)
        if ip.version == 6:
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            if mapped is None:
                raise ConfigError(f"cannot reach IPv6 {addr} from an IPv4-only socket", key="addr",
                                  value=str(addr))
            return (str(mapped), addr.port)
        return (str(ip), addr.port)

    def local_addrs(self) -> list[SocketAddr]:
        if self._transport is None:
            return []
        sockname = self._transport.get_extra_info("sockname")
        return [SocketAddr(sockname[0], sockname[1])]

    def max_payload_size(self, addr: NetworkAddress) -> int | None:
        # Linux reports the route's MTU on a connected socket (IP_MTU / IPV6_MTU, see ip(7),
        # ipv6(7)); connecting a UDP socket sends nothing.
        family = socket.AF_INET6 if len(addr) == 4 else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect(addr)
                if family == socket.AF_INET6:
                    mtu = probe.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
                    mapped = str(addr[0]).startswith("::ffff:")
                    return mtu - (IPV4_UDP_HEADERS_SIZE if mapped else IPV6_UDP_HEADERS_SIZE)
                return probe.getsockopt(socket.IPPROTO_IP, IP_MTU) - IPV4_UDP_HEADERS_SIZE
        except OSError:
            return None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            self._sendto = None


def network_to_socket_addr(addr: NetworkAddress) -> SocketAddr:
    """A received tuple as a SocketAddr, with IPv4-mapped IPv6 shown as plain IPv4."""
    host = str(addr[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return SocketAddr(host, int(addr[1]))


__all__ = ["DatagramPath", "UdpPath", "NetworkAddress", "SOCKET_BUFFER_SIZE", "network_to_socket_addr"]
