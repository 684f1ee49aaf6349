"""Addresses of peers: `EndpointAddr` = endpoint id + optional relay URL + direct socket addresses.

Two encodings: a compact msgspec Struct for our own wire (tickets, announcements, membership), and
the Rust Aspen's JSON shape `{"id": "<64 hex>", "addrs": [{"Ip": "a.b.c.d:p"} | {"Relay": "url"}]}`
that its users already pass to `--peers` and `/add-peer`.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

import msgspec

from aspen.identity import EndpointId

# iroh-protocols.md / DESIGN.md: at most 4 relay URLs; direct addresses bounded like iroh's
# address lists (an endpoint rarely has more than a handful of interfaces). guess: revisit.
MAX_RELAY_URLS = 4
MAX_DIRECT_ADDRS = 16
MAX_URL_SIZE = 2048  # common browser/server URL limit


class SocketAddr(msgspec.Struct, frozen=True, array_like=True):
    """An IP socket address (IPv4 or IPv6, textual host)."""

    host: str
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)]

    @classmethod
    def parse(cls, text: str) -> SocketAddr:
        """Parse `a.b.c.d:port` or `[v6]:port`; ValueError with the reason otherwise."""
        text = text.strip()
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise ValueError(f"bad IPv6 socket address {text!r} (want [addr]:port)")
        else:
            host, sep, port = text.rpartition(":")
            if not sep:
                raise ValueError(f"socket address {text!r} has no port")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address") from None
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"bad port in {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class EndpointAddrWire(msgspec.Struct, frozen=True, array_like=True):
    """The compact wire form of an EndpointAddr."""

    endpoint_id: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    relay_url: Annotated[str, msgspec.Meta(max_length=MAX_URL_SIZE)] | None = None
    direct_addrs: Annotated[list[SocketAddr], msgspec.Meta(max_length=MAX_DIRECT_ADDRS)] = []


class EndpointAddr:
    """How to reach a node: its key, plus where it may be found (relay and/or direct addresses)."""

    __slots__ = ("endpoint_id", "relay_url", "direct_addrs")

    def __init__(self, endpoint_id: EndpointId, relay_url: str | None = None,
                 direct_addrs: tuple[SocketAddr, ...] | list[SocketAddr] = ()) -> None:
        if len(direct_addrs) > MAX_DIRECT_ADDRS:
            raise ValueError(f"at most {MAX_DIRECT_ADDRS} direct addresses, got {len(direct_addrs)}")
        self.endpoint_id = endpoint_id
        self.relay_url = relay_url
        self.direct_addrs = tuple(direct_addrs)

    def to_wire(self) -> EndpointAddrWire:
        return EndpointAddrWire(self.endpoint_id.raw, self.relay_url, list(self.direct_addrs))

    @classmethod
    def from_wire(cls, wire: EndpointAddrWire) -> EndpointAddr:
        return cls(EndpointId(wire.endpoint_id), wire.relay_url, tuple(wire.direct_addrs))

    def to_json(self) -> dict[str, Any]:
        """The Rust Aspen's JSON shape (`/node-info`, `/add-peer`, `--peers N@{json}`)."""
        addrs: list[dict[str, str]] = [{"Ip": str(a)} for a in self.direct_addrs]
        if self.relay_url:
            addrs.append({"Relay": self.relay_url})
        return {"id": self.endpoint_id.hex(), "addrs": addrs}

    @classmethod
    def from_json(cls, obj: object) -> EndpointAddr:
        """Parse the Rust Aspen's JSON shape; ValueError naming the bad field otherwise.

        Also accepts `"direct_addresses": [...]` and `"relay_url": ...`, the field names iroh's own
        serde form uses, since users copy those from iroh tools.
        """
        if not isinstance(obj, dict):
            raise ValueError("endpoint_addr must be a JSON object")
        raw_id = obj.get("id", obj.get("node_id", obj.get("endpoint_id")))
        if not isinstance(raw_id, str):
            raise ValueError("endpoint_addr.id must be a 64-hex-character string")
        endpoint_id = EndpointId.parse(raw_id)
        relay: str | None = None
        direct: list[SocketAddr] = []
        addrs = obj.get("addrs", [])
        if not isinstance(addrs, list):
            raise ValueError("endpoint_addr.addrs must be a list")
        for item in addrs:
            if isinstance(item, dict) and "Ip" in item and isinstance(item["Ip"], str):
                direct.append(SocketAddr.parse(item["Ip"]))
            elif isinstance(item, dict) and "Relay" in item and isinstance(item["Relay"], str):
                relay = item["Relay"]
            else:
                raise ValueError(f"endpoint_addr.addrs item {item!r} is neither {{'Ip': ...}} nor {{'Relay': ...}}")
        for text in obj.get("direct_addresses", []) or []:
            direct.append(SocketAddr.parse(str(text)))
        if isinstance(obj.get("relay_url"), str):
            relay = obj["relay_url"]
        if len(direct) > MAX_DIRECT_ADDRS:
            raise ValueError(f"endpoint_addr has {len(direct)} direct addresses, max {MAX_DIRECT_ADDRS}")
        return cls(endpoint_id, relay, tuple(direct))

    def with_direct_addrs(self, direct_addrs: tuple[SocketAddr, ...]) -> EndpointAddr:
        return EndpointAddr(self.endpoint_id, self.relay_url, direct_addrs)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, EndpointAddr) and other.endpoint_id == self.endpoint_id
                and other.relay_url == self.relay_url and other.direct_addrs == self.direct_addrs)

    def __hash__(self) -> int:
        return hash((self.endpoint_id, self.relay_url, self.direct_addrs))

    def __repr__(self) -> str:
        return f"EndpointAddr({self.endpoint_id.short()}, relay={self.relay_url}, direct={[str(a) for a in self.direct_addrs]})"


__all__ = ["EndpointAddr", "EndpointAddrWire", "SocketAddr", "MAX_RELAY_URLS", "MAX_DIRECT_ADDRS"]
